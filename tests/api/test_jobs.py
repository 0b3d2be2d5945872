"""The admin API end to end: start, watch, list, issues, preview, cancel, resume, verify."""

import asyncio
import uuid

import pytest
from sqlalchemy import text

from app import demo
from app.jobs import queries, runner, store
from tests import helpers, model
from tests.api.conftest import BASE, TERMINAL, open_client, wait_for
from tests.expected import Rows, from_rows, model_outcome, read_rows

STAT_KEYS = set(model.STATS)


async def test_dry_run_is_the_default_and_predicts_the_real_run(client, database_url, db):
    await demo.write(database_url, sessions=600, seed=5)
    expected = await model_outcome(db)
    response = await client.post(BASE)
    assert response.status_code == 202
    dry = response.json()
    assert dry["dry_run"] is True and dry["kind"] == "migrate"
    assert response.headers["Location"] == f"{BASE}/{dry['id']}"
    dry = await wait_for(client, dry["id"])
    assert dry["status"] == "succeeded"
    assert set(dry["stats"]) == STAT_KEYS
    assert dry["stats"] == expected.stats
    assert dry["progress"]["sessions_processed"] == dry["progress"]["sessions_total"] > 0
    assert dry["progress"]["percent"] == 100.0
    async with db.connect() as conn:
        migrated = "SELECT count(*) FROM treatment_goals WHERE source_job_id IS NOT NULL"
        assert (await conn.execute(text(migrated))).scalar_one() == 0

    preview = (await client.get(f"{BASE}/{dry['id']}/preview", params={"limit": 5})).json()
    # the model's first goals, in processing order (patient, session date, session, item)
    assert [
        (uuid.UUID(g["patient_id"]), uuid.UUID(g["session_id"]), g["description"], g["category"])
        for g in preview["items"]
    ] == [(g[0], g[2], g[3], g[4]) for g in expected.goals[:5]]
    assert set(preview["items"][0]) == {
        "session_id", "patient_id", "description", "category", "created_at",
    }  # fmt: skip

    real = (await client.post(BASE, params={"dry_run": "false", "batch_size": 50})).json()
    real = await wait_for(client, real["id"])
    assert real["status"] == "succeeded" and real["dry_run"] is False
    assert real["stats"] == dry["stats"]
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
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


def _named(response) -> list[str]:
    """The parameters a 422 names, as "where.name"."""
    assert response.status_code == 422, response.text
    return [".".join(map(str, e["loc"])) for e in response.json()["detail"]]


async def test_bad_input_gets_a_422_that_names_the_parameter_and_starts_nothing(
    client, db, settings
):
    for params, named in (
        ({"batch_size": 0}, "query.batch_size"), ({"batch_size": 10001}, "query.batch_size"),
        ({"pause_ms": -1}, "query.pause_ms"), ({"pause_ms": 60001}, "query.pause_ms"),
        ({"dry_run": "perhaps"}, "query.dry_run"), ({"max_errors": -1}, "query.max_errors"),
        ({"batch_size": "ten"}, "query.batch_size"),
    ):  # fmt: skip
        assert _named(await client.post(BASE, params=params)) == [named], params
    real = await helpers.run(db, settings)
    for params, named in (
        ({"batch_size": 0}, "query.batch_size"), ({"force": "sometimes"}, "query.force"),
        ({"dry_run": "x"}, "query.dry_run"),
    ):  # fmt: skip
        response = await client.post(f"{BASE}/{real['id']}/rollback", params=params)
        assert _named(response) == [named], params
    assert await helpers.job_count(db) == 1  # only the migration run above

    assert _named(await client.get(f"{BASE}/not-a-uuid")) == ["path.job_id"]
    assert _named(await client.post(f"{BASE}/not-a-uuid/cancel")) == ["path.job_id"]
    assert _named(await client.post(f"{BASE}/not-a-uuid/rollback")) == ["path.job_id"]
    issues = await client.get(f"{BASE}/{real['id']}/issues", params={"kind": "x"})
    assert _named(issues) == ["query.kind"]
    assert _named(await client.get(BASE, params={"limit": 0})) == ["query.limit"]
    assert _named(await client.get(BASE, params={"offset": -1})) == ["query.offset"]
    assert await helpers.job_count(db) == 1

    missing = await client.get(f"{BASE}/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json() == {"detail": "job not found"}
    for path in ("issues", "preview", "audit"):
        assert (await client.get(f"{BASE}/{uuid.uuid4()}/{path}")).status_code == 404
    for action in ("cancel", "resume", "rollback"):
        assert (await client.post(f"{BASE}/{uuid.uuid4()}/{action}")).status_code == 404
    assert await helpers.job_count(db) == 1


async def test_concurrent_starts_admit_exactly_one(client, database_url, db):
    await demo.write(database_url, sessions=300, seed=2)
    # The winner cannot finish before the others ask; refuse mode, so the cancel below never
    # waits on a batch's lock on the job row.
    async with helpers.gate_closed(db, refuse=True):
        responses = await asyncio.gather(
            *(client.post(BASE, params={"batch_size": 20}) for _ in range(6))
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
        assert await helpers.job_count(db) == 1
        await client.post(f"{BASE}/{winner['id']}/cancel")
    assert (await wait_for(client, winner["id"]))["status"] == "cancelled"


async def test_two_app_instances_share_one_guard(settings, database_url, db):
    await demo.write(database_url, sessions=300, seed=2)
    first, second = await open_client(settings), await open_client(settings)
    try:
        async with helpers.gate_closed(db, refuse=True):
            a, b = await asyncio.gather(
                first[2].post(BASE, params={"batch_size": 20}),
                second[2].post(BASE, params={"batch_size": 20}),
            )
            assert sorted([a.status_code, b.status_code]) == [202, 409]
            winner = a if a.status_code == 202 else b
            # the other instance answers for the job it did not start
            job_id = winner.json()["id"]
            other = second[2] if winner is a else first[2]
            seen = (await other.get(f"{BASE}/{job_id}")).json()
            assert seen["status"] in {"queued", "running"}
            cancelled = await other.post(f"{BASE}/{job_id}/cancel")
            assert cancelled.status_code == 202
        job = await wait_for(other, job_id)
        assert job["status"] == "cancelled"
    finally:
        for _app, lifespan, client in (first, second):
            await client.aclose()
            await lifespan.__aexit__(None, None, None)


async def test_cancel_then_resume_equals_an_uninterrupted_run(client, db, database_url):
    await demo.write(database_url, sessions=800, seed=9)
    expected = await model_outcome(db)
    # Partition 1 cannot commit a batch: the job is cancelled with all of its work left.
    async with helpers.gate_closed(db, partition=1, refuse=True):
        job = (await client.post(BASE, params={"dry_run": "false", "batch_size": 20})).json()
        await wait_for(client, job["id"], lambda j: j["progress"]["sessions_processed"] > 0)
        response = await client.post(f"{BASE}/{job['id']}/cancel")
        # The answer shows the job as it is once the cancel is recorded: a run waiting out a
        # retry wakes on the cancel at once, so it may already have stopped.
        assert response.status_code == 202
        assert response.json()["status"] in {"cancelling", "cancelled"}
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

    assert done["stats"] == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)

    actions = [a["action"] for a in (await client.get(f"{BASE}/{job['id']}/audit")).json()["items"]]
    assert actions == ["start", "cancel", "cancelled", "resume"]


def _spread_patients(count: int) -> list[uuid.UUID]:
    """Patients in uuid order over the whole space: with 2 partitions, half in each."""
    return [uuid.UUID(int=(i + 1) * ((1 << 128) // (count + 1))) for i in range(count)]


@pytest.mark.parametrize("partition_count", [1, 2])
async def test_max_errors_fails_the_job_and_resume_goes_on_with_a_fresh_allowance(
    settings, db, partition_count
):
    settings = settings.model_copy(update={"job_partitions": partition_count})
    patients, therapist = _spread_patients(6), uuid.uuid4()
    sessions = [
        {"id": uuid.uuid4(), "patient_id": p, "therapist_id": therapist,
         "session_date": helpers.ts(d), "notes": {"action_items": [{"task": f"Task {n} {d}"}]}}
        for n, p in enumerate(patients) for d in range(2)
    ]  # fmt: skip
    users = [(p, "patient") for p in patients] + [(therapist, "therapist")]
    await helpers.load(db, users=users, sessions=sessions)
    # One failing session in each of patients 1, 2 and 4: batches of their own (batch_size=1
    # makes every patient a batch), and with two partitions, on both sides.
    failing = {sessions[2 * n + 1]["id"] for n in (1, 2, 4)}
    await helpers.fail_goal_inserts_for(db, failing)
    rows = await read_rows(db)
    expected = from_rows(rows, fail_sessions=failing)

    app, lifespan, client = await open_client(settings)
    try:
        started = await client.post(
            BASE, params={"dry_run": "false", "max_errors": 1, "batch_size": 1, "adaptive": "false"}
        )
        failed = await wait_for(client, started.json()["id"])
        assert failed["status"] == "failed" and "max_errors=1" in failed["error"]
        assert failed["stats"]["errors"] >= 2
        if partition_count == 1:
            # It stopped at the boundary after patient 2, the second failure: patients 0-2.
            first_three = {s["id"] for s in sessions[:6]}
            prefix = from_rows(
                Rows([s for s in rows.sessions if s["id"] in first_three], rows.existing),
                fail_sessions=failing,
            )
            assert failed["stats"]["sessions_processed"] == 6
            assert failed["stats"]["errors"] == 2
            assert await helpers.migrated_goals(db) == helpers.model_goals(prefix)

        # The trigger stays: patient 4's session fails again in the resumed run. That is one
        # failure, within a fresh allowance of 1 (the first run's 2 do not count against it).
        assert (await client.post(f"{BASE}/{failed['id']}/resume")).status_code == 202
        done = await wait_for(client, failed["id"])
        assert done["status"] == "succeeded", done["error"]
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
        assert done["stats"]["errors"] == 3 and done["stats"]["goals_created"] == 9
        trail = (await client.get(f"{BASE}/{failed['id']}/audit")).json()["items"]
        assert [a["action"] for a in trail] == ["start", "failed", "resume"]
        assert done["stats"] == expected.stats
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_a_job_whose_process_is_gone_is_interrupted_and_resumes(
    client, db, settings, database_url
):
    await demo.write(database_url, sessions=400, seed=4)
    expected = await model_outcome(db)
    # A job claimed by a "process" that then vanished: a run token nobody heartbeats.
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=25)
    async with db.begin() as conn:
        await store.claim(conn, job_id=job_id, token=token)
        await conn.execute(
            text("UPDATE migration_jobs SET heartbeat_at = now() - interval '31 seconds'")
        )
    job = (await client.get(f"{BASE}/{job_id}")).json()
    assert job["status"] == "interrupted" and "no heartbeat" in job["error"]
    assert (await client.post(f"{BASE}/{job_id}/resume")).status_code == 202
    done = await wait_for(client, job_id)
    assert done["status"] == "succeeded"
    assert done["stats"] == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
    actions = [a["action"] for a in (await client.get(f"{BASE}/{job_id}/audit")).json()["items"]]
    assert actions == ["start", "interrupted", "resume"]


async def test_cancelling_a_queued_job_stops_it_at_once(client, db, settings):
    p, t = uuid.uuid4(), uuid.uuid4()
    await helpers.load(db, users=[(p, "patient"), (t, "therapist")], sessions=[
        {"id": uuid.uuid4(), "patient_id": p, "therapist_id": t, "session_date": helpers.ts(0),
         "notes": {"action_items": [{"task": "Walk"}]}},
    ])  # fmt: skip
    expected = await model_outcome(db)
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=10)
    response = await client.post(f"{BASE}/{job_id}/cancel")
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert job["started_at"] is None and job["progress"]["sessions_processed"] == 0
    # Nothing runs it any more: the run it was queued for finds it is not its job now.
    assert await runner.run_job(db, settings, job_id=job_id, token=token) is None
    assert (await client.get(f"{BASE}/{job_id}")).json()["status"] == "cancelled"
    assert await helpers.migrated_goals(db) == []
    # It holds no guard: a new job may start, and this one can still be resumed later.
    other = await client.post(BASE)
    assert other.status_code == 202
    await wait_for(client, other.json()["id"])
    assert (await client.post(f"{BASE}/{job_id}/resume")).status_code == 202
    done = await wait_for(client, job_id)
    assert done["status"] == "succeeded"
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
    trail = (await client.get(f"{BASE}/{job_id}/audit")).json()["items"]
    assert [a["action"] for a in trail] == ["start", "cancel", "resume"]


async def test_rate_and_eta_only_while_running(client, db, settings, database_url):
    await demo.write(database_url, sessions=300, seed=3)
    queued_id, _ = await helpers.start_job(db, settings, dry_run=True, batch_size=10)
    queued = (await client.get(f"{BASE}/{queued_id}")).json()
    assert queued["status"] == "queued"
    assert queued["progress"]["rate_per_second"] is None is queued["progress"]["eta_seconds"]
    await client.post(f"{BASE}/{queued_id}/cancel")

    # Partition 1 is held at its first batch while partition 0 runs: running, with progress.
    async with helpers.gate_closed(db, partition=1):
        job = (await client.post(BASE, params={"batch_size": 10})).json()
        running = await wait_for(client, job["id"], lambda j: j["progress"]["sessions_processed"])
        assert running["status"] == "running"
        assert running["progress"]["rate_per_second"] > 0
        assert running["progress"]["eta_seconds"] >= 0
    ended = await wait_for(client, job["id"])
    assert ended["status"] == "succeeded"
    for finished in (ended, (await client.get(f"{BASE}/{queued_id}")).json()):
        assert finished["status"] in {"succeeded", "cancelled"}
        assert finished["progress"]["rate_per_second"] is None
        assert finished["progress"]["eta_seconds"] is None


async def test_stale_jobs_are_marked_interrupted_at_start_up(settings, db, database_url):
    await demo.write(database_url, sessions=50, seed=1)
    stale_id, token = await helpers.start_job(db, settings, dry_run=True, batch_size=10)
    async with db.begin() as conn:
        await store.claim(conn, job_id=stale_id, token=token)
        await conn.execute(
            text("UPDATE migration_jobs SET heartbeat_at = now() - interval '31 seconds'")
        )
    app, lifespan, client = await open_client(settings)  # start-up, and no request yet
    try:
        job = await helpers.get(db, stale_id)
        assert job["status"] == "interrupted" and "no heartbeat" in job["error"]
        async with db.connect() as conn:
            trail = await queries.list_audit(conn, job_id=stale_id)
        assert [(a["actor"], a["action"]) for a in trail] == [
            ("test", "start"), ("system", "interrupted"),
        ]  # fmt: skip
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_verify_says_when_not_every_item_is_accounted_for(client, db, settings):
    p, t = uuid.uuid4(), uuid.uuid4()

    def session(day, items):
        return {"id": uuid.uuid4(), "patient_id": p, "therapist_id": t,
                "session_date": helpers.ts(day), "notes": {"action_items": items}}  # fmt: skip

    first = [session(0, [{"task": "Walk"}, {"task": "Walk"}, 7]), session(1, "odd"),
             session(2, [])]  # fmt: skip
    await helpers.load(db, users=[(p, "patient"), (t, "therapist")], sessions=first)

    async def verify():
        numbers = (await client.get(f"{BASE}/verify")).json()
        rows = await read_rows(db)
        assert numbers["total_action_items"] == model.item_count(rows.sessions)
        assert numbers["sessions_with_action_items"] == len(model.candidates(rows.sessions))
        return numbers

    nothing_yet = await verify()
    assert nothing_yet["all_items_accounted"] is False
    assert nothing_yet["last_real_run_id"] is None and nothing_yet["total_action_items"] == 4
    await helpers.run(db, settings, dry_run=True)
    assert (await verify())["last_real_run_id"] is None  # a dry run accounts for nothing

    clean = await helpers.run(db, settings)
    after = await verify()
    assert after["last_real_run_id"] == str(clean["id"]) and after["all_items_accounted"] is True
    assert after["last_real_run_accounted"] == 4

    # A session that arrives after the run: its item is in JSONB but not in any run.
    await helpers.load(db, users=[], sessions=[session(3, [{"task": "Read"}])])
    later = await verify()
    assert later["all_items_accounted"] is False and later["total_action_items"] == 5

    # A run in which a session failed does not account for that session's items.
    failing = session(4, [{"task": "Swim"}])
    await helpers.load(db, users=[], sessions=[failing])
    await helpers.fail_goal_inserts_for(db, [failing["id"]])
    with_errors = await helpers.run(db, settings)
    assert with_errors["status"] == "succeeded" and with_errors["errors"] == 1
    numbers = await verify()
    assert numbers["last_real_run_id"] == str(with_errors["id"])
    assert numbers["all_items_accounted"] is False


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
