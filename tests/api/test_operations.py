"""Probes, the preflight endpoint, the schema guard on job starts, bounds and documented 409s."""

import asyncio
import json
import re
import time
import uuid

import schemathesis
from sqlalchemy import text

from tests import helpers
from tests.api.conftest import BASE, open_client, wait_for


async def test_health_and_ready_need_no_token_and_carry_no_data(client):
    for path, body in (
        ("/health", {"status": "ok"}),
        ("/ready", {"status": "ready", "detail": None}),
    ):
        response = await client.get(path, headers={"Authorization": ""})
        assert response.status_code == 200 and response.json() == body


async def test_ready_is_503_and_starting_a_job_409_while_the_schema_is_behind(client, db):
    async with db.begin() as conn:
        await conn.execute(text("UPDATE goal_migration_alembic_version SET version_num = '0003'"))

    ready = await client.get("/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.json()["status"] == "unavailable"
    assert "run the service's migrations" in ready.json()["detail"]

    response = await client.post(BASE, params={"dry_run": "true"})
    assert response.status_code == 409
    body = response.json()
    assert body["detail"].startswith("the database is not ready for a migration job")
    assert [(p["name"], p["detail"], p["status"]) for p in body["problems"]] == [
        ("service schema", "at revision 0003, head is 0005", "problem")
    ]
    assert body["problems"][0]["fix"] == "cd backend && alembic upgrade head"
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar() == 0


async def test_starting_a_job_on_a_table_missing_a_column_is_refused_before_it_runs(client, db):
    async with db.begin() as conn:
        await conn.execute(text("ALTER TABLE therapy_sessions DROP COLUMN extracted_notes"))
    response = await client.post(BASE)
    assert response.status_code == 409
    assert [p["name"] for p in response.json()["problems"]] == [
        "column therapy_sessions.extracted_notes"
    ]
    assert (await client.get("/ready")).status_code == 200  # reachable, at head


async def test_preflight_endpoint(client):
    response = await client.get(f"{BASE}/preflight")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert {c["status"] for c in body["checks"]} <= {"ok", "warning"}
    assert "service schema" in [c["name"] for c in body["checks"]]
    assert (await client.get(f"{BASE}/preflight", headers={"Authorization": ""})).status_code == 401


async def test_the_openapi_schema_defines_everything_it_refers_to(client):
    spec = (await client.get("/openapi.json")).json()
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs and refs <= set(spec["components"]["schemas"])


async def test_the_documented_jobs_example_is_valid_input(client):
    spec = (await client.get("/openapi.json")).json()
    (jobs,) = [p for p in spec["paths"][f"{BASE}/rollback"]["post"]["parameters"]
               if p["name"] == "jobs"]  # fmt: skip
    (example,) = jobs["schema"]["examples"]
    assert re.fullmatch(jobs["schema"]["pattern"], example)
    assert not re.fullmatch(jobs["schema"]["pattern"], "0b9c…,5d2e…")
    response = await client.post(f"{BASE}/rollback", params={"jobs": example})
    assert response.status_code == 404 and response.json() == {"detail": "job not found"}


async def test_unknown_parameters_are_a_documented_422_on_every_route(client):
    spec = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    for path in ("/verify", "/preflight"):
        response = await client.get(f"{BASE}{path}", params={"verbose": "1"})
        assert response.status_code == 422, response.text
        assert "422" in spec["paths"][BASE + path]["get"]["responses"]
        schema[BASE + path]["GET"].validate_response(response)


async def test_an_offset_beyond_bigint_is_a_422_naming_it(client):
    for path in (BASE, f"{BASE}/{uuid.uuid4()}/issues"):
        response = await client.get(path, params={"offset": "551258510653470405558272"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["query", "offset"]


async def test_every_409_matches_its_documented_schema(client, db, settings):
    spec = (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    done = await helpers.run(db, settings, dry_run=True)
    active, _ = await helpers.start_job(db, settings, dry_run=True, batch_size=10)

    responses = {
        ("/{job_id}/resume", "POST"): await client.post(f"{BASE}/{done['id']}/resume"),
        ("/{job_id}/rollback", "POST"): await client.post(f"{BASE}/{done['id']}/rollback"),
        ("", "POST"): await client.post(BASE),
        ("/{job_id}/cancel", "POST"): await client.post(f"{BASE}/{done['id']}/cancel"),
    }
    for (path, method), response in responses.items():
        assert response.status_code == 409, (path, response.text)
        schema[BASE + path][method].validate_response(response)  # raises if it does not match
    assert responses[("", "POST")].json()["active_job_id"] == str(active)
    assert "active_job_id" not in responses[("/{job_id}/resume", "POST")].json()


async def test_previews_are_purged_after_the_retention_period_at_start_up(settings, db):
    patient = uuid.uuid4()
    await helpers.load(
        db,
        users=[(patient, "patient")],
        sessions=[
            {
                "id": uuid.uuid4(),
                "patient_id": patient,
                "therapist_id": patient,
                "session_date": helpers.ts(1),
                "notes": {"action_items": [{"task": "Private words"}]},
            }
        ],
    )
    old = await helpers.run(db, settings, dry_run=True)
    recent = await helpers.run(db, settings, dry_run=True)
    async with db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE migration_jobs SET finished_at = now() - interval '8 days' WHERE id = :id"
            ),
            {"id": old["id"]},
        )

    configured = settings.model_copy(
        update={"preview_retention_days": 7, "retention_check_seconds": 0.05}
    )
    app, lifespan, client = await open_client(configured)
    try:
        assert (await client.get(f"{BASE}/{old['id']}/preview")).json() == {"items": []}
        kept = (await client.get(f"{BASE}/{recent['id']}/preview")).json()["items"]
        assert [g["description"] for g in kept] == ["Private words"]
        job = await wait_for(client, old["id"])
        assert job["stats"]["goals_created"] == 1  # the job and its numbers stay

        # Later, while the app runs, the recent one's time comes too.
        async with db.begin() as conn:
            await conn.execute(
                text("UPDATE migration_jobs SET finished_at = now() - interval '7 days 1 minute'")
            )
        deadline = time.monotonic() + 30
        while (await client.get(f"{BASE}/{recent['id']}/preview")).json()["items"]:
            assert time.monotonic() < deadline, "the periodic purge never came"
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
