"""Verify judges the data itself, and a rollback never strands a later run that relied on it.

Expected numbers come from the model of the rules (tests/model.py) fed the database's rows:
the goals a real run would create now are the goals missing, whatever the job table says.
"""

import asyncio
import uuid

from sqlalchemy import text

from app import demo
from app.jobs import runner
from tests import helpers
from tests.api.conftest import BASE, wait_for
from tests.expected import model_outcome, read_rows
from tests.model import migrate


async def _migrate(client, **params):
    job = (await client.post(BASE, params={"dry_run": "false", **params})).json()
    return await wait_for(client, job["id"])


async def _verify(client) -> dict:
    response = await client.get(f"{BASE}/verify")
    assert response.status_code == 200, response.text
    return response.json()


async def _missing_by_model(db) -> tuple[int, int, int]:
    """Goals, sessions and patients a real run would create now, as the model says."""
    rows = await read_rows(db)
    async with db.connect() as conn:
        present = [
            tuple(r)
            for r in await conn.execute(text("SELECT patient_id, description FROM treatment_goals"))
        ]
    goals = migrate(rows.sessions, present).goals
    return len(goals), len({g[2] for g in goals}), len({g[0] for g in goals})


def _assert_missing(verify: dict, expected: tuple[int, int, int]) -> None:
    goals, sessions, patients = expected
    assert goals > 0
    assert verify["all_items_accounted"] is False
    assert (verify["goals_missing"], verify["sessions_missing_goals"]) == (goals, sessions)
    assert verify["patients_missing_goals"] == patients
    assert 0 < len(verify["missing_session_ids"]) <= 5
    assert f"{goals:,} goals are missing" in verify["summary"]
    assert "without --dry-run" in verify["fix"]


async def _a_then_b(client, db, database_url):
    """Job A creates goals; job B, a later real run, finds them and counts duplicates."""
    await demo.write(database_url, sessions=300, seed=61)
    expected = await model_outcome(db)
    a = await _migrate(client, batch_size=40)
    b = await _migrate(client, batch_size=40)
    assert a["stats"]["goals_created"] == len(expected.goals) > 0
    assert b["stats"]["goals_created"] == 0 and b["stats"]["goals_skipped_duplicate"] > 0
    return a, b, expected


async def test_a_rollback_that_would_strand_a_later_run_is_refused(client, db, database_url):
    a, b, _ = await _a_then_b(client, db, database_url)
    refused = await client.post(f"{BASE}/{a['id']}/rollback", params={"dry_run": "false"})
    assert refused.status_code == 409
    body = refused.json()
    assert body["later_job_ids"] == [b["id"]]
    assert f"jobs={a['id']},{b['id']}" in body["detail"] and "keep_later_runs" in body["detail"]
    assert await helpers.job_count(db) == 2  # nothing started
    # A dry run deletes nothing, so it may preview the rollback all the same.
    preview = await client.post(f"{BASE}/{a['id']}/rollback")
    assert preview.status_code == 202


async def test_rolling_back_alone_anyway_leaves_goals_missing_and_verify_says_so(
    client, db, database_url
):
    a, b, expected = await _a_then_b(client, db, database_url)
    assert (await _verify(client))["all_items_accounted"] is True
    rollback = await client.post(
        f"{BASE}/{a['id']}/rollback", params={"dry_run": "false", "keep_later_runs": "true"}
    )
    assert rollback.status_code == 202
    assert (await wait_for(client, rollback.json()["id"]))["status"] == "succeeded"
    assert await helpers.migrated_goals(db) == []

    # The counters of B account for every item; the data says a run would create them all.
    verify = await _verify(client)
    assert verify["last_real_run_id"] == b["id"] and verify["counters_agree"] is True
    _assert_missing(verify, await _missing_by_model(db))
    assert verify["goals_missing"] == len(expected.goals)

    # The way out the refusal named: migrate again.
    again = await _migrate(client)
    assert again["stats"]["goals_created"] == len(expected.goals)
    verify = await _verify(client)
    assert verify["all_items_accounted"] is True and verify["goals_missing"] == 0
    assert verify["fix"] is None and verify["last_real_run_id"] == again["id"]
    assert await helpers.migrated_goals(db) == sorted(expected.goals)


async def test_rolling_back_both_together_is_allowed(client, db, database_url):
    a, b, expected = await _a_then_b(client, db, database_url)
    together = await client.post(
        f"{BASE}/rollback", params={"jobs": f"{a['id']},{b['id']}", "dry_run": "false"}
    )
    assert together.status_code == 202, together.text
    done = await wait_for(client, together.json()["id"])
    assert done["status"] == "succeeded"
    assert done["stats"]["goals_deleted"] == len(expected.goals)
    verify = await _verify(client)
    assert verify["last_real_run_id"] is None  # both runs are rolled back: none is judged
    _assert_missing(verify, await _missing_by_model(db))


async def test_goals_deleted_by_hand_are_missing_whatever_the_counters_say(
    client, db, database_url
):
    a, b, _ = await _a_then_b(client, db, database_url)
    async with db.begin() as conn:
        await conn.execute(text("DELETE FROM treatment_goals WHERE source_job_id IS NOT NULL"))
    verify = await _verify(client)
    _assert_missing(verify, await _missing_by_model(db))
    # The counters' check sees it too, but only for the run it judges.
    assert verify["last_real_run_id"] == b["id"]


async def test_a_resumed_rollback_is_refused_once_a_later_run_relies_on_the_goals(
    client, db, database_url
):
    await demo.write(database_url, sessions=300, seed=62)
    a = await _migrate(client, batch_size=40)
    async with helpers.gate_closed(db, refuse=True):
        # The rollback stops before it is done, then a real run counts A's goals left.
        rollback = await client.post(
            f"{BASE}/{a['id']}/rollback", params={"dry_run": "false", "batch_size": 10}
        )
        assert rollback.status_code == 202
        rollback = rollback.json()
        assert (await client.post(f"{BASE}/{rollback['id']}/cancel")).status_code == 202
    stopped = await wait_for(client, rollback["id"])
    assert stopped["status"] == "cancelled"
    assert stopped["stats"]["goals_deleted"] < a["stats"]["goals_created"]
    b = await _migrate(client)
    assert b["stats"]["goals_skipped_duplicate"] > 0
    refused = await client.post(f"{BASE}/{rollback['id']}/resume")
    assert refused.status_code == 409 and refused.json()["later_job_ids"] == [b["id"]]
    assert (await helpers.get(db, uuid.UUID(rollback["id"])))["status"] == "cancelled"


async def test_a_rollback_cancelled_before_deleting_anything_leaves_its_target_as_it_was(
    client, db, database_url, settings
):
    await demo.write(database_url, sessions=300, seed=63)
    a = await _migrate(client)
    # A real rollback queued and cancelled before it ran: it deleted nothing.
    rollback_id, _ = await helpers.start_job(
        db, settings, kind="rollback", targets=[uuid.UUID(a["id"])], dry_run=False, batch_size=50
    )
    cancelled = await client.post(f"{BASE}/{rollback_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    verify = await _verify(client)
    assert verify["last_real_run_id"] == a["id"] and verify["counters_agree"] is True
    assert verify["all_items_accounted"] is True


async def test_a_target_whose_rollback_never_ran_can_be_resumed(client, db, database_url, settings):
    await demo.write(database_url, sessions=300, seed=64)
    expected = await model_outcome(db)
    async with helpers.gate_closed(db, partition=1, refuse=True):
        job = (
            await client.post(
                BASE,
                params={"dry_run": "false", "batch_size": 20, "pause_ms": 20, "adaptive": "false"},
            )
        ).json()
        await wait_for(client, job["id"], lambda j: j["stats"]["goals_created"] > 0)
        assert (await client.post(f"{BASE}/{job['id']}/cancel")).status_code == 202
    assert (await wait_for(client, job["id"]))["status"] == "cancelled"
    rollback_id, _ = await helpers.start_job(
        db, settings, kind="rollback", targets=[uuid.UUID(job["id"])], dry_run=False, batch_size=5
    )
    assert (await client.post(f"{BASE}/{rollback_id}/cancel")).json()["status"] == "cancelled"

    resumed = await client.post(f"{BASE}/{job['id']}/resume")
    assert resumed.status_code == 202, resumed.text
    assert (await wait_for(client, job["id"]))["status"] == "succeeded"
    assert await helpers.migrated_goals(db) == sorted(expected.goals)


async def test_verify_reports_a_clinicians_goal_written_while_its_batch_ran(client, db, settings):
    patient, therapist = uuid.uuid4(), uuid.uuid4()
    session = {
        "id": uuid.uuid4(), "patient_id": patient, "therapist_id": therapist,
        "session_date": helpers.ts(0), "notes": {"action_items": [{"task": "Walk daily"}]},
    }  # fmt: skip
    await helpers.load(
        db, users=[(patient, "patient"), (therapist, "therapist")], sessions=[session]
    )
    async with helpers.gate_closed(db):
        job_id, token = await helpers.start_job(
            db, settings, dry_run=False, batch_size=10, partition_count=1
        )
        task = asyncio.create_task(runner.run_job(db, settings, job_id=job_id, token=token))
        # The batch has read the goals (none) and inserted its own, uncommitted, at the gate.
        await helpers.at_gate(db, 1)
        # Meanwhile a clinician types the same goal for the same patient, and commits.
        async with db.begin() as conn:
            clinician_goal = (
                await conn.execute(
                    text(
                        "INSERT INTO treatment_goals (patient_id, therapist_id, description, "
                        "status) VALUES (:p, :t, 'Walk daily', 'assigned') RETURNING id"
                    ),
                    {"p": patient, "t": therapist},
                )
            ).scalar_one()
    assert await task == "succeeded"
    async with db.connect() as conn:
        migrated = (
            await conn.execute(
                text("SELECT id FROM treatment_goals WHERE source_job_id = :j"), {"j": job_id}
            )
        ).scalar_one()
    verify = await _verify(client)
    assert verify["duplicate_pairs"] == 1
    assert verify["duplicate_pair_examples"] == [
        {
            "patient_id": str(patient),
            "migrated_goal_id": str(migrated),
            "other_goal_id": str(clinician_goal),
        }
    ]
    assert "same patient and description" in verify["summary"]
    # Every item still has its goal: the pair is for an operator to settle, not a gap.
    assert verify["all_items_accounted"] is True
