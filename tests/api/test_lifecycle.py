"""Job life cycle under database trouble: locks, deadlocks, rollbacks, long pauses, dead runs.

Expected goals and statistics come from the independent model (tests/model.py).
"""

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import text

from app import demo
from app.db import create_engine
from app.jobs import runner, store
from tests import helpers
from tests.api.conftest import BASE, wait_for
from tests.expected import doubled_pairs, model_outcome


async def _goals_created(db, job_id) -> bool:
    return (await helpers.get(db, job_id))["goals_created"] > 0


async def _waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE application_name = 'goal-migration' AND wait_event_type = 'Lock'"
    )


async def _start(db, settings, **params):
    job_id, token = await helpers.start_job(db, settings, **params)
    task = asyncio.create_task(runner.run_job(db, settings, job_id=job_id, token=token))
    return job_id, task


async def test_a_lock_timeout_is_retried_not_counted_as_bad_data(settings, database_url, job_log):
    await demo.write(database_url, sessions=600, seed=31)
    admin = await asyncpg.connect(database_url)
    # A DBA's lock_timeout on the database: every new connection of the service gets it.
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"ALTER DATABASE {database} SET lock_timeout = '300ms'")
    db = create_engine(settings)
    try:
        expected = await model_outcome(db)
        job_id, task = await _start(db, settings, dry_run=False, batch_size=20, pause_ms=50)
        await helpers.until(lambda: _goals_created(db, job_id), 30, "a first batch")
        async with admin.transaction():
            await admin.execute("LOCK TABLE treatment_goals IN SHARE MODE")
            await helpers.until(
                lambda: _waiting_on_a_lock(admin), 10, "a batch to wait on the lock"
            )
            await asyncio.sleep(3)  # ten lock timeouts' worth
        assert await asyncio.wait_for(task, 60) == "succeeded"
        job = await helpers.get(db, job_id)
        assert helpers.stats(job) == expected.stats and job["errors"] == 0
        assert await helpers.migrated_goals(db) == sorted(expected.goals)
        assert any("LockNotAvailableError" in line and "retrying" in line for line in job_log)
    finally:
        await admin.close()
        await db.dispose()


async def test_a_deadlock_is_retried(db, settings, database_url, job_log):
    await demo.write(database_url, sessions=600, seed=32)
    expected = await model_outcome(db)
    # One partition: a single batch in flight, so the cycle below is the only one.
    job_id, task = await _start(
        db, settings, dry_run=False, batch_size=20, pause_ms=50, partition_count=1
    )
    await helpers.until(lambda: _goals_created(db, job_id), 30, "a first batch")
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            # Only the batch may detect the deadlock, so only the batch is its victim.
            await other.execute("SET LOCAL deadlock_timeout = '60s'")
            await other.execute(
                "SELECT 1 FROM migration_job_partitions WHERE job_id = $1 FOR UPDATE", job_id
            )
            # A batch that inserted goals (holding key-share locks on their users) now waits for
            # our partition lock to save its progress; we wait for its users: a cycle.
            await helpers.until(lambda: _waiting_on_a_lock(other), 10, "a batch to wait on us")
            await other.execute("SELECT 1 FROM users FOR UPDATE")
    finally:
        await other.close()
    assert await asyncio.wait_for(task, 60) == "succeeded"
    job = await helpers.get(db, job_id)
    assert helpers.stats(job) == expected.stats
    assert await helpers.migrated_goals(db) == sorted(expected.goals)
    assert any("DeadlockDetectedError" in line and "retrying" in line for line in job_log)


async def test_a_transient_error_that_persists_fails_the_job_and_resume_finishes_it(
    db, settings, database_url
):
    await demo.write(database_url, sessions=300, seed=33)
    expected = await model_outcome(db)
    impatient = settings.model_copy(update={"retry_attempts": 2, "retry_backoff_seconds": 0.05})
    admin = await asyncpg.connect(database_url)
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"ALTER DATABASE {database} SET lock_timeout = '200ms'")
    engine = create_engine(impatient)
    try:
        async with admin.transaction():
            await admin.execute("LOCK TABLE treatment_goals IN SHARE MODE")
            job_id, task = await _start(engine, impatient, dry_run=False, batch_size=50)
            assert await asyncio.wait_for(task, 60) == "failed"
    finally:
        await engine.dispose()
        await admin.close()
    failed = await helpers.get(db, job_id)
    assert "LockNotAvailableError" in failed["error"] and "resume" in failed["error"]
    assert failed["errors"] == 0 and failed["goals_created"] == 0

    token = await runner.resume_job(db, settings, job_id=job_id, actor="test")
    assert await runner.run_job(db, settings, job_id=job_id, token=token) == "succeeded"
    assert helpers.stats(await helpers.get(db, job_id)) == expected.stats
    assert await helpers.migrated_goals(db) == sorted(expected.goals)


async def test_a_rolled_back_job_cannot_be_resumed_and_verify_does_not_judge_it(
    client, db, database_url
):
    await demo.write(database_url, sessions=800, seed=34)
    expected = await model_outcome(db)
    job = (
        await client.post(
            BASE,
            params={"dry_run": "false", "batch_size": 20, "pause_ms": 100, "adaptive": "false"},
        )
    ).json()
    await wait_for(client, job["id"], lambda j: j["stats"]["goals_created"] > 0)
    assert (await client.post(f"{BASE}/{job['id']}/cancel")).status_code == 202
    assert (await wait_for(client, job["id"]))["status"] == "cancelled"
    rollback = await client.post(f"{BASE}/{job['id']}/rollback", params={"dry_run": "false"})
    assert (await wait_for(client, rollback.json()["id"]))["status"] == "succeeded"

    refused = await client.post(f"{BASE}/{job['id']}/resume")
    assert refused.status_code == 409
    assert "rolled back" in refused.json()["detail"]
    assert (await helpers.get(db, job["id"]))["status"] == "cancelled"

    verify = (await client.get(f"{BASE}/verify")).json()
    assert verify["all_items_accounted"] is False and verify["last_real_run_id"] is None
    assert "No real migration has succeeded" in verify["summary"]

    fresh = (await client.post(BASE, params={"dry_run": "false"})).json()
    assert (await wait_for(client, fresh["id"]))["status"] == "succeeded"
    verify = (await client.get(f"{BASE}/verify")).json()
    assert verify["last_real_run_id"] == fresh["id"] and verify["all_items_accounted"] is True
    assert verify["last_real_run_goals_missing"] == 0
    assert await helpers.migrated_goals(db) == sorted(expected.goals)


async def test_verify_never_says_accounted_when_goals_are_missing(client, db, database_url):
    await demo.write(database_url, sessions=200, seed=35)
    job = (await client.post(BASE, params={"dry_run": "false"})).json()
    assert (await wait_for(client, job["id"]))["status"] == "succeeded"
    async with db.begin() as conn:
        await conn.execute(
            text(
                "DELETE FROM treatment_goals WHERE id IN (SELECT id FROM treatment_goals "
                "WHERE source_job_id = :j LIMIT 3)"
            ),
            {"j": job["id"]},
        )
    verify = (await client.get(f"{BASE}/verify")).json()
    assert verify["all_items_accounted"] is False and verify["last_real_run_goals_missing"] == 3
    assert "3 goals" in verify["summary"]


async def test_failed_sessions_are_reconciled(db, settings, database_url, client):
    await demo.write(database_url, sessions=300, seed=36)
    failing = set(await helpers.sessions_with_items(db, 7))
    expected = await model_outcome(db, fail_sessions=failing)
    await helpers.fail_goal_inserts_for(db, failing)
    job = await helpers.run(db, settings, dry_run=False, batch_size=40)
    assert helpers.stats(job) == expected.stats and job["errors"] == len(expected.errors) > 0
    # the replayed batches count each patient once, not once per session
    assert job["patients_with_goals_created"] == expected.patients_with_goals_created

    verify = (await client.get(f"{BASE}/verify")).json()
    assert verify["last_real_run_accounted"] == verify["total_action_items"]
    assert verify["last_real_run_items_in_failed_sessions"] > 0
    assert verify["all_items_accounted"] is False
    assert f"{job['errors']} sessions" in verify["summary"]


async def test_cancel_during_a_long_pause_takes_effect_within_a_second(client, db, database_url):
    await demo.write(database_url, sessions=300, seed=37)
    job = (
        await client.post(
            BASE,
            params={"dry_run": "false", "batch_size": 20, "pause_ms": 30000, "adaptive": "false"},
        )
    ).json()
    await wait_for(client, job["id"], lambda j: j["stats"]["goals_created"] > 0)
    began = time.monotonic()
    assert (await client.post(f"{BASE}/{job['id']}/cancel")).status_code == 202
    stopped = await wait_for(client, job["id"], seconds=10)
    assert stopped["status"] == "cancelled"
    assert time.monotonic() - began < 3  # the 30 s pause woke on the cancel
    assert stopped["stats"]["goals_created"] == len(await helpers.migrated_goals(db))


async def test_cancelling_a_job_whose_process_is_gone_cancels_it_at_once(db, settings, client):
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=10)
    async with db.begin() as conn:
        assert await store.claim(conn, job_id=job_id, token=token) is not None
        # its process died: no heartbeat for longer than the stale threshold
        await conn.execute(
            text(
                "UPDATE migration_jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = :j"
            ),
            {"j": job_id},
        )
    response = await client.post(f"{BASE}/{job_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    # the dead run's lease is gone: were it only frozen, it could not commit another batch
    async with db.begin() as conn:
        with pytest.raises(store.LeaseLost):
            await store.save_progress(
                conn,
                job_id=job_id,
                partition=0,
                token=token,
                started_from=None,
                cursor=None,
                done=True,
                stats={},
            )


async def test_nothing_is_doubled_by_a_second_run(db, settings, database_url):
    await demo.write(database_url, sessions=200, seed=38)
    await helpers.run(db, settings)
    second = await helpers.run(db, settings)
    assert second["goals_created"] == 0
    assert await doubled_pairs(db) == 0


async def test_a_job_is_never_recorded_succeeded_while_the_database_lacks_its_batches(db, settings):
    # The run saw both partitions finish, but a crash took the last batches of one with it:
    # the database still holds that partition unfinished.
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=10)
    async with db.begin() as conn:
        assert await store.claim(conn, job_id=job_id, token=token) is not None
        await conn.execute(
            text(
                "UPDATE migration_job_partitions SET done = true "
                "WHERE job_id = :j AND partition = 0"
            ),
            {"j": job_id},
        )
    async with db.begin() as conn:
        with pytest.raises(store.Unfinished):
            await store.finish(conn, job_id=job_id, token=token, status="succeeded")
    job = await helpers.get(db, job_id)
    assert job["status"] == "running" and job["finished_at"] is None
    # Any other end is recorded: a resume continues from the cursors the database kept.
    async with db.begin() as conn:
        assert await store.finish(conn, job_id=job_id, token=token, status="interrupted")
    assert (await helpers.get(db, job_id))["status"] == "interrupted"
