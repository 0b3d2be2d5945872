"""Verification: does treatment_goals hold every action item? Judged on the data itself.

The verdict comes from the engine's own rules, run read-only over every session the way a dry
run walks them (partitions side by side, whole patients per batch, a short transaction each):
every item is accounted for exactly when a real run now would create no goal. Whatever took
goals away (a rollback of a run a later run relied on, an interrupted rollback resumed, a hand
DELETE) shows up as goals missing, with the sessions and patients they belong to.

Two cheaper checks are reported beside it:
- the counters of the newest real run that succeeded and was never rolled back (created +
  duplicate + invalid + items in failed sessions against the items in JSONB, and its goals
  still present), as the guide's verification queries compare them;
- pairs of a migrated goal and a clinician's goal with the same patient and description. The
  duplicate rule reads committed goals (READ COMMITTED), so a clinician typing the identical
  goal while its batch runs can leave such a pair; only an operator can settle which one stays
  (docs/RELIABILITY.md).
"""

import asyncio
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.jobs import engine, partitions, queries
from app.models.therapy_session import CANDIDATE_PREDICATE

# Sessions per read-only batch: larger than a job's default, as nothing is written or locked
# (at 200k sessions 5,000 took 1.5 s where 1,000 took 2.7 s; its sort stays inside work_mem).
BATCH_SESSIONS = 5000
EXAMPLES = 5
FIX = (
    "python scripts/migrate_goals_from_jsonb.py --dry-run, then without --dry-run "
    "(or POST /admin/migrations/goals?dry_run=false) creates them"
)

# The guide sums jsonb_array_length(), which fails on a non-array action_items; the engine
# counts such a value as one (invalid) item, and so does this.
_NUMBERS_SQL = f"""
SELECT
    (SELECT count(*) FROM therapy_sessions WHERE {CANDIDATE_PREDICATE})
        AS sessions_with_action_items,
    (SELECT coalesce(sum(CASE WHEN jsonb_typeof(extracted_notes -> 'action_items') = 'array'
                              THEN jsonb_array_length(extracted_notes -> 'action_items')
                              ELSE 1 END), 0)
     FROM therapy_sessions WHERE {CANDIDATE_PREDICATE}) AS total_action_items,
    (SELECT count(*) FROM treatment_goals) AS goals_total,
    (SELECT count(*) FROM treatment_goals WHERE source_job_id IS NOT NULL) AS goals_from_migrations
"""

# Each clinician's goal probes the (patient_id, md5(description)) index for a migrated twin.
# Right after a migration the statistics still say that no goal has a source_job_id, so nothing
# here lets the planner go by it: OFFSET 0 keeps the LATERAL from being flattened into a join it
# would turn around (one probe per migrated goal: 0.53 s at 200k sessions, against 0.03 s), and
# the probe leaves source_job_id to the outer query, or a plan read every migrated goal through
# the source_job_id index once per clinician's goal (51 s).
_PAIRS_SQL = """
SELECT count(*) OVER () AS pairs, m.patient_id, m.id AS migrated_goal_id, c.id AS other_goal_id
FROM treatment_goals AS c
CROSS JOIN LATERAL (
    SELECT t.patient_id, t.id, t.source_job_id
    FROM treatment_goals AS t
    WHERE t.patient_id = c.patient_id
      AND md5(t.description) = md5(c.description)
      AND t.description = c.description
    OFFSET 0
) AS m
WHERE c.source_job_id IS NULL AND m.source_job_id IS NOT NULL
ORDER BY m.patient_id, m.id, c.id
LIMIT :examples
"""


async def missing_goals(
    db: AsyncEngine, *, partition_count: int, batch_size: int = BATCH_SESSIONS
) -> engine.Missing:
    """The goals a real run would create now, over every candidate session; writes nothing."""

    async def walk(start: uuid.UUID, end: uuid.UUID) -> engine.Missing:
        found = engine.Missing()
        lo: uuid.UUID | None = start
        async with db.connect() as conn:
            while lo is not None:
                # One short transaction per batch: no snapshot held across the whole table.
                async with conn.begin():
                    hi = await engine.next_bound(conn, lo=lo, end=end, batch_size=batch_size)
                    if hi is None:
                        break
                    found.add(await engine.missing_goals(conn, lo=lo, hi=hi), EXAMPLES)
                lo = partitions.after(hi) if hi != end else None
        return found

    total = engine.Missing()
    for part in await asyncio.gather(*(walk(s, e) for s, e in partitions.ranges(partition_count))):
        total.add(part, EXAMPLES)
    return total


async def duplicate_pairs(conn: AsyncConnection) -> tuple[int, list[dict[str, Any]]]:
    """How many (migrated goal, clinician's goal) pairs share patient and description; a few."""
    rows = (await conn.execute(text(_PAIRS_SQL), {"examples": EXAMPLES})).mappings().all()
    examples = [{k: v for k, v in r.items() if k != "pairs"} for r in rows]
    return (rows[0]["pairs"] if rows else 0), examples


async def report(db: AsyncEngine, *, partition_count: int) -> dict[str, Any]:
    """What the API's /verify and the CLI's --verify show, with the verdict in sentences."""
    missing = await missing_goals(db, partition_count=partition_count)
    async with db.connect() as conn:
        numbers = dict((await conn.execute(text(_NUMBERS_SQL))).mappings().one())
        run = await queries.judged_real_run(conn)
        pairs, pair_examples = await duplicate_pairs(conn)
    counter_problems = _counter_problems(numbers, run)
    result = {
        **numbers,
        "all_items_accounted": missing.goals == 0,
        "goals_missing": missing.goals,
        "sessions_missing_goals": missing.sessions,
        "patients_missing_goals": missing.patients,
        "missing_session_ids": missing.examples,
        "fix": FIX if missing.goals else None,
        "duplicate_pairs": pairs,
        "duplicate_pair_examples": pair_examples,
        "last_real_run_id": run["id"] if run else None,
        "last_real_run_accounted": run["accounted"] if run else None,
        "last_real_run_items_in_failed_sessions": run["items_in_failed_sessions"] if run else None,
        "last_real_run_goals_missing": (run["goals_created"] - run["goals_present"])
        if run
        else None,
        "counters_agree": not counter_problems if run else None,
    }
    result["summary"] = " ".join(
        [_data_sentence(numbers, missing), *counter_problems, *_pairs_sentence(pairs)]
    )
    return result


def _data_sentence(numbers: dict[str, Any], missing: engine.Missing) -> str:
    items, sessions = numbers["total_action_items"], numbers["sessions_with_action_items"]
    if missing.goals == 0:
        return (
            f"Every action item is accounted for: a real run now would create no goal "
            f"({items:,} items in {sessions:,} sessions are goals, duplicates or invalid)."
        )
    shown = ", ".join(map(str, missing.examples))
    return (
        f"{missing.goals:,} goals are missing for {missing.sessions:,} sessions of "
        f"{missing.patients:,} patients (for example session {shown}): a real run now would "
        f"create them: {FIX}."
    )


def _pairs_sentence(pairs: int) -> list[str]:
    if not pairs:
        return []
    return [
        f"{pairs:,} migrated goals have a clinician's goal with the same patient and "
        "description beside them (written while their batch ran): see duplicate_pair_examples "
        "and keep one of each pair."
    ]


def _counter_problems(numbers: dict[str, Any], run: Any) -> list[str]:
    """Where the judged run's counters disagree with the data, in plain sentences."""
    if run is None:
        return ["No real migration has succeeded (rolled-back runs are not judged)."]
    problems = []
    total, accounted = numbers["total_action_items"], run["accounted"]
    if accounted != total:
        problems.append(
            f"Job {run['id']} accounts for {accounted:,} action items but JSONB now holds "
            f"{total:,} (the data changed since it ran)."
        )
    if run["errors"]:
        problems.append(
            f"{run['errors']:,} sessions of job {run['id']} failed and were rolled back "
            f"({run['items_in_failed_sessions']:,} items): see its issues, fix them, migrate again."
        )
    missing = run["goals_created"] - run["goals_present"]
    if missing > 0:
        problems.append(
            f"{missing:,} goals that job {run['id']} created are no longer in treatment_goals."
        )
    return problems
