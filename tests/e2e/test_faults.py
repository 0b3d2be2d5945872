"""Real server processes killed mid-job: nothing lost, nothing doubled, and the job resumes."""

import signal
import time

from app import demo
from tests import helpers
from tests.api.conftest import BASE
from tests.e2e.servers import Server, created, ended, job_of
from tests.expected import doubled_pairs, model_outcome
from tests.helpers import until


async def _start_slow_job(server: Server) -> str:
    response = await server.client.post(
        BASE, params={"dry_run": "false", "batch_size": 10, "pause_ms": 40, "adaptive": "false"}
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    await until(lambda: created(server, job_id), 30, "the first batch to commit")
    return job_id


async def test_kill_9_mid_job_then_resume_elsewhere(servers, db, database_url):
    await demo.write(database_url, sessions=700, seed=12)
    expected = await model_outcome(db)
    first = await servers()
    job_id = await _start_slow_job(first)
    first.signal(signal.SIGKILL)
    await first.exited(10)

    # What the dead process committed matches its counters exactly.
    after_crash = await helpers.get(db, job_id)
    assert after_crash["status"] == "running"
    assert after_crash["goals_created"] == len(await helpers.migrated_goals(db)) > 0

    # Three seconds without a heartbeat (every 0.3 s) marks it stale: ten beats of headroom.
    second = await servers(STALE_AFTER_SECONDS="3")

    async def interrupted():
        job = await job_of(second, job_id)
        return job if job["status"] == "interrupted" else None

    seen = await until(interrupted, 30, "the dead job to be marked interrupted")
    assert "no heartbeat" in seen["error"]
    assert (await second.client.post(f"{BASE}/{job_id}/resume")).status_code == 202
    done = await ended(second, job_id)
    assert done["status"] == "succeeded"
    assert done["stats"] == expected.stats
    assert await helpers.migrated_goals(db) == sorted(expected.goals)
    assert await doubled_pairs(db) == 0


async def test_sigterm_saves_the_cursor_and_exits_promptly(servers, db, database_url):
    await demo.write(database_url, sessions=700, seed=13)
    expected = await model_outcome(db)
    server = await servers()
    job_id = await _start_slow_job(server)
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    code = await server.exited(15)
    assert time.monotonic() - began < 10
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert code in (0, -signal.SIGTERM)

    stopped = await helpers.get(db, job_id)
    assert stopped["status"] == "interrupted"
    assert stopped["goals_created"] == len(await helpers.migrated_goals(db))
    log = server.output()
    assert "Application shutdown complete" in log and f"job {job_id} ended: interrupted" in log

    again = await servers()
    assert (await again.client.post(f"{BASE}/{job_id}/resume")).status_code == 202
    done = await ended(again, job_id)
    assert done["status"] == "succeeded"
    assert done["stats"] == expected.stats
    assert await helpers.migrated_goals(db) == sorted(expected.goals)
