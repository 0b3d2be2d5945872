"""The service's migrations on a database the platform built: adopt, migrate, downgrade, intact.

The platform's schema here is plain SQL with the platform's own names (default constraint
names, its own indexes), columns and a table the service knows nothing about, and its own
Alembic history in alembic_version. Nothing of it may change but what the service owns.
"""

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from alembic.util import CommandError

from app.config import load_settings
from app.db import create_engine
from app.schema import preflight, version
from tests import helpers, model
from tests.conftest import SECRET, alembic_config, drop_database, new_database

PLATFORM_REVISION = "f3c9a1b27d40"

PLATFORM_SQL = f"""
CREATE TABLE alembic_version (
    version_num varchar(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO alembic_version VALUES ('{PLATFORM_REVISION}');

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email varchar(320) NOT NULL UNIQUE,
    full_name text,
    role text NOT NULL CHECK (role IN ('admin', 'therapist', 'patient')),
    created_at timestamptz NOT NULL DEFAULT now(),
    phone text
);
CREATE TABLE therapy_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id uuid NOT NULL REFERENCES users (id),
    therapist_id uuid NOT NULL REFERENCES users (id),
    session_date timestamptz NOT NULL,
    extracted_notes jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    duration_minutes integer
);
CREATE INDEX therapy_sessions_patient_idx ON therapy_sessions (patient_id, session_date);
CREATE TABLE treatment_goals (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    patient_id uuid NOT NULL REFERENCES users (id),
    therapist_id uuid NOT NULL REFERENCES users (id),
    session_id uuid REFERENCES therapy_sessions (id) ON DELETE SET NULL,
    description text NOT NULL,
    category text,
    status text NOT NULL DEFAULT 'assigned'
        CHECK (status IN ('assigned', 'in_progress', 'completed', 'discontinued')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    target_date date
);
CREATE INDEX treatment_goals_patient_idx ON treatment_goals (patient_id);
CREATE TABLE appointments (
    id bigserial PRIMARY KEY,
    patient_id uuid NOT NULL REFERENCES users (id),
    starts_at timestamptz NOT NULL
);
"""

PLATFORM_TABLES = (
    "alembic_version",
    "users",
    "therapy_sessions",
    "treatment_goals",
    "appointments",
)
THERAPIST = uuid.UUID("00000000-0000-4000-8000-000000000001")
PATIENTS = [
    uuid.UUID(f"{n:08x}-0000-4000-8000-000000000000") for n in (5, 9, 0x7FFFFFFF, 0xFFFFFFFE)
]
DAY = datetime(2024, 3, 1, 14, tzinfo=UTC)


def _sessions() -> list[dict]:
    """Valid, duplicate, invalid and empty notes across patients on both partitions."""
    notes = [
        {"action_items": [{"task": "Walk daily", "category": "behavioral"}, {"task": "Journal"}]},
        {"action_items": [{"task": "Walk daily", "category": "other"}, {"details": "no task"}]},
        {"action_items": [{"task": " Breathe ", "details": "4-7-8"}, 42]},
        {"action_items": "call the clinic"},
        {"action_items": []},
        {"summary": "no action items"},
        None,
    ]
    sessions = []
    for p, patient in enumerate(PATIENTS):
        for n, note in enumerate(notes):
            sessions.append(
                {
                    "id": uuid.UUID(int=(p + 1) << 64 | n),
                    "patient_id": patient,
                    "therapist_id": THERAPIST,
                    "session_date": DAY + timedelta(days=n, hours=p),
                    "notes": note,
                }
            )
    return sessions


# Clinicians' own goals: one of them duplicates an action item.
EXISTING = [(PATIENTS[0], "Journal"), (PATIENTS[2], "Stretch")]


async def _snapshot(url: str, goal_columns: list[str] | None = None) -> dict:
    """Every platform table's rows, as a count and a digest (goals on their original columns)."""
    conn = await asyncpg.connect(url)
    try:
        result = {}
        for table in PLATFORM_TABLES:
            row = "t"
            if table == "treatment_goals" and goal_columns:
                row = "ROW(" + ", ".join(f"t.{c}" for c in goal_columns) + ")"
            result[table] = tuple(
                await conn.fetchrow(
                    f"SELECT count(*), md5(string_agg({row}::text, '|' ORDER BY {row}::text)) "
                    f"FROM {table} AS t"
                )
            )
        return result
    finally:
        await conn.close()


async def _fetch(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _goal_columns(url: str) -> list[str]:
    rows = await _fetch(
        url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'treatment_goals' ORDER BY ordinal_position",
    )
    return [r["column_name"] for r in rows]


@pytest.fixture
async def platform_db(server_url):
    """A database as the platform built it, with its data and its own Alembic revision."""
    url = await asyncio.to_thread(new_database, server_url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(PLATFORM_SQL)
    finally:
        await conn.close()
    settings = load_settings(
        database_url=url, jwt_secret=SECRET, heartbeat_seconds=0.1, _env_file=None
    )
    db = create_engine(settings)
    await helpers.load(
        db,
        users=[(THERAPIST, "therapist"), *[(p, "patient") for p in PATIENTS]],
        sessions=_sessions(),
        goals=[(p, THERAPIST, d, "in_progress") for p, d in EXISTING],
    )
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO appointments (patient_id, starts_at) SELECT id, now() FROM users"
        )
    finally:
        await conn.close()
    yield url, settings, db
    await db.dispose()
    await asyncio.to_thread(drop_database, url)


def _upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def _downgrade(url: str, *, force: bool = False) -> None:
    config = alembic_config(url)
    config.cmd_opts = argparse.Namespace(x=["force=true"] if force else [])
    command.downgrade(config, "base")


async def _problems(db) -> list[str]:
    async with db.connect() as conn:
        report = await preflight.run(conn)
    return [c.name for c in report.problems]


async def test_adopt_migrate_and_downgrade_leave_the_platform_as_it_was(platform_db):
    url, settings, db = platform_db
    goal_columns = await _goal_columns(url)
    before = await _snapshot(url)
    assert await _problems(db) == [
        "service schema",
        "index ix_therapy_sessions_candidates",
        "index ix_treatment_goals_patient_id_description_md5",
        "index ix_treatment_goals_source_job_id",
    ]

    await asyncio.to_thread(_upgrade, url)
    assert await _snapshot(url, goal_columns) == before
    assert await _problems(db) == []
    async with db.connect() as conn:
        assert await version.current(conn) == version.head()

    expected = model.migrate(_sessions(), EXISTING)
    dry = await helpers.run(db, settings, dry_run=True)
    assert helpers.stats(dry) == expected.stats and await helpers.migrated_goals(db) == []
    real = await helpers.run(db, settings)
    assert real["status"] == "succeeded" and helpers.stats(real) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
    created = expected.stats["goals_created"]
    assert created == 11  # the data above is not trivially empty

    # Downgrading now would erase which goals the service created: refused, nothing undone.
    with pytest.raises(CommandError, match=f"{created} goals were created by migration jobs"):
        await asyncio.to_thread(_downgrade, url)
    async with db.connect() as conn:
        assert await version.current(conn) == version.head()

    rollback = await helpers.run(db, settings, kind="rollback", targets=[real["id"]])
    assert rollback["status"] == "succeeded" and rollback["goals_deleted"] == created
    await db.dispose()  # the downgrade drops tables this pool's connections have used
    await asyncio.to_thread(_downgrade, url)

    assert await _snapshot(url) == before
    assert await _goal_columns(url) == goal_columns
    tables = {
        r["tablename"]
        for r in await _fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables == set(PLATFORM_TABLES) | {version.VERSION_TABLE}
    assert [r["version_num"] for r in await _fetch(url, "SELECT * FROM alembic_version")] == [
        PLATFORM_REVISION
    ]


async def test_forced_downgrade_drops_provenance_but_no_goal(platform_db):
    url, settings, db = platform_db
    await asyncio.to_thread(_upgrade, url)
    real = await helpers.run(db, settings)
    goals = await _fetch(url, "SELECT id, description FROM treatment_goals ORDER BY id")
    await db.dispose()

    await asyncio.to_thread(_downgrade, url, force=True)
    assert await _fetch(url, "SELECT id, description FROM treatment_goals ORDER BY id") == goals
    assert len(goals) == real["goals_created"] + len(EXISTING)
    assert "source_job_id" not in await _goal_columns(url)


async def test_an_invalid_index_left_by_an_interrupted_build_is_rebuilt(platform_db):
    url, _, db = platform_db
    name = "ix_treatment_goals_patient_id_description_md5"
    conn = await asyncpg.connect(url)
    try:
        # A concurrent build that fails half-way leaves its index behind, INVALID.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON treatment_goals (therapist_id)"
            )
    finally:
        await conn.close()
    async with db.connect() as c:
        report = await preflight.run(c)
    (check,) = [c for c in report.checks if c.name == f"index {name}"]
    assert check.status == "problem" and "INVALID" in check.detail
    assert "alembic upgrade head" in check.fix

    await asyncio.to_thread(_upgrade, url)
    (index,) = await _fetch(
        url,
        "SELECT i.indisvalid, i.indisunique, pg_get_indexdef(i.indexrelid) AS definition "
        f"FROM pg_index AS i WHERE i.indexrelid = '{name}'::regclass",
    )
    assert index["indisvalid"] and not index["indisunique"]
    assert "(patient_id, md5(description))" in index["definition"]


async def _wait_for(url: str, sql: str, seconds: float = 30.0) -> None:
    """Poll until `sql` returns true."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not (await _fetch(url, sql))[0][0]:
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for: {sql}"
        await asyncio.sleep(0.05)


async def test_adding_the_column_never_queues_clinicians_behind_a_long_transaction(platform_db):
    url, _, db = platform_db
    await db.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(url), "0003")
    reader = await asyncpg.connect(url)  # a clinician's long transaction that read goals
    writer = await asyncpg.connect(url)
    try:
        await reader.execute("BEGIN; SELECT count(*) FROM treatment_goals")
        upgrade = asyncio.create_task(asyncio.to_thread(_upgrade, url))
        await _wait_for(
            url,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'ALTER TABLE treatment_goals ADD COLUMN%'",
        )
        # Waiting for its lock, the ALTER queues every later writer behind it; with a short
        # lock_timeout it steps aside within a second, so this insert gets through while the
        # long transaction is still open.
        await asyncio.wait_for(
            writer.execute(
                "INSERT INTO treatment_goals (patient_id, therapist_id, description) "
                "VALUES ($1, $1, 'written during the upgrade')",
                THERAPIST,
            ),
            timeout=20,
        )
        assert not upgrade.done()
        await reader.execute("COMMIT")
        await asyncio.wait_for(upgrade, timeout=60)
    finally:
        await reader.close()
        await writer.close()
    assert "source_job_id" in await _goal_columns(url)


# The columns the job-safety revision 0002 added to the old revision 0001's job tables.
_ADDED_BY_0002 = (
    "ALTER TABLE migration_jobs DROP COLUMN target_job_ids; "
    "ALTER TABLE migration_job_partitions DROP COLUMN items_in_failed_sessions; "
)


@pytest.mark.parametrize("old_revision", ["0001", "0002"])
async def test_a_database_built_before_the_own_version_table_is_adopted_as_it_is(
    database_url, db, settings, old_revision
):
    job = await helpers.run(db, settings, dry_run=True)
    await db.dispose()
    conn = await asyncpg.connect(database_url)
    try:
        # What the earlier revisions left: every table (the platform's too), and the revision
        # in alembic_version.
        await conn.execute(
            (_ADDED_BY_0002 if old_revision == "0001" else "")
            + f"DROP TABLE {version.VERSION_TABLE}; "
            "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); "
            f"INSERT INTO alembic_version VALUES ('{old_revision}')"
        )
    finally:
        await conn.close()
    async with db.connect() as c:
        (check,) = [p for p in await preflight.schema_problems(c) if p.name == "service schema"]
    assert check.detail.startswith("job tables from an earlier install")

    await asyncio.to_thread(_upgrade, database_url)
    async with db.connect() as c:
        assert await preflight.schema_problems(c) == []
    assert (await helpers.get(db, job["id"]))["status"] == "succeeded"
    rows = await _fetch(database_url, "SELECT * FROM alembic_version")
    assert [r[0] for r in rows] == [old_revision]
