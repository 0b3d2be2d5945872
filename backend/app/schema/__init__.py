"""Who owns which part of the database, and how each part is built.

    platform tables   users, therapy_sessions, treatment_goals (without source_job_id)
                      owned by the practice platform; created only on an empty database,
                      by platform.create_platform_tables_if_absent(); never altered or dropped
    service objects   the migration_* job tables, treatment_goals.source_job_id with its
                      foreign key and index, and the indexes the engine needs on platform
                      tables; owned by this service's Alembic migrations, which keep their
                      revision in their own table (version.VERSION_TABLE), never in
                      the platform's alembic_version

install() does both, in that order, for `make run`, the tests and new installs. On the
platform's real database only the migrations run (`alembic upgrade head`), after the
read-only preflight (app.schema.preflight).
"""
