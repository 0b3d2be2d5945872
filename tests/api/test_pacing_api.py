"""The API's side of pacing: adaptive and limits on start, changing limits, the timeline."""

from sqlalchemy import text

from app import demo
from tests import helpers
from tests.api.conftest import BASE, wait_for

LIMIT_NAMES = {
    "max_replay_lag_seconds",
    "max_replay_lag_bytes",
    "max_archive_backlog",
    "yield_to_autovacuum",
    "max_lock_wait_seconds",
    "max_batch_slowdown",
    "share_above_sessions",
}


async def _audit(client, job_id) -> list:
    return (await client.get(f"{BASE}/{job_id}/audit")).json()["items"]


async def test_a_job_starts_adaptive_with_the_services_limits_and_the_ones_asked_for(
    client, settings, database_url, db
):
    await demo.write(database_url, sessions=300, seed=51)
    started = await client.post(
        BASE, params={"max_replay_lag_seconds": 12.5, "max_archive_backlog": 0}
    )
    assert started.status_code == 202, started.text
    job = await wait_for(client, started.json()["id"])
    defaults = settings.limits().as_dict()
    assert job["adaptive"] is True and job["throttle"] is None
    assert set(job["limits"]) == LIMIT_NAMES
    assert job["limits"] == defaults | {"max_replay_lag_seconds": 12.5, "max_archive_backlog": None}
    assert job["current_batch_size"] is not None

    # A limit the row lacks (added to the service after the job started) shows as applied.
    async with db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE migration_jobs SET limits = limits - 'share_above_sessions' WHERE id = :j"
            ),
            {"j": job["id"]},
        )
    shown = (await client.get(f"{BASE}/{job['id']}")).json()["limits"]
    assert shown["share_above_sessions"] == defaults["share_above_sessions"] == 2

    fixed = await client.post(BASE, params={"adaptive": "false", "batch_size": 40})
    fixed = await wait_for(client, fixed.json()["id"])
    assert fixed["adaptive"] is False and fixed["current_batch_size"] == 40


async def test_limits_change_on_a_running_job_audited_and_not_on_a_finished_one(
    client, db, database_url
):
    await demo.write(database_url, sessions=300, seed=53)
    async with helpers.gate_closed(db):
        started = (await client.post(BASE, params={"batch_size": 50})).json()
        await helpers.at_gate(db, 1)
        changed = await client.post(
            f"{BASE}/{started['id']}/limits",
            params={"max_replay_lag_seconds": 30, "yield_to_autovacuum": "false"},
        )
        assert changed.status_code == 200, changed.text
        limits = changed.json()["limits"]
        assert limits["max_replay_lag_seconds"] == 30 and limits["yield_to_autovacuum"] is False
        # Nothing named: the job as it is, nothing audited.
        same = await client.post(f"{BASE}/{started['id']}/limits")
        assert same.status_code == 200 and same.json()["limits"] == limits
    job = await wait_for(client, started["id"])
    entries = [e for e in await _audit(client, job["id"]) if e["action"] == "limits"]
    assert len(entries) == 1 and entries[0]["actor"] == "admin-1"
    assert entries[0]["details"] == {
        "max_replay_lag_seconds": {"from": 5.0, "to": 30},
        "yield_to_autovacuum": {"from": True, "to": False},
    }
    late = await client.post(f"{BASE}/{job['id']}/limits", params={"max_batch_slowdown": 2})
    assert late.status_code == 409 and "succeeded" in late.json()["detail"]
    missing = await client.post(
        f"{BASE}/00000000-0000-4000-8000-000000000000/limits", params={"max_batch_slowdown": 2}
    )
    assert missing.status_code == 404
    bad = await client.post(f"{BASE}/{job['id']}/limits", params={"max_batch_slowdown": -1})
    assert bad.status_code == 422


async def test_the_timeline_adds_up_to_the_job(client, db, database_url):
    await demo.write(database_url, sessions=2000, seed=52)
    # No batch slowdown limit: one batch slowed by the machine (a checkpoint, say) would
    # throttle the job, and this timeline is to show none.
    params = {"dry_run": "false", "batch_size": 100, "max_batch_slowdown": 0}
    job = (await client.post(BASE, params=params)).json()
    job = await wait_for(client, job["id"])
    timeline = (await client.get(f"{BASE}/{job['id']}/timeline", params={"slices": 5})).json()
    slices = timeline["slices"]
    assert 1 <= len(slices) <= 6 and timeline["throttled"] == []
    assert sum(s["processed"] for s in slices) == job["stats"]["sessions_processed"]
    async with db.connect() as conn:
        batches = (
            await conn.execute(
                text("SELECT count(*) FROM migration_batches WHERE job_id = :j"), {"j": job["id"]}
            )
        ).scalar_one()
    assert sum(s["batches"] for s in slices) == batches
    assert all(s["seconds"] >= 1.0 and s["batch_size"] >= 50 for s in slices)
    assert [s["start"] for s in slices] == sorted(s["start"] for s in slices)
    missing = await client.get(f"{BASE}/00000000-0000-4000-8000-000000000000/timeline")
    assert missing.status_code == 404
