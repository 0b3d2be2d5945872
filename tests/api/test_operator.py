"""What an on-call operator relies on: explicit writes, nothing silently ignored, honest state."""

import logging
import uuid

from sqlalchemy import text

from app import demo
from app.jobs import store
from tests import helpers
from tests.api.conftest import BASE, wait_for
from tests.expected import model_outcome


async def _jobs(db) -> int:
    async with db.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one()


async def _migrate(client, **params) -> dict:
    job = (await client.post(BASE, params={"dry_run": "false", **params})).json()
    return await wait_for(client, job["id"])


async def test_a_rollback_is_a_dry_run_unless_asked_to_write(client, db, database_url):
    await demo.write(database_url, sessions=150, seed=41)
    job = await _migrate(client)
    response = await client.post(f"{BASE}/{job['id']}/rollback")
    assert response.status_code == 202 and response.json()["dry_run"] is True
    preview = await wait_for(client, response.json()["id"])
    assert preview["stats"]["goals_deleted"] == job["stats"]["goals_created"]
    assert len(await helpers.migrated_goals(db)) == job["stats"]["goals_created"]


async def test_unknown_parameters_and_bodies_are_refused_by_name(client, db, database_url):
    await demo.write(database_url, sessions=50, seed=42)
    typo = await client.post(BASE, params={"dryrun": "false"})
    assert typo.status_code == 422
    assert typo.json()["detail"][0]["loc"] == ["query", "dryrun"]
    assert "dry_run" in typo.json()["detail"][0]["msg"]  # it says what the endpoint takes
    body = await client.post(BASE, json={"dry_run": False})
    assert body.status_code == 422 and body.json()["detail"][0]["loc"] == ["body"]
    listing = await client.get(BASE, params={"limt": 5})
    assert listing.status_code == 422 and listing.json()["detail"][0]["loc"] == ["query", "limt"]
    assert await _jobs(db) == 0  # nothing was started by a refused request


async def test_resume_takes_new_settings_and_records_them(client, db, database_url):
    await demo.write(database_url, sessions=400, seed=43)
    job = (
        await client.post(
            BASE,
            params={"dry_run": "false", "batch_size": 10, "pause_ms": 200, "adaptive": "false"},
        )
    ).json()
    await wait_for(client, job["id"], lambda j: j["stats"]["goals_created"] > 0)
    await client.post(f"{BASE}/{job['id']}/cancel")
    await wait_for(client, job["id"])

    refused = await client.post(f"{BASE}/{job['id']}/resume", params={"batch_size": 0})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["query", "batch_size"]
    resumed = await client.post(
        f"{BASE}/{job['id']}/resume",
        params={"pause_ms": 0, "max_errors": 5, "batch_size": 5000},
    )
    assert resumed.status_code == 202
    assert (resumed.json()["pause_ms"], resumed.json()["max_errors"]) == (0, 5)
    assert resumed.json()["batch_size"] == 5000
    done = await wait_for(client, job["id"])
    assert done["status"] == "succeeded"
    audit = (await client.get(f"{BASE}/{job['id']}/audit")).json()["items"]
    resume = next(a for a in audit if a["action"] == "resume")
    assert resume["details"] == {"pause_ms": 0, "max_errors": 5, "batch_size": 5000}


async def test_rollbacks_honour_pause_ms_and_count_goals_by_name(client, database_url):
    await demo.write(database_url, sessions=150, seed=44)
    job = await _migrate(client)
    response = await client.post(
        f"{BASE}/{job['id']}/rollback", params={"dry_run": "false", "pause_ms": 500}
    )
    rollback = response.json()
    assert rollback["pause_ms"] == 500
    assert set(rollback["progress"]) >= {"goals_total", "goals_processed"}
    assert "sessions_total" not in rollback["progress"]
    done = await wait_for(client, rollback["id"])
    assert done["progress"]["goals_processed"] == done["progress"]["goals_total"]
    assert done["progress"]["rate_per_second"] is None  # not running any more

    target = (await client.get(f"{BASE}/{job['id']}")).json()
    assert target["rolled_back"] is True and target["status"] == "succeeded"
    listed = (await client.get(BASE, params={"kind": "migrate"})).json()
    assert [j["rolled_back"] for j in listed["items"]] == [True]


async def test_a_job_shows_how_old_its_heartbeat_is_and_when_it_is_released(client, db, settings):
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=10)
    async with db.begin() as conn:
        await store.claim(conn, job_id=job_id, token=token)
        await conn.execute(
            text("UPDATE migration_jobs SET heartbeat_at = now() - interval '20 seconds'")
        )
    job = (await client.get(f"{BASE}/{job_id}")).json()
    assert job["status"] == "running"
    assert 19 <= job["heartbeat_age_seconds"] < 25
    assert 5 < job["released_in_seconds"] <= 11  # stale after 30 s

    conflict = await client.post(BASE)
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["active_job_id"] == str(job_id) and body["active_job_status"] == "running"
    assert 5 < body["released_in_seconds"] <= 11
    assert "released in" in body["detail"]


async def test_job_lists_filter_by_status_and_kind_and_count_them(client, database_url):
    await demo.write(database_url, sessions=100, seed=45)
    dry = (await client.post(BASE)).json()
    await wait_for(client, dry["id"])
    real = await _migrate(client)
    rollback = (await client.post(f"{BASE}/{real['id']}/rollback")).json()
    await wait_for(client, rollback["id"])

    everything = (await client.get(BASE, params={"limit": 1})).json()
    assert everything["total"] == 3 and len(everything["items"]) == 1
    migrations = (await client.get(BASE, params={"kind": "migrate"})).json()
    assert migrations["total"] == 2 and {j["id"] for j in migrations["items"]} == {
        dry["id"],
        real["id"],
    }
    rollbacks = (await client.get(BASE, params={"kind": "rollback", "status": "succeeded"})).json()
    assert [j["id"] for j in rollbacks["items"]] == [rollback["id"]]
    bad = await client.get(BASE, params={"status": "finished"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "status"]


async def test_one_rollback_takes_back_several_jobs(client, db, database_url):
    await demo.write(database_url, sessions=200, seed=46)
    first = await _migrate(client)
    # the same migration finished by a second job, after more sessions arrived
    patient, therapist = await _any_pair(db)
    await helpers.load(
        db,
        users=[],
        sessions=[{
            "id": uuid.uuid4(), "patient_id": patient, "therapist_id": therapist,
            "session_date": helpers.ts(800), "notes": {"action_items": [{"task": "New one"}]},
        }],
    )  # fmt: skip
    second = await _migrate(client)
    assert second["stats"]["goals_created"] == 1
    created = first["stats"]["goals_created"] + 1

    bad = await client.post(f"{BASE}/rollback", params={"jobs": f"{first['id']},nope"})
    assert bad.status_code == 422 and "nope" in bad.json()["detail"][0]["msg"]
    response = await client.post(
        f"{BASE}/rollback", params={"jobs": f"{first['id']},{second['id']}", "dry_run": "false"}
    )
    assert response.status_code == 202, response.text
    done = await wait_for(client, response.json()["id"])
    assert done["target_job_ids"] == [first["id"], second["id"]]
    assert done["stats"] == {"goals_deleted": created, "goals_kept_modified": 0}
    assert await helpers.migrated_goals(db) == []
    for job in (first, second):
        assert (await client.get(f"{BASE}/{job['id']}")).json()["rolled_back_by"] == done["id"]
        assert (await client.post(f"{BASE}/{job['id']}/resume")).status_code == 409


async def _any_pair(db):
    async with db.connect() as conn:
        row = await conn.execute(text("SELECT patient_id, therapist_id FROM therapy_sessions"))
        return tuple(row.first())


async def test_issues_are_counted_per_reason(client, database_url):
    await demo.write(database_url, sessions=300, seed=47)
    job = await _migrate(client)
    issues = (await client.get(f"{BASE}/{job['id']}/issues", params={"limit": 1})).json()
    assert (
        sum(issues["counts"].values()) == issues["total"] == job["stats"]["goals_skipped_invalid"]
    )
    assert set(issues["counts"]) <= {
        "item is not an object", "missing task", "details is not a string",
        "category is not a string", "action_items is not an array",
    }  # fmt: skip


async def test_logs_name_a_few_failed_sessions_and_the_count(db, settings, database_url):
    await demo.write(database_url, sessions=100, seed=48)
    failing = await helpers.sessions_with_items(db, 40)
    await helpers.fail_goal_inserts_for(db, failing)
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("app.jobs").addHandler(handler)
    try:
        job = await helpers.run(db, settings, batch_size=1000, partition_count=1)
    finally:
        logging.getLogger("app.jobs").removeHandler(handler)
    assert job["errors"] > 5
    line = next(x for x in lines if "failed and were rolled back" in x)
    assert sum(str(s) in line for s in failing) == 5
    assert f"and {job['errors'] - 5} more" in line and len(line) < 400


async def test_a_rollback_shares_its_goals_between_partitions(client, db, database_url):
    await demo.write(database_url, sessions=400, seed=49)
    job = await _migrate(client, batch_size=50)
    rollback = (
        await client.post(f"{BASE}/{job['id']}/rollback", params={"dry_run": "false"})
    ).json()
    await wait_for(client, rollback["id"])
    async with db.connect() as conn:
        shares = (
            (
                await conn.execute(
                    text(
                        "SELECT goals_deleted FROM migration_job_partitions WHERE job_id = :j "
                        "ORDER BY partition"
                    ),
                    {"j": rollback["id"]},
                )
            )
            .scalars()
            .all()
        )
    assert sum(shares) == job["stats"]["goals_created"]
    # time-ordered goal ids sit in a narrow band: split over it, each partition gets a share
    assert min(shares) > sum(shares) // 10


async def test_the_dry_run_says_how_many_patients_get_goals(client, db, database_url):
    await demo.write(database_url, sessions=300, seed=50)
    expected = await model_outcome(db)
    dry = (await client.post(BASE, params={"batch_size": 40})).json()
    dry = await wait_for(client, dry["id"])
    real = await _migrate(client, batch_size=25)
    assert dry["patients_with_goals_created"] == expected.patients_with_goals_created > 0
    assert real["patients_with_goals_created"] == expected.patients_with_goals_created
    rollback = (await client.post(f"{BASE}/{real['id']}/rollback")).json()
    assert rollback["patients_with_goals_created"] is None
