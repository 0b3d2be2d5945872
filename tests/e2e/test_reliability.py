"""Job safety under real faults: frozen processes, shutdown during a pause, a PostgreSQL restart.

Each test ends by comparing the goals in the database with the independent model's, row for row,
and by checking that no (patient, description) pair was created twice.
"""

import asyncio
import signal
import time

import pytest
from sqlalchemy import text

from app import demo
from tests import helpers
from tests.api.conftest import BASE, TERMINAL
from tests.e2e.servers import Server
from tests.expected import doubled_pairs, model_outcome

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


async def until(condition, seconds: float, what: str):
    """Poll an async condition until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        await asyncio.sleep(0.05)


async def job_of(server: Server, job_id: str) -> dict:
    response = await server.client.get(f"{BASE}/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def ended(server: Server, job_id: str, seconds: float = 60) -> dict:
    async def check():
        job = await job_of(server, job_id)
        return job if job["status"] in TERMINAL else None

    return await until(check, seconds, f"job {job_id} to end")


async def execute(db, sql: str) -> None:
    async with db.begin() as conn:
        await conn.execute(text(sql))


@pytest.fixture
async def servers(database_url):
    started: list[Server] = []

    async def start(**env) -> Server:
        server = Server(database_url, **env)
        started.append(server)
        return await server.ready()

    yield start
    for server in started:
        await server.close()


@pytest.mark.parametrize("follow_up", ["new job", "resume", "rollback"])
async def test_a_frozen_process_never_commits_after_losing_its_job(
    servers, db, database_url, follow_up
):
    await demo.write(database_url, sessions=1000, seed=21)
    expected = await model_outcome(db)
    for statement in _SLOW_BATCHES:
        await execute(db, statement)
    # The instance that will freeze keeps the default stale threshold, so that its own idle
    # timeout (half of it) cannot end the frozen transaction first: the fence must stop it.
    frozen = await servers()
    other = await servers(STALE_AFTER_SECONDS="3")

    started = await frozen.client.post(
        BASE, params={"dry_run": "false", "batch_size": 50, "pause_ms": 300}
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    await until(lambda: _created(frozen, job_id), 30, "the first batch to commit")
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
    await until(lambda: _said(frozen, f"job {job_id}: lease revoked"), 30, "the run to stop")
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


async def _created(server: Server, job_id: str) -> bool:
    return (await job_of(server, job_id))["stats"]["goals_created"] > 0


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


async def _said(server: Server, line: str) -> bool:
    return line in server.output()


async def test_sigterm_during_a_long_pause_marks_the_job_interrupted_at_once(
    servers, db, database_url
):
    await demo.write(database_url, sessions=300, seed=22)
    server = await servers()
    started = await server.client.post(
        BASE, params={"dry_run": "false", "batch_size": 20, "pause_ms": 30000}
    )
    job_id = started.json()["id"]
    await until(lambda: _created(server, job_id), 30, "the first batch to commit")
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    await server.exited(20)
    assert time.monotonic() - began < 10  # the 30 s pause did not hold the shutdown
    stopped = await helpers.get(db, job_id)
    assert stopped["status"] == "interrupted"
    assert stopped["goals_created"] == len(await helpers.migrated_goals(db))
