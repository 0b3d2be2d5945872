"""treatment_goals.source_job_id: which job created a goal

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:01

The one column this service adds to a platform table: nullable, so adding it is a catalog
change, not a rewrite. Each statement that needs the table's strongest lock runs with a short
lock_timeout and is retried, so clinicians' writes wait at most that long. The foreign key is
added NOT VALID and then validated, which scans the table without blocking writes; its index is
built CONCURRENTLY. Every step checks what exists first, so an interrupted upgrade can simply
be run again.

0005's downgrade asks the same question first, so a refused downgrade undoes nothing.
Downgrade removes the column, its foreign key and its index, and deletes no goal. While any
goal records a source job it refuses: the column is the only record of which goals the service
created (rollback needs it). `alembic -x force=true downgrade 0003` overrides that.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.schema import online

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_treatment_goals_source_job_id_migration_jobs"
INDEX = "ix_treatment_goals_source_job_id"


def upgrade() -> None:
    conn = op.get_bind()
    online.require_platform_tables(conn)
    with op.get_context().autocommit_block():
        if not online.column_exists(conn, "treatment_goals", "source_job_id"):
            online.log.info("adding treatment_goals.source_job_id (nullable: no table rewrite)")
            online.with_lock_retry(
                conn, "ALTER TABLE treatment_goals ADD COLUMN IF NOT EXISTS source_job_id uuid"
            )
        if not online.constraint_exists(conn, "treatment_goals", FOREIGN_KEY):
            online.with_lock_retry(
                conn,
                f"ALTER TABLE treatment_goals ADD CONSTRAINT {FOREIGN_KEY} "
                "FOREIGN KEY (source_job_id) REFERENCES migration_jobs (id) NOT VALID",
            )
        conn.execute(sa.text("SET statement_timeout = 0"))
        conn.execute(sa.text(f"ALTER TABLE treatment_goals VALIDATE CONSTRAINT {FOREIGN_KEY}"))
        conn.execute(sa.text("RESET statement_timeout"))
        online.create_index_concurrently(
            conn,
            INDEX,
            "CREATE INDEX CONCURRENTLY {name} ON treatment_goals (source_job_id, id) "
            "WHERE source_job_id IS NOT NULL",
        )


def downgrade() -> None:
    conn = op.get_bind()
    if not online.column_exists(conn, "treatment_goals", "source_job_id"):
        return
    migrated = online.refuse_losing_provenance(conn)
    online.log.info(
        "removing treatment_goals.source_job_id with %s and %s; %d goals lose the record of the "
        "job that created them; no goal is deleted",
        FOREIGN_KEY,
        INDEX,
        migrated,
    )
    with op.get_context().autocommit_block():
        online.drop_index_concurrently(conn, INDEX)
        online.with_lock_retry(
            conn, "ALTER TABLE treatment_goals DROP COLUMN IF EXISTS source_job_id"
        )
