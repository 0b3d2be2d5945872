"""The guide's verification queries, as numbers: what is in JSONB, what is in treatment_goals,
and whether the last successful real run accounts for every item."""

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs import store
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
    """The numbers the API's /verify and the CLI's --verify show."""
    numbers = dict((await conn.execute(text(_NUMBERS_SQL))).mappings().one())
    last = await store.last_successful_real_run(conn)
    accounted = None
    if last is not None:
        accounted = (
            last["goals_created"] + last["goals_skipped_duplicate"] + last["goals_skipped_invalid"]
        )
    return {
        **numbers,
        "last_real_run_id": last["id"] if last else None,
        "last_real_run_accounted": accounted,
        "all_items_accounted": (
            last is not None and last["errors"] == 0 and accounted == numbers["total_action_items"]
        ),
    }
