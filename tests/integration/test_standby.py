"""A real streaming standby falls behind: the job waits for it, stops at once, ends exact."""

import asyncio
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from app import demo
from app.config import load_settings
from app.db import create_engine
from app.jobs import runner, store
from tests import helpers
from tests.conftest import SECRET
from tests.expected import doubled_pairs, model_outcome
from tests.pg import OwnServer, Standby


@pytest.fixture
def primary_and_standby():
    # Not under pytest's tmp_path: the servers run as their own system user.
    primary = OwnServer(Path(tempfile.mkdtemp(prefix="gm-primary-")) / "pg")
    standby = None
    try:
        url = primary.database()
        standby = Standby(primary)
        yield url, standby
    finally:
        if standby is not None:
            standby.close()
        primary.close()


async def _replication(db) -> list:
    async with db.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT application_name, state, "
                    "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS bytes "
                    "FROM pg_stat_replication"
                )
            )
        ).all()


async def _waiting_on(db, job_id) -> str | None:
    throttle = (await helpers.get(db, job_id))["throttle"]
    return throttle and throttle["signal"]


async def _batches(db, job_id) -> int:
    async with db.connect() as conn:
        landed = await conn.execute(
            text("SELECT count(*) FROM migration_batches WHERE job_id = :job_id"),
            {"job_id": job_id},
        )
        return landed.scalar_one()


async def _settled(db, job_id) -> int:
    """The job's batches once no new one has landed for half a second (10 s at most)."""
    last = await _batches(db, job_id)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = await _batches(db, job_id)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the job kept committing batches while throttled: {last}")


async def test_a_paused_standby_holds_the_job_until_it_replays_again(primary_and_standby):
    url, standby = primary_and_standby
    await demo.write(url, sessions=3000, seed=61)
    settings = load_settings(
        database_url=url,
        jwt_secret=SECRET,
        heartbeat_seconds=0.1,
        throttle_check_seconds=0.1,
        throttle_recheck_seconds=0.3,
        _env_file=None,
    )
    db = create_engine(settings)
    try:
        await helpers.until(lambda: _streaming(db), 30, "the standby to stream from the primary")
        expected = await model_outcome(db)
        await standby.pause_replay()
        limits = settings.limits().as_dict() | {
            "max_replay_lag_bytes": 512 * 1024,
            "share_above_sessions": None,
        }
        job_id, token = await helpers.start_job(
            db, settings, dry_run=False, batch_size=200, adaptive=False, limits=limits
        )
        task = asyncio.create_task(runner.run_job(db, settings, job_id=job_id, token=token))
        await helpers.until(
            lambda: _is(db, job_id, "replay_lag_bytes"), 30, "the job to wait on the standby"
        )
        throttle = (await helpers.get(db, job_id))["throttle"]
        assert throttle["where"] == Standby.APPLICATION_NAME
        assert throttle["value"] > throttle["threshold"] == 512 * 1024
        assert throttle["message"].startswith("standby replay lag (test_standby) ")
        # It holds still while it waits: the other partition may finish the one batch it had in
        # flight when this one began to wait (on a busy machine that lands after the throttle
        # shows), then it queues behind the wait too.
        seen = await _batches(db, job_id)
        assert await _settled(db, job_id) - seen <= 1
        held = (await helpers.get(db, job_id))["sessions_processed"]
        await asyncio.sleep(1.0)
        assert (await helpers.get(db, job_id))["sessions_processed"] == held < 3000

        # A cancel while it waits is prompt, and the wait ends with the run.
        began = time.monotonic()
        async with db.begin() as conn:
            await store.request_cancel(conn, job_id=job_id, actor="test", stale_after_seconds=30)
        assert await asyncio.wait_for(task, 10) == "cancelled"
        assert time.monotonic() - began < 2
        assert (await helpers.get(db, job_id))["throttle"] is None

        # Resumed with the standby still paused, it waits again; a shutdown ends that wait at
        # once too (the job is interrupted, to be resumed).
        token = await runner.resume_job(db, settings, job_id=job_id, actor="test")
        shutdown = asyncio.Event()
        task = asyncio.create_task(
            runner.run_job(db, settings, job_id=job_id, token=token, stop=shutdown)
        )
        await helpers.until(
            lambda: _is(db, job_id, "replay_lag_bytes"), 30, "the resumed job to wait"
        )
        began = time.monotonic()
        shutdown.set()
        assert await asyncio.wait_for(task, 10) == "interrupted"
        assert time.monotonic() - began < 2

        # Resumed once more, it waits until the standby replays again, then finishes.
        token = await runner.resume_job(db, settings, job_id=job_id, actor="test")
        task = asyncio.create_task(runner.run_job(db, settings, job_id=job_id, token=token))
        await helpers.until(
            lambda: _is(db, job_id, "replay_lag_bytes"), 30, "the job to wait again"
        )
        await standby.resume_replay()
        assert await asyncio.wait_for(task, 60) == "succeeded"

        job = await helpers.get(db, job_id)
        assert helpers.stats(job) == expected.stats and job["throttle"] is None
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
        assert await doubled_pairs(db) == 0
        async with db.connect() as conn:
            actions = (
                await conn.execute(
                    text(
                        "SELECT action, details ->> 'signal' FROM migration_audit "
                        "WHERE job_id = :j AND action LIKE 'throttle%' ORDER BY id"
                    ),
                    {"j": job_id},
                )
            ).all()
        # Waited in each run, first on the bytes; the cancel and the shutdown ended the first
        # two waits, the standby catching up the last. (On a loaded machine the replaying
        # standby may fall behind again for a moment: more waits, each one recorded.)
        assert [tuple(a) for a in actions[:3]] == [("throttled", "replay_lag_bytes")] * 3
        assert actions[-1].action == "throttle_cleared"
        assert {a[1] for a in actions} <= {"replay_lag_bytes", "replay_lag_seconds"}
    finally:
        await db.dispose()


async def _streaming(db) -> bool:
    return any(
        r.application_name == Standby.APPLICATION_NAME and r.state == "streaming"
        for r in await _replication(db)
    )


async def _is(db, job_id, signal: str) -> bool:
    return await _waiting_on(db, job_id) == signal
