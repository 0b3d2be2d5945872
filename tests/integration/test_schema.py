"""The schema install() builds: names, defaults, constraints, the indexes the engine needs."""

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.util import CommandError

from app.models import Base
from app.schema import bootstrap
from app.schema.platform import CREATE_SQL
from app.schema.version import VERSION_TABLE
from tests.conftest import alembic_config, drop_database, new_database

TABLES = {
    "users": {"id", "email", "full_name", "role", "created_at"},
    "therapy_sessions": {
        "id", "patient_id", "therapist_id", "session_date", "extracted_notes", "created_at",
    },
    "treatment_goals": {
        "id", "patient_id", "therapist_id", "session_id", "description", "category", "status",
        "created_at", "updated_at", "source_job_id",
    },
}  # fmt: skip


@pytest.fixture
async def conn(database_url):
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def _columns(conn, table):
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
    )
    return {r["column_name"] for r in rows}


async def test_named_tables_have_exactly_the_named_columns(conn):
    for table, columns in TABLES.items():
        assert await _columns(conn, table) == columns
    assert "id" in await _columns(conn, "migration_jobs")


async def test_copy_with_only_the_named_columns_fills_defaults(conn):
    t, p = uuid.uuid4(), uuid.uuid4()
    await conn.copy_records_to_table(
        "users", records=[(t, "t@x.org", "therapist"), (p, "p@x.org", "patient")],
        columns=["id", "email", "role"],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "therapy_sessions",
        records=[(p, t, datetime(2024, 5, 1, tzinfo=UTC))],
        columns=["patient_id", "therapist_id", "session_date"],
    )
    await conn.copy_records_to_table(
        "treatment_goals", records=[(p, t, "Walk daily")],
        columns=["patient_id", "therapist_id", "description"],
    )  # fmt: skip
    session = await conn.fetchrow("SELECT * FROM therapy_sessions")
    assert session["id"] and session["created_at"] and session["extracted_notes"] is None
    goal = await conn.fetchrow("SELECT * FROM treatment_goals")
    assert goal["id"] and goal["status"] == "assigned"
    assert goal["created_at"] and goal["updated_at"] and goal["source_job_id"] is None


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        (
            "INSERT INTO users (email, role) VALUES ('a@x.org', 'wizard')",
            asyncpg.CheckViolationError,
        ),
        ("INSERT INTO users (email, role) VALUES (NULL, 'admin')", asyncpg.NotNullViolationError),
        (
            "INSERT INTO treatment_goals (patient_id, therapist_id, description, status) "
            "SELECT id, id, 'x', 'done' FROM users",
            asyncpg.CheckViolationError,
        ),
        (
            "INSERT INTO treatment_goals (patient_id, therapist_id, description) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), 'x')",
            asyncpg.ForeignKeyViolationError,
        ),
    ],
)
async def test_constraints(conn, sql, error):
    await conn.execute("INSERT INTO users (email, role) VALUES ('seed@x.org', 'admin')")
    with pytest.raises(error):
        await conn.execute(sql)


async def test_deleting_a_session_keeps_its_goals(conn):
    user = await conn.fetchval(
        "INSERT INTO users (email, role) VALUES ('u@x.org', 'patient') RETURNING id"
    )
    session = await conn.fetchval(
        "INSERT INTO therapy_sessions (patient_id, therapist_id, session_date) "
        "VALUES ($1, $1, now()) RETURNING id",
        user,
    )
    await conn.execute(
        "INSERT INTO treatment_goals (patient_id, therapist_id, session_id, description) "
        "VALUES ($1, $1, $2, 'x')",
        user,
        session,
    )
    await conn.execute("DELETE FROM therapy_sessions")
    assert await conn.fetchval("SELECT session_id FROM treatment_goals") is None


async def test_one_active_job_at_a_time(conn):
    insert = (
        "INSERT INTO migration_jobs (kind, dry_run, batch_size, requested_by, status) "
        "VALUES ('migrate', true, 10, 'x', $1)"
    )
    await conn.execute(insert, "succeeded")
    await conn.execute(insert, "running")
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, "queued")


async def test_a_50kb_description_inserts_and_is_found_by_index(conn):
    user = await conn.fetchval(
        "INSERT INTO users (email, role) VALUES ('u@x.org', 'patient') RETURNING id"
    )
    text = "Practice breathing " + "é" * 25_000
    await conn.execute(
        "INSERT INTO treatment_goals (patient_id, therapist_id, description) VALUES ($1, $1, $2)",
        user,
        text,
    )
    await conn.execute("SET enable_seqscan = off")
    lookup = (
        "SELECT count(*) FROM treatment_goals WHERE patient_id = $1 "
        "AND md5(description) = md5($2) AND description = $2"
    )
    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + lookup, user, text))
    assert "ix_treatment_goals_patient_id_description_md5" in plan
    assert await conn.fetchval(lookup, user, text) == 1
    assert await conn.fetchval(lookup, user, text + " ") == 0


async def test_models_describe_what_install_builds(database_url, db):
    """Autogenerate finds nothing to change: models, bootstrap and migrations agree."""

    def compare(sync_conn):
        context = MigrationContext.configure(
            sync_conn,
            opts={"include_name": lambda n, t, p: t != "table" or n in Base.metadata.tables},
        )
        return compare_metadata(context, Base.metadata)

    async with db.connect() as conn:
        assert await conn.run_sync(compare) == []


def _tables(url: str) -> set[str]:
    async def go():
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(go())


def test_install_twice_then_downgrade_to_base_keeps_the_platform_tables(server_url):
    url = new_database(server_url)
    try:
        assert bootstrap.install(url, configure_logging=False).created
        again = bootstrap.install(url, configure_logging=False)  # checks, creates nothing
        assert not again.created and again.problems == []
        assert set(TABLES) | {"migration_jobs", VERSION_TABLE} <= _tables(url)

        command.downgrade(alembic_config(url), "base")
        assert _tables(url) == set(TABLES) | {VERSION_TABLE}
        columns = asyncio.run(_columns_of(url, "treatment_goals"))
        assert columns == TABLES["treatment_goals"] - {"source_job_id"}
    finally:
        drop_database(url)


async def _columns_of(url, table):
    conn = await asyncpg.connect(url)
    try:
        return await _columns(conn, table)
    finally:
        await conn.close()


def test_upgrade_on_an_empty_database_creates_nothing_and_says_what_to_do(server_url):
    url = new_database(server_url)
    try:
        with pytest.raises(CommandError) as error:
            command.upgrade(alembic_config(url), "head")
        assert "python -m app.schema.bootstrap" in str(error.value)
        assert _tables(url) <= {VERSION_TABLE}
    finally:
        drop_database(url)


def test_bootstrap_refuses_to_finish_half_a_platform_schema(server_url):
    url = new_database(server_url)
    try:
        asyncio.run(_execute(url, "CREATE TABLE users (id uuid PRIMARY KEY)"))
        with pytest.raises(bootstrap.BootstrapError, match="found users but not therapy_sessions"):
            bootstrap.install(url, configure_logging=False)
        assert _tables(url) == {"users"}
    finally:
        drop_database(url)


def test_bootstrap_checks_existing_tables_and_creates_nothing(server_url):
    url = new_database(server_url)
    try:
        asyncio.run(
            _execute(url, CREATE_SQL + "ALTER TABLE treatment_goals DROP COLUMN updated_at")
        )
        outcome = asyncio.run(bootstrap.bootstrap(url))
        assert not outcome.created
        assert [(c.name, c.detail) for c in outcome.problems] == [
            ("column treatment_goals.updated_at", "missing")
        ]
        with pytest.raises(bootstrap.BootstrapError, match="treatment_goals.updated_at"):
            bootstrap.install(url, configure_logging=False)
        assert _tables(url) == set(TABLES)  # and no migration ran
    finally:
        drop_database(url)


async def _execute(url, script):
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(script)
    finally:
        await conn.close()
