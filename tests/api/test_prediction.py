"""A real run confirmed from a dry run records it, and says whether it matched the prediction."""

import uuid

from app import demo
from tests import helpers
from tests.api.conftest import BASE, wait_for


async def _dry_run(client) -> dict:
    response = await client.post(BASE, params={"dry_run": "true"})
    assert response.status_code == 202, response.text
    return await wait_for(client, response.json()["id"])


async def _confirmed_run(client, dry_id: str) -> dict:
    response = await client.post(BASE, params={"dry_run": "false", "confirmed_from": dry_id})
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["confirmed_from"] == dry_id
    assert started["prediction"]["matched"] is None  # not ended yet
    return await wait_for(client, started["id"])


async def test_unchanged_data_matches_the_prediction(client, database_url):
    await demo.write(database_url, sessions=300, seed=2)
    dry = await _dry_run(client)
    real = await _confirmed_run(client, dry["id"])
    assert real["status"] == "succeeded"
    assert real["confirmed_from"] == dry["id"]
    assert real["prediction"] == {
        "dry_run_id": dry["id"],
        "predicted": dry["stats"],
        "matched": True,
        "differences": {},
    }
    listed = (await client.get(BASE)).json()["items"]
    assert listed[0]["id"] == real["id"] and listed[0]["prediction"]["matched"] is True
    assert listed[1]["id"] == dry["id"] and listed[1]["prediction"] is None

    audit = (await client.get(f"{BASE}/{real['id']}/audit")).json()["items"]
    assert audit[0]["action"] == "start" and audit[0]["details"]["confirmed_from"] == dry["id"]


async def test_data_changed_in_between_shows_by_how_much(client, database_url, db):
    await demo.write(database_url, sessions=300, seed=3)
    dry = await _dry_run(client)
    patient, therapist = uuid.uuid4(), uuid.uuid4()
    await helpers.load(
        db,
        users=[(patient, "patient"), (therapist, "therapist")],
        sessions=[
            {
                "id": uuid.uuid4(),
                "patient_id": patient,
                "therapist_id": therapist,
                "session_date": helpers.ts(5),
                "notes": {"action_items": [{"task": "Walk"}, {"task": "Read"}, {"task": ""}]},
            }
        ],
    )
    real = await _confirmed_run(client, dry["id"])
    assert real["prediction"]["matched"] is False
    assert real["prediction"]["differences"] == {
        "sessions_processed": 1,
        "sessions_with_action_items": 1,
        "goals_created": 2,
        "goals_skipped_invalid": 1,
    }


async def test_confirmed_from_must_be_a_succeeded_dry_run(client, database_url):
    await demo.write(database_url, sessions=100, seed=4)
    unknown = str(uuid.uuid4())
    response = await client.post(BASE, params={"dry_run": "false", "confirmed_from": unknown})
    # a well-formed id that names no job: the 404 every route gives, in the same shape
    assert response.status_code == 404 and response.json() == {"detail": "job not found"}

    response = await client.post(BASE, params={"dry_run": "false", "confirmed_from": "nope"})
    assert response.status_code == 422

    dry = await _dry_run(client)
    # well-formed requests the named job refuses are 409s, never a 422 for schema-valid input
    response = await client.post(BASE, params={"dry_run": "true", "confirmed_from": dry["id"]})
    assert response.status_code == 409
    assert response.json()["detail"] == "confirmed_from applies to a real run (dry_run=false)"

    real = (await client.post(BASE, params={"dry_run": "false"})).json()
    real = await wait_for(client, real["id"])
    assert real["confirmed_from"] is None and real["prediction"] is None
    response = await client.post(BASE, params={"dry_run": "false", "confirmed_from": real["id"]})
    assert response.status_code == 409
    assert response.json()["detail"].endswith("is not a dry-run migration")

    stopped = await client.post(
        BASE, params={"dry_run": "true", "batch_size": 1, "pause_ms": 200, "adaptive": "false"}
    )
    stopped = stopped.json()
    assert (await client.post(f"{BASE}/{stopped['id']}/cancel")).status_code == 202
    assert (await wait_for(client, stopped["id"]))["status"] == "cancelled"
    response = await client.post(BASE, params={"dry_run": "false", "confirmed_from": stopped["id"]})
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"confirmed_from: dry run {stopped['id']} is cancelled; only a succeeded dry run "
        "can be confirmed"
    )
    jobs = (await client.get(BASE)).json()["items"]
    assert len(jobs) == 3  # the refused requests started nothing
