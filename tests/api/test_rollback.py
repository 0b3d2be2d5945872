"""Rollback removes exactly what one job created, and never a goal a clinician has touched."""

import uuid

import pytest
from sqlalchemy import text

from app import demo
from tests import helpers
from tests.api.conftest import BASE, wait_for


async def _migrate(client, **params):
    job = (await client.post(BASE, params={"dry_run": "false", **params})).json()
    return await wait_for(client, job["id"])


async def _rollback(client, job_id, **params):
    params.setdefault("dry_run", "false")
    response = await client.post(f"{BASE}/{job_id}/rollback", params=params)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["kind"] == "rollback" and started["target_job_id"] == job_id
    return await wait_for(client, started["id"])


async def _goal_ids(db, job_id) -> list:
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM treatment_goals WHERE source_job_id = :j ORDER BY id"),
            {"j": job_id},
        )
        return rows.scalars().all()


async def _goals_of(db, job_id) -> int:
    return await _count(
        db, "SELECT count(*) FROM treatment_goals WHERE source_job_id = :j", j=job_id
    )


async def _count(db, sql, **params):
    async with db.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


async def test_rollback_spares_edited_goals_and_other_jobs(client, db, database_url):
    await demo.write(database_url, sessions=400, seed=8)
    job = await _migrate(client, batch_size=30)
    created = job["stats"]["goals_created"]
    app_goals = await _count(db, "SELECT count(*) FROM treatment_goals WHERE source_job_id IS NULL")

    ids = await _goal_ids(db, job["id"])
    async with db.begin() as conn:
        # Each goal changes in one way only, so each half of the rule is tested on its own:
        # a status moved on (updated_at left as inserted) keeps the goal; so does an updated_at
        # bumped with nothing else changed. A category edited without bumping updated_at does
        # not count as a change (the rule relies on the application bumping it).
        edits = {
            ids[0]: "status = 'in_progress'",
            ids[-1]: "updated_at = updated_at + interval '1 second'",
            ids[1]: "category = 'edited, not bumped'",
        }
        for goal_id, change in edits.items():
            await conn.execute(
                text(f"UPDATE treatment_goals SET {change} WHERE id = :id"), {"id": goal_id}
            )
    # a later session and a second migration job: its goal belongs to that job
    patient, therapist = (
        await _count(db, "SELECT patient_id FROM therapy_sessions LIMIT 1"),
        await _count(db, "SELECT therapist_id FROM therapy_sessions LIMIT 1"),
    )
    await helpers.load(db, users=[], sessions=[{
        "id": uuid.uuid4(), "patient_id": patient, "therapist_id": therapist,
        "session_date": helpers.ts(900), "notes": {"action_items": [{"task": "Brand new"}]},
    }])  # fmt: skip
    second = await _migrate(client)
    assert second["stats"]["goals_created"] == 1

    dry = await _rollback(client, job["id"], dry_run="true")
    assert dry["status"] == "succeeded" and dry["dry_run"] is True
    assert dry["stats"] == {"goals_deleted": created - 2, "goals_kept_modified": 2}
    assert await _goals_of(db, job["id"]) == created
    target = (await client.get(f"{BASE}/{job['id']}")).json()
    assert target["rolled_back_by"] is None

    # The second run counted this job's goals as duplicates: rolling back alone is refused
    # unless the admin says a migration will run again afterwards (tests/api/test_verify.py).
    refused = await client.post(f"{BASE}/{job['id']}/rollback", params={"dry_run": "false"})
    assert refused.status_code == 409 and refused.json()["later_job_ids"] == [second["id"]]
    plain = await _rollback(client, job["id"], batch_size=7, keep_later_runs="true")
    assert plain["status"] == "succeeded"
    assert plain["stats"] == {"goals_deleted": created - 2, "goals_kept_modified": 2}
    assert plain["progress"]["goals_total"] == created
    assert await _goal_ids(db, job["id"]) == [ids[0], ids[-1]]
    assert await _goals_of(db, second["id"]) == 1
    assert (
        await _count(db, "SELECT count(*) FROM treatment_goals WHERE source_job_id IS NULL")
        == app_goals
    )
    target = (await client.get(f"{BASE}/{job['id']}")).json()
    assert target["rolled_back_by"] == plain["id"]
    trail = (await client.get(f"{BASE}/{job['id']}/audit")).json()["items"]
    assert [(a["action"], a["details"].get("rollback_job_id")) for a in trail] == [
        ("start", None), ("rollback", dry["id"]), ("rollback", plain["id"]),
    ]  # fmt: skip

    again = await _rollback(client, job["id"], keep_later_runs="true")
    assert again["stats"] == {"goals_deleted": 0, "goals_kept_modified": 2}
    forced = await _rollback(client, job["id"], force="true", keep_later_runs="true")
    assert forced["stats"] == {"goals_deleted": 2, "goals_kept_modified": 0}
    assert await _goals_of(db, job["id"]) == 0
    assert await _goals_of(db, second["id"]) == 1


async def test_rollback_refuses_what_it_cannot_undo(client, database_url, db):
    await demo.write(database_url, sessions=200, seed=3)
    dry = (await client.post(BASE)).json()
    dry = await wait_for(client, dry["id"])
    response = await client.post(f"{BASE}/{dry['id']}/rollback")
    assert response.status_code == 409 and "dry run" in response.json()["detail"]

    real = await _migrate(client)
    rollback = await _rollback(client, real["id"])
    response = await client.post(f"{BASE}/{rollback['id']}/rollback")
    assert response.status_code == 409 and "rollback job" in response.json()["detail"]

    async with helpers.gate_closed(db, refuse=True):  # the job stays active while we ask
        active = (await client.post(BASE, params={"dry_run": "false", "batch_size": 5})).json()
        response = await client.post(f"{BASE}/{active['id']}/rollback")
        assert response.status_code == 409
        response = await client.post(f"{BASE}/{real['id']}/rollback")
        assert response.status_code == 409 and response.json()["active_job_id"] == active["id"]
        await client.post(f"{BASE}/{active['id']}/cancel")
    await wait_for(client, active["id"])
    assert (await client.post(f"{BASE}/{uuid.uuid4()}/rollback")).status_code == 404


async def test_interrupted_rollback_resumes_to_the_same_end(client, db, database_url):
    await demo.write(database_url, sessions=500, seed=6)
    job = await _migrate(client)
    created = job["stats"]["goals_created"]
    # Partition 1 cannot commit a batch: the rollback is cancelled with its goals left.
    async with helpers.gate_closed(db, partition=1, refuse=True):
        response = await client.post(
            f"{BASE}/{job['id']}/rollback", params={"batch_size": 5, "dry_run": "false"}
        )
        rollback = response.json()
        await wait_for(client, rollback["id"], lambda j: j["stats"]["goals_deleted"] > 0)
        await client.post(f"{BASE}/{rollback['id']}/cancel")
        halfway = await wait_for(client, rollback["id"])
    assert halfway["status"] == "cancelled"
    left = await _goals_of(db, job["id"])
    assert 0 < left == created - halfway["stats"]["goals_deleted"]

    await client.post(f"{BASE}/{rollback['id']}/resume")
    done = await wait_for(client, rollback["id"])
    assert done["status"] == "succeeded"
    assert done["stats"] == {"goals_deleted": created, "goals_kept_modified": 0}
    assert await _goals_of(db, job["id"]) == 0
    assert (await client.get(f"{BASE}/{job['id']}")).json()["rolled_back_by"] == rollback["id"]


@pytest.mark.parametrize(
    "change", ["status = 'in_progress'", "updated_at = updated_at + interval '1 second'"]
)
async def test_a_goal_edited_while_the_rollback_runs_is_kept(client, db, database_url, change):
    await demo.write(database_url, sessions=150, seed=11)
    job = await _migrate(client)
    created = job["stats"]["goals_created"]
    edited = (await _goal_ids(db, job["id"]))[created // 2]
    # A clinician's transaction updates the goal and holds its row lock until it commits.
    async with db.connect() as clinician:
        await clinician.execute(
            text(f"UPDATE treatment_goals SET {change} WHERE id = :id"), {"id": edited}
        )
        response = await client.post(
            f"{BASE}/{job['id']}/rollback", params={"batch_size": 1000, "dry_run": "false"}
        )
        rollback = response.json()
        # The rollback's DELETE reached the goal and waits for the clinician's transaction.
        await helpers.until(
            lambda: helpers.waiting_on_lock(db, "transactionid"), what="the DELETE to wait"
        )
        await clinician.commit()
    done = await wait_for(client, rollback["id"])
    # The DELETE re-checked the goal's newest version: changed since migrated, so kept.
    assert done["status"] == "succeeded"
    assert done["stats"] == {"goals_deleted": created - 1, "goals_kept_modified": 1}
    assert await _goal_ids(db, job["id"]) == [edited]
