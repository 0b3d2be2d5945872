"""The guide's verification queries, as numbers: what is in JSONB, what is in treatment_goals,
and whether one real run accounts for every item.

The run judged is the newest real migration that succeeded and was never the target of a real
rollback: a rolled-back run's goals are gone on purpose, and judging it would either hide
missing goals or report them as a fault. Every item must be created, a duplicate, invalid, or
in a session that failed and was rolled back; and the goals the run created must still exist.
"""

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs import queries
from app.models.therapy_session import CANDIDATE_PREDICATE

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


async def report(conn: AsyncConnection) -> dict[str, Any]:
    """The numbers the API's /verify and the CLI's --verify show, with a sentence on them."""
    numbers = dict((await conn.execute(text(_NUMBERS_SQL))).mappings().one())
    run = await queries.judged_real_run(conn)
    result = {
        **numbers,
        "last_real_run_id": run["id"] if run else None,
        "last_real_run_accounted": run["accounted"] if run else None,
        "last_real_run_items_in_failed_sessions": run["items_in_failed_sessions"] if run else None,
        "last_real_run_goals_missing": (run["goals_created"] - run["goals_present"])
        if run
        else None,
    }
    problems = _problems(numbers, run)
    result["all_items_accounted"] = run is not None and not problems
    result["summary"] = (
        f"Every action item is accounted for by job {run['id']}."
        if result["all_items_accounted"]
        else " ".join(problems)
    )
    return result


def _problems(numbers: dict[str, Any], run: Any) -> list[str]:
    """What keeps the judged run from accounting for every item, in plain sentences."""
    if run is None:
        return ["No real migration has succeeded (rolled-back runs are not judged)."]
    problems = []
    total, accounted = numbers["total_action_items"], run["accounted"]
    if accounted != total:
        problems.append(
            f"Job {run['id']} accounts for {accounted:,} action items but JSONB now holds "
            f"{total:,} (the data changed since it ran: run the migration again)."
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
