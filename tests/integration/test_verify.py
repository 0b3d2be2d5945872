"""Verification's own statements on real PostgreSQL, right after a migration.

Verify is run right after a migration, before autovacuum has analyzed treatment_goals: its
statistics still say that no goal has a source_job_id. Its statements must not turn into one
probe per migrated goal on that belief.
"""

import json
import uuid

import asyncpg

from app.jobs import verify
from tests import helpers
from tests.helpers import ts

THERAPIST = uuid.UUID(int=77)
PATIENTS = [uuid.UUID(int=(i + 1) << 120) for i in range(30)]


async def test_duplicate_pairs_probe_once_per_clinicians_goal_on_stale_statistics(
    db, settings, database_url
):
    users = [(p, "patient") for p in PATIENTS] + [(THERAPIST, "therapist")]
    clinicians = [(p, THERAPIST, "Walk daily", "assigned") for p in PATIENTS[:3]]
    await helpers.load(db, users=users, sessions=[], goals=clinicians)
    await helpers.keep_goal_statistics(db)  # taken before the migration
    sessions = [
        {"id": uuid.uuid4(), "patient_id": p, "therapist_id": THERAPIST, "session_date": ts(d),
         "notes": {"action_items": [{"task": f"Task {i} on day {d}"} for i in range(5)]}}
        for p in PATIENTS for d in range(10)
    ]  # fmt: skip
    await helpers.load(db, users=[], sessions=sessions)
    await helpers.run(db, settings, batch_size=500)
    # The clinician typed it again while its batch ran: one pair, as verify should report.
    twin = (sessions[0]["patient_id"], THERAPIST, "Task 0 on day 0", "assigned")
    await helpers.load(db, users=[], sessions=[], goals=[twin])

    conn = await asyncpg.connect(database_url)
    try:
        sql = verify._PAIRS_SQL.replace(":examples", "5")
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        pairs = await conn.fetch(sql)
    finally:
        await conn.close()
    plan = json.loads(explained)[0]["Plan"]
    scans = list(helpers.plan_scans(plan, "treatment_goals"))
    clinicians_goals, goals = len(clinicians) + 1, len(clinicians) + 1 + len(sessions) * 5
    probes = [s["Actual Loops"] for s in scans]
    assert probes and max(probes) <= clinicians_goals, probes  # not one per migrated goal
    read = [(s["Actual Rows"] + s.get("Rows Removed by Filter", 0)) * s["Actual Loops"]
            for s in scans]  # fmt: skip
    assert max(read) <= goals, read  # no scan reads the table more than once
    assert [(r["pairs"], r["patient_id"]) for r in pairs] == [(1, sessions[0]["patient_id"])]
