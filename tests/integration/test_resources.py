"""A server out of connection slots (SQLSTATE 53300), produced for real with a role's limit.

Two replicas with full pools can fill max_connections; the job waits it out with backoff and
ends exact, or, when it never clears, fails saying so. Nothing is counted twice either way.
"""

import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app import demo
from app.config import load_settings
from app.db import create_engine
from app.jobs import runner
from tests import helpers
from tests.conftest import SECRET
from tests.expected import model_outcome


@pytest.fixture
async def limited(database_url):
    """A login role allowed two connections, with the service's privileges; its URL."""
    role = f"gm_limited_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
    await admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
    await admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    url = make_url(database_url).set(username=role).render_as_string(hide_password=False)
    yield role, url
    await admin.execute(f"DROP OWNED BY {role}")
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
    )
    await admin.execute(f"DROP ROLE IF EXISTS {role}")
    await admin.close()


def _settings(url: str, **changes):
    return load_settings(
        database_url=url, jwt_secret=SECRET, heartbeat_seconds=0.2, stale_after_seconds=30,
        retry_backoff_seconds=0.2, retry_backoff_max_seconds=0.5, _env_file=None, **changes,
    )  # fmt: skip


async def _slots_taken_by_other_work(url: str, engine) -> asyncpg.Connection:
    """Fill the role's slots: one pooled connection of the job's engine, one held here."""
    async with engine.connect():
        pass
    return await asyncpg.connect(url)


async def test_a_full_server_is_waited_out_and_the_run_ends_exact(
    db, database_url, limited, job_log
):
    _, url = limited
    await demo.write(database_url, sessions=300, seed=73)
    expected = await model_outcome(db)
    settings = _settings(url)
    engine = create_engine(settings)
    held = await _slots_taken_by_other_work(url, engine)
    try:
        job_id, token = await helpers.start_job(
            engine, settings, dry_run=False, batch_size=20, partition_count=2
        )
        task = asyncio.create_task(runner.run_job(engine, settings, job_id=job_id, token=token))

        async def refused():
            return any("TooManyConnectionsError" in line and "retrying" in line for line in job_log)

        await helpers.until(refused, 30, "a batch refused a connection slot")
        await held.close()  # the other work ends; a slot frees up
        assert await task == "succeeded"
    finally:
        if not held.is_closed():
            await held.close()
        await engine.dispose()
    job = await helpers.get(db, job_id)
    assert helpers.stats(job) == expected.stats
    assert await helpers.migrated_goals(db) == sorted(expected.goals)


async def test_a_server_that_stays_full_fails_the_job_saying_so(db, database_url, limited):
    _, url = limited
    await demo.write(database_url, sessions=100, seed=74)
    settings = _settings(url, retry_attempts=2)
    engine = create_engine(settings)
    held = await _slots_taken_by_other_work(url, engine)
    try:
        # The first partition keeps the one slot the job has from batch to batch (its pauses
        # are long); the second never gets one.
        job_id, token = await helpers.start_job(
            engine, settings, dry_run=False, batch_size=5, pause_ms=1000, partition_count=2
        )
        assert await runner.run_job(engine, settings, job_id=job_id, token=token) == "failed"
    finally:
        await held.close()
        await engine.dispose()
    job = await helpers.get(db, job_id)
    assert (
        "no connection slot free" in job["error"]
        and "still failing after 3 attempts" in (job["error"])
    )
    assert job["errors"] == 0  # nothing was blamed on the data
