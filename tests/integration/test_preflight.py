"""The read-only preflight on a ready database, on one missing a column, on a too-short timeout."""

import asyncio
import uuid

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import demo
from app.config import load_settings
from app.db import create_engine
from app.schema import preflight
from tests.conftest import SECRET, drop_database, new_database
from tests.integration.test_adoption import PLATFORM_SQL

EXPECTED_CHECKS = [
    "server",
    "table users",
    "table therapy_sessions",
    "table treatment_goals",
    "service schema",
    "index ix_therapy_sessions_candidates",
    "index ix_treatment_goals_patient_id_description_md5",
    "index ix_treatment_goals_source_job_id",
    "candidates",
    "setting statement_timeout",
    "setting lock_timeout",
    "privileges",
    "statistics",
]


async def _report(db, **kw) -> preflight.Report:
    async with db.connect() as conn:
        return await preflight.run(conn, **kw)


def _by_name(report: preflight.Report) -> dict[str, preflight.Check]:
    return {c.name: c for c in report.checks}


async def _activity(db) -> int:
    """Rows written to any table of this database, as the statistics collector counts them."""
    async with db.connect() as conn:
        await conn.execute(text("SELECT pg_stat_force_next_flush()"))
        return (
            await conn.execute(
                text("SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables")
            )
        ).scalar()


async def test_a_ready_database_passes_every_check_and_nothing_is_written(database_url, db):
    await demo.write(database_url, sessions=300)
    async with db.connect() as conn:
        exact = (await conn.execute(text(preflight._EXACT_SQL))).one()
    written = await _activity(db)

    report = await _report(db)

    assert [c.name for c in report.checks] == EXPECTED_CHECKS
    assert report.ready and report.problems == []
    checks = _by_name(report)
    assert checks["service schema"].detail == "at revision 0005 (head)"
    assert checks["candidates"].detail == (
        f"{exact.sessions:,} sessions with action items, {exact.items:,} items (exact)"
    )
    assert exact.sessions > 0
    assert all(c.fix is None for c in report.checks if c.status == "ok")
    assert await _activity(db) == written


async def test_large_tables_are_estimated_from_statistics_and_a_sample(database_url, db):
    await demo.write(database_url, sessions=300)
    async with db.connect() as conn:
        await conn.execute(text("COMMIT"))
        await conn.execute(text("ANALYZE therapy_sessions"))
        exact = (await conn.execute(text(preflight._EXACT_SQL))).one()

    # Treated as large: statistics give the row count, a sample (here all of it) the shares.
    candidates = _by_name(await _report(db, exact_below=0))["candidates"]

    assert candidates.status == "ok"
    assert candidates.detail.startswith(
        f"about {exact.sessions:,} sessions with action items, about {exact.items:,} items "
        "(estimated:"
    )


async def test_a_missing_column_is_a_problem_with_what_to_do(db):
    async with db.begin() as conn:
        await conn.execute(text("ALTER TABLE treatment_goals DROP COLUMN updated_at"))
        await conn.execute(text("ALTER TABLE treatment_goals ADD COLUMN review_by date NOT NULL"))

    report = await _report(db)

    assert not report.ready
    assert [(c.name, c.detail) for c in report.problems] == [
        ("column treatment_goals.updated_at", "missing"),
        (
            "column treatment_goals.review_by",
            "NOT NULL without a default; every migrated goal's insert would fail",
        ),
    ]
    assert all(p.fix for p in report.problems)
    assert "table treatment_goals" not in _by_name(report)
    async with db.connect() as conn:
        assert [p.name for p in await preflight.schema_problems(conn)] == [
            "column treatment_goals.updated_at",
            "column treatment_goals.review_by",
        ]


async def test_a_statement_timeout_shorter_than_a_batch_is_a_problem(database_url, settings):
    name = make_url(database_url).database
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"ALTER DATABASE {name} SET statement_timeout = '100ms'")
        await conn.execute(f"ALTER DATABASE {name} SET lock_timeout = '200ms'")
    finally:
        await conn.close()
    db = create_engine(settings)  # new sessions see the database's settings
    try:
        report = await _report(db)
    finally:
        await db.dispose()

    checks = _by_name(report)
    timeout = checks["setting statement_timeout"]
    assert timeout.status == "problem" and timeout.detail.startswith("100 ms:")
    assert "statement_timeout = '5min'" in timeout.fix
    assert checks["setting lock_timeout"].status == "warning"
    assert [p.name for p in report.problems] == ["setting statement_timeout"]
    assert checks["candidates"].status == "ok"  # its own look ran under its own limit


async def test_before_the_upgrade_it_says_to_run_it(server_url):
    url = await asyncio.to_thread(new_database, server_url)
    try:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(PLATFORM_SQL)
        finally:
            await conn.close()
        db = create_engine(load_settings(database_url=url, jwt_secret=SECRET, _env_file=None))
        try:
            report = await _report(db)
        finally:
            await db.dispose()
    finally:
        await asyncio.to_thread(drop_database, url)
    schema = _by_name(report)["service schema"]
    assert (schema.status, schema.detail) == ("problem", "not installed")
    assert schema.fix.startswith("cd backend && alembic upgrade head")
    missing = _by_name(report)["index ix_therapy_sessions_candidates"]
    assert missing.fix == "cd backend && alembic upgrade head (builds it concurrently)"


async def test_naive_timestamps_are_a_warning_not_a_problem(db):
    async with db.begin() as conn:
        await conn.execute(
            text("ALTER TABLE therapy_sessions ALTER COLUMN session_date TYPE timestamp")
        )
    report = await _report(db)
    assert report.ready
    checks = _by_name(report)
    assert checks["table therapy_sessions"].status == "ok"
    warning = checks["column therapy_sessions.session_date"]
    assert warning.status == "warning" and "TimeZone" in warning.fix


async def test_a_role_that_may_not_write_goals_is_a_problem(database_url):
    role = f"gm_reader_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(
            f"CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
        )
        url = make_url(database_url).set(username=role).render_as_string(False)
        db = create_engine(load_settings(database_url=url, jwt_secret=SECRET, _env_file=None))
        try:
            report = await _report(db)
        finally:
            await db.dispose()
    finally:
        await admin.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
        await admin.close()
    privileges = _by_name(report)["privileges"]
    assert privileges.status == "problem"
    assert privileges.detail == (
        "the service's role lacks INSERT on treatment_goals; UPDATE on treatment_goals; "
        "DELETE on treatment_goals"
    )
    assert [p.name for p in report.problems] == ["privileges"]
