"""The naive floor: the migration guide's algorithm, written the obvious way.

One transaction per session; for each item one duplicate SELECT and one INSERT. It applies the
same rules as the engine, so its per-item work is comparable; it runs on the first sessions
only, because at full size it would take hours.
"""

import json
import time
from dataclasses import dataclass

import asyncpg

from app.models.therapy_session import CANDIDATE_PREDICATE

WS = " \t\n\r\f\x0b"  # the engine's TRIM: ASCII whitespace only

_SESSIONS_SQL = f"""
SELECT id, patient_id, therapist_id, session_date, extracted_notes -> 'action_items' AS items
FROM therapy_sessions
WHERE {CANDIDATE_PREDICATE}
ORDER BY session_date, id
LIMIT $1
"""
_DUPLICATE_SQL = "SELECT 1 FROM treatment_goals WHERE patient_id = $1 AND description = $2"
_INSERT_SQL = """
INSERT INTO treatment_goals (patient_id, therapist_id, session_id, description, category,
                             status, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 'assigned', $6, now())
"""


@dataclass(frozen=True)
class FloorResult:
    sessions: int
    items: int
    goals_created: int
    seconds: float


def goal(item: object) -> tuple[str, str | None] | None:
    """(description, category) for a valid action item, None for an invalid one."""
    if not isinstance(item, dict):
        return None
    task, details, category = item.get("task"), item.get("details"), item.get("category")
    if not isinstance(task, str) or not task.strip(WS):
        return None
    if details is not None and not isinstance(details, str):
        return None
    if category is not None and not isinstance(category, str):
        return None
    description = task.strip(WS)
    if details and details.strip(WS):
        description = f"{description} - {details.strip(WS)}"
    return description, (category.strip(WS) or None) if category else None


async def run(url: str, *, sessions: int) -> FloorResult:
    """Migrate the first `sessions` candidate sessions in (session_date, id) order, timed."""
    conn = await asyncpg.connect(url)
    items = created = 0
    try:
        started = time.perf_counter()
        rows = await conn.fetch(_SESSIONS_SQL, sessions)
        for row in rows:
            action_items = json.loads(row["items"])
            if not isinstance(action_items, list):
                items += 1  # one invalid item, as the engine counts it
                continue
            async with conn.transaction():
                for item in action_items:
                    items += 1
                    found = goal(item)
                    if found is None:
                        continue
                    description, category = found
                    if await conn.fetchval(_DUPLICATE_SQL, row["patient_id"], description):
                        continue
                    await conn.execute(
                        _INSERT_SQL,
                        row["patient_id"],
                        row["therapist_id"],
                        row["id"],
                        description,
                        category,
                        row["session_date"],
                    )
                    created += 1
        seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return FloorResult(sessions=len(rows), items=items, goals_created=created, seconds=seconds)
