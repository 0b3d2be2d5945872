"""The admin API end to end: start, watch, list, issues, preview, cancel, resume, verify."""

import asyncio
import uuid

from sqlalchemy import text

from app import demo
from app.config import load_settings
from app.db import create_engine
from tests import helpers, model
from tests.api.conftest import BASE, TERMINAL, open_client, wait_for
from tests.conftest import SECRET, drop_database, new_database

STAT_KEYS = set(model.STATS)


async def test_dry_run_is_the_default_and_predicts_the_real_run(client, database_url, db):
    await demo.write(database_url, sessions=600, seed=5)
    response = await client.post(BASE)
    assert response.status_code == 202
    dry = response.json()
    assert dry["dry_run"] is True and dry["kind"] == "migrate"
    assert response.headers["Location"] == f"{BASE}/{dry['id']}"
    dry = await wait_for(client, dry["id"])
    assert dry["status"] == "succeeded"
    assert set(dry["stats"]) == STAT_KEYS
    assert dry["progress"]["sessions_processed"] == dry["progress"]["sessions_total"] > 0
    assert dry["progress"]["percent"] == 100.0
    async with db.connect() as conn:
        migrated = "SELECT count(*) FROM treatment_goals WHERE source_job_id IS NOT NULL"
        assert (await conn.execute(text(migrated))).scalar_one() == 0

    preview = (await client.get(f"{BASE}/{dry['id']}/preview", params={"limit": 5})).json()
    assert len(preview["items"]) == 5
    assert set(preview["items"][0]) == {
        "session_id", "patient_id", "description", "category", "created_at",
    }  # fmt: skip

    real = (await client.post(BASE, params={"dry_run": "false", "batch_size": 50})).json()
    real = await wait_for(client, real["id"])
    assert real["status"] == "succeeded" and real["dry_run"] is False
    assert real["stats"] == dry["stats"]
    for key in ("started_at", "finished_at", "heartbeat_at", "created_at"):
        assert real[key].endswith("Z") or "+" in real[key]

    verify = (await client.get(f"{BASE}/verify")).json()
    assert verify["last_real_run_id"] == real["id"]
    assert verify["all_items_accounted"] is True
    assert verify["goals_from_migrations"] == real["stats"]["goals_created"]
    assert verify["sessions_with_action_items"] == real["stats"]["sessions_processed"]

    jobs = (await client.get(BASE)).json()["items"]
    assert [j["id"] for j in jobs] == [real["id"], dry["id"]]
    assert [
        j["id"] for j in (await client.get(BASE, params={"limit": 1, "offset": 1})).json()["items"]
    ] == [dry["id"]]


async def test_issues_list_invalid_items_and_failed_sessions(client, db):
    p, t = uuid.uuid4(), uuid.uuid4()
    bad = {"id": uuid.uuid4(), "patient_id": p, "therapist_id": t, "session_date": helpers.ts(1),
           "notes": {"action_items": [{"task": "Walk"}]}}  # fmt: skip
    odd_items = [{"task": ""}, "x", {"task": "Run", "details": 3}]
    odd = {**bad, "id": uuid.uuid4(), "session_date": helpers.ts(2),
           "notes": {"action_items": odd_items}}  # fmt: skip
    await helpers.load(db, users=[(p, "patient"), (t, "therapist")], sessions=[bad, odd])
    await helpers.fail_goal_inserts_for(db, [bad["id"]])
    job = (await client.post(BASE, params={"dry_run": "false"})).json()
    job = await wait_for(client, job["id"])
    assert job["status"] == "succeeded" and job["stats"]["errors"] == 1
    assert job["stats"]["goals_skipped_invalid"] == 3

    invalid = (await client.get(f"{BASE}/{job['id']}/issues", params={"kind": "invalid"})).json()
    assert invalid["total"] == 3
    assert sorted((i["item_index"], i["reason"]) for i in invalid["items"]) == [
        (0, "missing task"), (1, "item is not an object"), (2, "details is not a string"),
    ]  # fmt: skip
    errors = (await client.get(f"{BASE}/{job['id']}/issues", params={"kind": "error"})).json()
    assert errors["total"] == 1 and errors["items"][0]["session_id"] == str(bad["id"])
    assert "SQLSTATE P0001" in errors["items"][0]["reason"]
    everything = (await client.get(f"{BASE}/{job['id']}/issues", params={"limit": 2})).json()
    assert everything["total"] == 4 and len(everything["items"]) == 2


async def test_bad_input_gets_clear_4xx(client):
    for params in (
        {"batch_size": 0}, {"batch_size": 10001}, {"pause_ms": -1}, {"pause_ms": 60001},
        {"dry_run": "perhaps"}, {"max_errors": -1},
    ):  # fmt: skip
        response = await client.post(BASE, params=params)
        assert response.status_code == 422, params
    assert (await client.get(f"{BASE}/not-a-uuid")).status_code == 422
    missing = await client.get(f"{BASE}/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json() == {"detail": "job not found"}
    for path in ("issues", "preview", "audit"):
        assert (await client.get(f"{BASE}/{uuid.uuid4()}/{path}")).status_code == 404
    assert (await client.post(f"{BASE}/{uuid.uuid4()}/cancel")).status_code == 404
    assert (await client.post(f"{BASE}/{uuid.uuid4()}/resume")).status_code == 404
    assert (
        await client.get(f"{BASE}/{uuid.uuid4()}/issues", params={"kind": "x"})
    ).status_code == 422
    assert (await client.get(BASE, params={"limit": 0})).status_code == 422


async def test_concurrent_starts_admit_exactly_one(client, database_url):
    await demo.write(database_url, sessions=300, seed=2)
    responses = await asyncio.gather(
        *(client.post(BASE, params={"pause_ms": 100, "batch_size": 20}) for _ in range(6))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * 5
    winner = next(r.json() for r in responses if r.status_code == 202)
    for r in responses:
        if r.status_code == 409:
            conflict = r.json()
            assert conflict["detail"].startswith("another migration or rollback job is active")
            assert conflict["active_job_id"] == winner["id"]
            assert conflict["active_job_status"] in {"queued", "running"}
    await client.post(f"{BASE}/{winner['id']}/cancel")
    await wait_for(client, winner["id"])


async def test_two_app_instances_share_one_guard(settings, database_url):
    await demo.write(database_url, sessions=300, seed=2)
    first, second = await open_client(settings), await open_client(settings)
    try:
        a, b = await asyncio.gather(
            first[2].post(BASE, params={"pause_ms": 100, "batch_size": 20}),
            second[2].post(BASE, params={"pause_ms": 100, "batch_size": 20}),
        )
        assert sorted([a.status_code, b.status_code]) == [202, 409]
        winner = a if a.status_code == 202 else b
        # the other instance answers for the job it did not start
        job_id = winner.json()["id"]
        other = second[2] if winner is a else first[2]
        assert (await other.get(f"{BASE}/{job_id}")).json()["status"] in {"queued", "running"}
        cancelled = await other.post(f"{BASE}/{job_id}/cancel")
        assert cancelled.status_code == 202
        job = await wait_for(other, job_id)
        assert job["status"] == "cancelled"
    finally:
        for _app, lifespan, client in (first, second):
            await client.aclose()
            await lifespan.__aexit__(None, None, None)


async def _uninterrupted(server_url, template_db, seed, sessions):
    """Stats and goal rows of an uninterrupted real run on an identical database."""
    url = await asyncio.to_thread(new_database, server_url, template_db)
    try:
        await demo.write(url, sessions=sessions, seed=seed)
        other = load_settings(database_url=url, jwt_secret=SECRET, _env_file=None)
        engine = create_engine(other)
        try:
            job = await helpers.run(engine, other, dry_run=False, batch_size=37)
            return helpers.stats(job), await helpers.migrated_goals(engine)
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(drop_database, url)


async def test_cancel_then_resume_equals_an_uninterrupted_run(
    client, db, database_url, server_url, template_db
):
    await demo.write(database_url, sessions=800, seed=9)
    job = (
        await client.post(BASE, params={"dry_run": "false", "batch_size": 20, "pause_ms": 100})
    ).json()
    await wait_for(client, job["id"], lambda j: j["progress"]["sessions_processed"] > 0)
    response = await client.post(f"{BASE}/{job['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] in {"cancelling", "cancelled"}
    stopped = await wait_for(client, job["id"])
    assert stopped["status"] == "cancelled"
    assert 0 < stopped["progress"]["sessions_processed"] < stopped["progress"]["sessions_total"]
    assert (await client.post(f"{BASE}/{job['id']}/cancel")).status_code == 409
    # what was committed stays, and the counters match the rows exactly
    assert len(await helpers.migrated_goals(db)) == stopped["stats"]["goals_created"]

    resumed = await client.post(f"{BASE}/{job['id']}/resume")
    assert resumed.status_code == 202 and resumed.json()["id"] == job["id"]
    done = await wait_for(client, job["id"])
    assert done["status"] == "succeeded"
    assert (await client.post(f"{BASE}/{job['id']}/resume")).status_code == 409

    expected_stats, expected_goals = await _uninterrupted(server_url, template_db, 9, 800)
    assert {k: done["stats"][k] for k in STAT_KEYS} == expected_stats
    assert await helpers.migrated_goals(db) == expected_goals

    actions = [a["action"] for a in (await client.get(f"{BASE}/{job['id']}/audit")).json()["items"]]
    assert actions == ["start", "cancel", "cancelled", "resume"]


async def test_max_errors_fails_the_job_and_resume_continues(client, db):
    p, t = uuid.uuid4(), uuid.uuid4()
    sessions = [
        {"id": uuid.uuid4(), "patient_id": p, "therapist_id": t, "session_date": helpers.ts(d),
         "notes": {"action_items": [{"task": f"Task {d}"}]}}
        for d in range(6)
    ]  # fmt: skip
    await helpers.load(db, users=[(p, "patient"), (t, "therapist")], sessions=sessions)
    await helpers.fail_goal_inserts_for(db, [s["id"] for s in sessions[:3]])
    job = (await client.post(BASE, params={"dry_run": "false", "max_errors": 1})).json()
    failed = await wait_for(client, job["id"])
    assert failed["status"] == "failed" and "max_errors=1" in failed["error"]
    async with db.begin() as conn:
        await conn.execute(text("DROP TRIGGER fail_for_session ON treatment_goals"))
    # the whole patient was one batch, so its errors stand; resuming finds nothing more to do
    await client.post(f"{BASE}/{job['id']}/resume")
    done = await wait_for(client, job["id"])
    assert done["status"] == "succeeded"
    assert done["stats"]["errors"] == 3 and done["stats"]["goals_created"] == 3


async def test_a_job_whose_process_is_gone_is_interrupted_and_resumes(
    client, db, settings, database_url
):
    await demo.write(database_url, sessions=400, seed=4)
    # A job claimed by a "process" that then vanished: a run token nobody heartbeats.
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=25)
    async with db.begin() as conn:
        from app.jobs import store

        await store.claim(conn, job_id=job_id, token=token)
        await conn.execute(
            text("UPDATE migration_jobs SET heartbeat_at = now() - interval '31 seconds'")
        )
    job = (await client.get(f"{BASE}/{job_id}")).json()
    assert job["status"] == "interrupted" and "no heartbeat" in job["error"]
    assert (await client.post(f"{BASE}/{job_id}/resume")).status_code == 202
    done = await wait_for(client, job_id)
    assert done["status"] == "succeeded"
    dry = await helpers.run(db, settings, dry_run=True)
    assert dry["goals_created"] == 0  # everything is migrated
    assert done["stats"]["goals_created"] == len(await helpers.migrated_goals(db))
    actions = [a["action"] for a in (await client.get(f"{BASE}/{job_id}/audit")).json()["items"]]
    assert actions == ["start", "interrupted", "resume"]


async def test_openapi_lists_every_route_with_models(client):
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        BASE: {"get", "post"},
        f"{BASE}/verify": {"get"},
        f"{BASE}/{{job_id}}": {"get"},
        f"{BASE}/{{job_id}}/issues": {"get"},
        f"{BASE}/{{job_id}}/preview": {"get"},
        f"{BASE}/{{job_id}}/audit": {"get"},
        f"{BASE}/{{job_id}}/cancel": {"post"},
        f"{BASE}/{{job_id}}/resume": {"post"},
        f"{BASE}/{{job_id}}/rollback": {"post"},
        f"{BASE}/rollback": {"post"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
        for method in methods:
            ok = next(c for c in paths[path][method]["responses"] if c.startswith("2"))
            assert "$ref" in str(paths[path][method]["responses"][ok]), (path, method)
    for name in ("Job", "JobList", "FindingList", "PreviewList", "AuditList", "Verification",
                  "ActiveJobConflict", "MigrateProgress", "RollbackProgress", "MigrateStats",
                  "RollbackStats"):  # fmt: skip
        assert name in spec["components"]["schemas"]
    assert set(spec["components"]["schemas"]["Job"]["properties"]["status"]["enum"]) >= TERMINAL
