"""LOG_FORMAT=json on a real server process: every line of a whole job is one JSON object.

The job meets failing sessions (a trigger whose error message quotes the goal's text) and a
table lock under a database lock_timeout, so the retry and failure events are in the log too.
"""

import asyncio
import json
from datetime import datetime, timedelta

import asyncpg

from app import demo
from tests import helpers
from tests.api.conftest import BASE
from tests.e2e.servers import created, ended, said

JOB_EVENTS = {"job.started", "job.batch_retry", "job.sessions_failed", "job.ended"}


async def _waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE application_name = 'goal-migration' AND wait_event_type = 'Lock'"
    )


async def test_a_whole_job_logs_one_json_object_a_line_without_clinical_text(
    servers, db, database_url
):
    await demo.write(database_url, sessions=600, seed=81)
    failing = set(await helpers.sessions_with_items(db, 7))
    await helpers.fail_goal_inserts_for(db, failing)
    admin = await asyncpg.connect(database_url)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE {database} SET lock_timeout = '300ms'")
        server = await servers(LOG_FORMAT="json")
        response = await server.client.post(
            BASE, params={"dry_run": "false", "batch_size": 20, "pause_ms": 50, "adaptive": "false"}
        )
        job_id = response.json()["id"]
        await helpers.until(lambda: created(server, job_id), 30, "a first batch")
        async with admin.transaction():
            await admin.execute("LOCK TABLE treatment_goals IN SHARE MODE")
            await helpers.until(lambda: _waiting_on_a_lock(admin), 10, "a batch to wait")
            await asyncio.sleep(1.5)  # a few lock timeouts' worth
        job = await ended(server, job_id)
        # The end is logged after it is recorded: a poll can see it first.
        await helpers.until(lambda: said(server, '"job.ended"'), 10, "the end to be logged")
    finally:
        await admin.close()
    assert job["status"] == "succeeded" and job["stats"]["errors"] > 0

    output = server.output()
    lines = [json.loads(line) for line in output.splitlines()]  # every line, uvicorn's too
    for line in lines:
        assert {"ts", "level", "logger", "event", "message"} <= line.keys(), line
        assert datetime.fromisoformat(line["ts"]).utcoffset() == timedelta(0)
    ours = [line for line in lines if line["event"].startswith("job.")]
    assert {line["event"] for line in ours} >= JOB_EVENTS
    assert all(line["job_id"] == job_id for line in ours)
    by_event = {line["event"]: line for line in ours}
    retry = by_event["job.batch_retry"]
    assert retry["level"] == "WARNING" and retry["sqlstate"] == "55P03"
    assert retry["partition"] in (0, 1) and retry["attempt"] >= 2
    failed = [line for line in ours if line["event"] == "job.sessions_failed"]
    assert sum(line["failed_sessions"] for line in failed) == job["stats"]["errors"]
    assert {s for line in failed for s in line["session_ids"]} <= {str(s) for s in failing}
    end = by_event["job.ended"]
    assert end["status"] == "succeeded" and end["counts"]["errors"] == job["stats"]["errors"]
    assert end["counts"]["goals_created"] == job["stats"]["goals_created"]
    assert any(line["event"] == "http.request" and line["status"] == 202 for line in lines)

    # No text of any action item or goal, and no id but the failed sessions' named on purpose.
    texts = await helpers.clinical_texts(db)
    assert texts and not [t for t in texts if t in output]
    named = {s for line in failed for s in line["session_ids"]}
    ids = await helpers.data_ids(db)
    assert not [i for i in ids - named if i in output]
