"""Job safety under real faults: frozen processes, shutdown during a pause, a PostgreSQL restart.

Each test ends by comparing the goals in the database with the independent model's, row for row,
and by checking that no (patient, description) pair was created twice.
"""

import asyncio
import os
import signal
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from app import demo
from app.config import load_settings
from app.db import create_engine
from tests import helpers
from tests.api.conftest import BASE
from tests.conftest import SECRET, _admin
from tests.e2e.servers import Server, created, ended, job_of, said
from tests.expected import doubled_pairs, model_outcome
from tests.helpers import until
from tests.pg import OwnServer

# Every batch transaction sleeps once inside its first goal insert while test_freeze has a row:
# long enough to freeze the server process with inserted, uncommitted goals in flight.
_SLOW_BATCHES = (
    "CREATE TABLE test_freeze (flag boolean)",
    """CREATE FUNCTION test_slow_batch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM test_freeze)
           AND current_setting('test.slept', true) IS DISTINCT FROM 'yes' THEN
            PERFORM set_config('test.slept', 'yes', true);
            PERFORM pg_sleep(2);
        END IF;
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER test_slow_batch BEFORE INSERT ON treatment_goals "
    "FOR EACH ROW EXECUTE FUNCTION test_slow_batch()",
)


async def execute(db, sql: str) -> None:
    async with db.begin() as conn:
        await conn.execute(text(sql))


@pytest.mark.parametrize("follow_up", ["new job", "resume", "rollback"])
async def test_a_frozen_process_never_commits_after_losing_its_job(
    servers, db, database_url, follow_up
):
    await demo.write(database_url, sessions=1000, seed=21)
    expected = await model_outcome(db)
    for statement in _SLOW_BATCHES:
        await execute(db, statement)
    # The instance that will freeze has a long stale threshold, so that its own idle timeout
    # (half of it) cannot end the frozen transaction first: the fence must stop it. The default
    # (15 s) was not enough on a slow CI machine, where the follow-up took that long to finish.
    frozen = await servers(STALE_AFTER_SECONDS="600")
    other = await servers(STALE_AFTER_SECONDS="3")

    started = await frozen.client.post(
        BASE, params={"dry_run": "false", "batch_size": 50, "pause_ms": 300, "adaptive": "false"}
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    await until(lambda: created(frozen, job_id), 30, "the first batch to commit")
    await execute(db, "INSERT INTO test_freeze VALUES (true)")
    await until(lambda: _sleeping_batch(db), 30, "a batch to be mid-insert")
    frozen.signal(signal.SIGSTOP)
    await execute(db, "DELETE FROM test_freeze")

    # The other instance sees the heartbeat stop, marks the job interrupted and revokes its lease.
    async def interrupted():
        return (await job_of(other, job_id))["status"] == "interrupted"

    await until(interrupted, 30, "the frozen job to be marked interrupted")
    if follow_up == "new job":
        response = await other.client.post(BASE, params={"dry_run": "false"})
        follow_id = response.json()["id"]
    elif follow_up == "resume":
        response = await other.client.post(f"{BASE}/{job_id}/resume")
        follow_id = job_id
    else:
        response = await other.client.post(f"{BASE}/{job_id}/rollback", params={"dry_run": "false"})
        follow_id = response.json()["id"]
    assert response.status_code == 202, response.text
    assert (await ended(other, follow_id))["status"] == "succeeded"
    before_wake = await helpers.migrated_goals(db)

    async with db.connect() as conn:
        woken_at = (await conn.execute(text("SELECT now()"))).scalar_one()
    frozen.signal(signal.SIGCONT)
    await until(lambda: _no_transaction_from_before(db, woken_at), 30, "the frozen batch to end")
    assert await doubled_pairs(db) == 0
    assert await helpers.migrated_goals(db) == before_wake  # the woken batch rolled back
    await until(lambda: said(frozen, f"job {job_id}: lease revoked"), 30, "the run to stop")
    # The fence stopped it, not PostgreSQL's idle-transaction timeout (which would have cut the
    # frozen batch's connection, and the woken process would have retried).
    assert "retrying" not in frozen.output()
    if follow_up == "rollback":
        async with db.connect() as conn:
            left = await conn.execute(
                text("SELECT count(*) FROM treatment_goals WHERE source_job_id = :j"),
                {"j": job_id},
            )
            assert left.scalar_one() == 0
        assert (await job_of(other, follow_id))["stats"]["goals_kept_modified"] == 0
    else:
        assert before_wake == sorted(expected.goals)
    if follow_up == "resume":
        done = await job_of(other, job_id)
        assert done["status"] == "succeeded"
        assert done["stats"] == expected.stats


async def _sleeping_batch(db) -> bool:
    async with db.connect() as conn:
        sleeping = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'goal-migration' AND wait_event = 'PgSleep'"
            )
        )
        return sleeping.scalar_one() > 0


async def _no_transaction_from_before(db, moment) -> bool:
    async with db.connect() as conn:
        open_ = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'goal-migration' AND xact_start < :moment"
            ),
            {"moment": moment},
        )
        return open_.scalar_one() == 0


async def test_sigterm_during_a_long_pause_marks_the_job_interrupted_at_once(
    servers, db, database_url
):
    await demo.write(database_url, sessions=300, seed=22)
    server = await servers()
    started = await server.client.post(
        BASE, params={"dry_run": "false", "batch_size": 20, "pause_ms": 30000, "adaptive": "false"}
    )
    job_id = started.json()["id"]
    await until(lambda: created(server, job_id), 30, "the first batch to commit")
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    await server.exited(20)
    assert time.monotonic() - began < 10  # the 30 s pause did not hold the shutdown
    stopped = await helpers.get(db, job_id)
    assert stopped["status"] == "interrupted"
    assert stopped["goals_created"] == len(await helpers.migrated_goals(db))


@pytest.fixture
def own_server():
    # Not under pytest's tmp_path: another pytest run resets /tmp/pytest-of-root to 0700,
    # and the server runs as its own system user.
    server = OwnServer(Path(tempfile.mkdtemp(prefix="gm-own-")) / "pg")
    yield server
    server.close()


async def test_a_postgresql_restart_mid_run_ends_exact(own_server):
    url = await asyncio.to_thread(own_server.database)
    await demo.write(url, sessions=1500, seed=23)
    db = create_engine(load_settings(database_url=url, jwt_secret=SECRET, _env_file=None))
    server = Server(url)
    try:
        expected = await model_outcome(db)
        await db.dispose()
        await server.ready()
        started = await server.client.post(
            BASE,
            params={"dry_run": "false", "batch_size": 20, "pause_ms": 100, "adaptive": "false"},
        )
        job_id = started.json()["id"]
        await until(lambda: created(server, job_id), 30, "the first batch to commit")

        answers: list[int] = []

        async def poll() -> None:
            while True:
                answers.append((await server.client.get(f"{BASE}/{job_id}")).status_code)
                await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll())
        await asyncio.to_thread(own_server.ctl, "-m", "fast", "restart")
        await asyncio.sleep(1)
        poller.cancel()
        # never a 500 while the database is away
        assert set(answers) <= {200, 503}, f"{answers}\n{server.output()[-6000:]}"

        done = await ended(server, job_id, seconds=90)
        assert done["status"] == "succeeded", done
        assert done["stats"] == expected.stats
        assert await helpers.migrated_goals(db) == sorted(expected.goals)
        assert "retrying" in server.output()  # the restart did reach the job
    finally:
        await server.close()
        await db.dispose()


async def _committed_sessions(url: str, job_id: str) -> int:
    """Sessions the job's partitions have counted, as the database holds them now."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT sum(sessions_processed) FROM migration_job_partitions WHERE job_id = $1::uuid",
            job_id,
        )
    finally:
        await conn.close()


async def test_a_server_crash_that_loses_committed_batches_ends_exact(own_server):
    """Batches commit asynchronously: a crash may lose the last of them; they are redone.

    Some sessions fail, exactly as many as max_errors allows: a failed session in a lost batch
    that is redone still counts once toward it.
    """
    # WAL waits in wal_buffers until the WAL writer writes it (or a synchronous commit flushes
    # it). With the writer frozen and the heartbeat's commits far apart, a crash now loses
    # batches that had committed, as an operating-system crash would.
    await asyncio.to_thread(_admin, own_server.url, "ALTER SYSTEM SET wal_buffers = '64MB'")
    await asyncio.to_thread(own_server.ctl, "-m", "fast", "restart")
    url = await asyncio.to_thread(own_server.database)
    await demo.write(url, sessions=4000, seed=29)
    db = create_engine(load_settings(database_url=url, jwt_secret=SECRET, _env_file=None))
    # No yielding either: a wait is recorded with a synchronous commit, which flushes every batch
    # before it (batches with failed sessions are slow enough to trip the slowdown limit).
    server = Server(
        url,
        HEARTBEAT_SECONDS="60",
        STALE_AFTER_SECONDS="180",
        THROTTLE_MAX_BATCH_SLOWDOWN="0",
        THROTTLE_SHARE_ABOVE_SESSIONS="0",
        THROTTLE_MAX_LOCK_WAIT_SECONDS="0",
        THROTTLE_YIELD_TO_AUTOVACUUM="false",
    )
    try:
        failing = sorted({goal[2] for goal in (await model_outcome(db)).goals})[::40]
        await helpers.fail_goal_inserts_for(db, failing)
        expected = await model_outcome(db, fail_sessions=failing)
        assert expected.stats["errors"] == len(failing)
        await db.dispose()
        await server.ready()
        # Frozen too: the background writer, which flushes WAL before it writes a data page.
        for writer in await _backend_pids(url, "walwriter", "background writer"):
            os.kill(writer, signal.SIGSTOP)
        started = await server.client.post(
            BASE,
            # No pause: pauses beat.
            params={"dry_run": "false", "batch_size": 5, "max_errors": len(failing)},
        )
        job_id = started.json()["id"]
        await until(
            lambda: _at_least(url, job_id, expected.stats["sessions_processed"] // 5),
            60,
            "a fifth of the sessions to commit",
        )
        server.signal(signal.SIGSTOP)
        seen = await _committed_sessions(url, job_id)
        # A crash: every PostgreSQL process ends without writing what it holds (the frozen
        # writer is killed once the others have gone).
        await asyncio.to_thread(own_server.ctl, "-m", "immediate", "stop")
        await asyncio.to_thread(own_server.start)
        kept = await _committed_sessions(url, job_id)
        assert kept < seen, f"the crash lost no committed batch ({kept} of {seen}): no test"
        server.signal(signal.SIGCONT)

        done = await ended(server, job_id, seconds=120)
        assert done["status"] == "succeeded", (done["error"], done["stats"])
        assert done["stats"] == expected.stats
        db = create_engine(load_settings(database_url=url, jwt_secret=SECRET, _env_file=None))
        assert await helpers.migrated_goals(db) == sorted(expected.goals)
        assert await doubled_pairs(db) == 0
    finally:
        await server.close()
        await db.dispose()


async def _backend_pids(url: str, *backend_types: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = ANY($1::text[])",
            list(backend_types),
        )
    finally:
        await conn.close()
    assert len(rows) == len(backend_types), rows
    return [r["pid"] for r in rows]


async def _at_least(url: str, job_id: str, sessions: int) -> bool:
    return (await _committed_sessions(url, job_id) or 0) >= sessions
