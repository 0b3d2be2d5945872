"""Rollback's batch statement on real PostgreSQL: each batch reads its own goals, whatever plan.

The service sends its statements as prepared statements, and after a few executions PostgreSQL may
keep a generic plan, chosen on statistics that, right after a migration, still describe a table
without migrated goals (autovacuum has not analyzed it yet). A batch must still read only its own
goals (at most batch_size per target job), or a rollback of N goals reads on the order of
N²/batch_size index entries.
"""

import json
import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from app.jobs import rollback
from tests import helpers
from tests.helpers import ts

THERAPIST = uuid.UUID(int=77)
PATIENTS = [uuid.UUID(int=(i + 1) << 120) for i in range(30)]
BATCH = 100


def _literal(value) -> str:
    if isinstance(value, list):
        return "ARRAY[" + ",".join(_literal(v) for v in value) + "]::uuid[]"
    if isinstance(value, uuid.UUID):
        return f"'{value}'::uuid"
    return str(value).lower() if isinstance(value, bool) else str(int(value))


@pytest.mark.parametrize("targets", [1, 2])
async def test_a_batch_reads_only_its_goals_under_a_generic_plan_on_stale_statistics(
    db, settings, database_url, targets
):
    sessions = [
        {"id": uuid.uuid4(), "patient_id": p, "therapist_id": THERAPIST, "session_date": ts(d),
         "notes": {"action_items": [{"task": f"Task {i} on day {d}"} for i in range(5)]}}
        for p in PATIENTS for d in range(10)
    ]  # fmt: skip
    await helpers.load(db, users=[(p, "patient") for p in PATIENTS] + [(THERAPIST, "therapist")],
                       sessions=[])  # fmt: skip
    await helpers.keep_goal_statistics(db)  # taken before the migration
    jobs = []
    for part in range(targets):  # each target job migrates its share of the sessions
        await helpers.load(db, users=[], sessions=sessions[part::targets])
        jobs.append((await helpers.run(db, settings, batch_size=500))["id"])
    async with db.connect() as c:
        rows = await c.execute(
            text("SELECT id FROM treatment_goals WHERE source_job_id = ANY(:t) ORDER BY id"),
            {"t": jobs},
        )
        goals = rows.scalars().all()
    assert len(goals) == len(sessions) * 5 > 10 * BATCH

    compiled = text(rollback._REAL_SQL).compile(dialect=asyncpg_dialect.dialect())
    params = {"targets": jobs, "lo": goals[0], "end": uuid.UUID(int=(1 << 128) - 1),
              "batch_size": BATCH, "force": False}  # fmt: skip
    args = ", ".join(_literal(params[name]) for name in compiled.positiontup)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE batch AS {compiled}")
        transaction = conn.transaction()
        await transaction.start()
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE batch({args})")
        await transaction.rollback()
    finally:
        await conn.close()
    plan = json.loads(explained)[0]["Plan"]
    scans = helpers.plan_scans(plan, "treatment_goals")
    read = [s["Actual Rows"] * s["Actual Loops"] for s in scans]
    assert read and max(read) <= BATCH * targets, read  # at most a batch per target job
