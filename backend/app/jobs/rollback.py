"""Rollback: delete what migration jobs created, and keep what clinicians have touched since.

The guide's `DELETE FROM treatment_goals WHERE session_id IS NOT NULL` would take goals the
application made and goals therapists have worked on. Here a goal goes only when its
source_job_id is one of the target jobs and it is still exactly as inserted: status 'assigned'
and updated_at equal to the insertion time of one of that job's batches (migration_batches).
With force, changed goals of the job go too. Goals are walked by id in keyset batches, each
its own transaction, so a million-goal rollback holds neither long locks nor its ids in memory.
"""

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_UNCHANGED = """(:force OR (g.status = 'assigned' AND EXISTS (
        SELECT 1 FROM migration_batches AS b
        WHERE b.job_id = g.source_job_id AND b.inserted_at = g.updated_at)))"""

# The next goals in id order, merged from one ordered walk of the (source_job_id, id) index per
# target job: each walk stops after batch_size entries under any plan. Written as
# `source_job_id = ANY(:targets)`, a generic plan on statistics from before the migration (right
# after it, nothing has analyzed the new goals) read every remaining goal of the range and sorted
# them, in every batch: quadratic (tests/integration/test_rollback.py).
_CHUNK = """chunk AS (
    SELECT g.id
    FROM unnest(CAST(:targets AS uuid[])) AS t (job_id)
    CROSS JOIN LATERAL (
        SELECT id FROM treatment_goals
        WHERE source_job_id = t.job_id AND id BETWEEN :lo AND :end
        ORDER BY id
        LIMIT :batch_size
    ) AS g
    ORDER BY g.id
    LIMIT :batch_size
)"""

# The DELETE re-evaluates its WHERE against a row's newest version if a clinician updates it
# while we run, so a goal edited mid-rollback is kept, never deleted on stale information.
_REAL_SQL = f"""
WITH {_CHUNK},
deleted AS (
    DELETE FROM treatment_goals AS g
    USING chunk AS c
    WHERE g.id = c.id AND {_UNCHANGED}
    RETURNING g.id
)
SELECT (SELECT count(*) FROM chunk) AS examined,
       (SELECT count(*) FROM deleted) AS deletable,
       (SELECT id FROM chunk ORDER BY id DESC LIMIT 1) AS last_id
"""

_DRY_SQL = f"""
WITH {_CHUNK}
SELECT count(*) AS examined,
       count(*) FILTER (WHERE {_UNCHANGED}) AS deletable,
       (SELECT id FROM chunk ORDER BY id DESC LIMIT 1) AS last_id
FROM chunk AS c
JOIN treatment_goals AS g ON g.id = c.id
"""


@dataclass
class RollbackBatch:
    """One batch's outcome: where it ended and what it deleted (or would) and kept."""

    last_id: uuid.UUID | None
    stats: dict[str, int]


async def count_goals(conn: AsyncConnection, *, targets: list[uuid.UUID]) -> int:
    """How many goals the target jobs still have in treatment_goals."""
    return (
        await conn.execute(
            text("SELECT count(*) FROM treatment_goals WHERE source_job_id = ANY(:targets)"),
            {"targets": targets},
        )
    ).scalar_one()


async def goal_span(
    conn: AsyncConnection, *, targets: list[uuid.UUID]
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The smallest and largest id among the targets' goals, to share out between partitions.

    Migrated goal ids are time-ordered (engine.UUID7), so they all sit in a narrow band of the
    uuid space: split evenly over the whole space, one partition would get every goal.
    """
    row = (
        await conn.execute(
            # min() and max() take no uuid; the (source_job_id, id) index answers these two.
            text(
                "SELECT (SELECT id FROM treatment_goals WHERE source_job_id = ANY(:targets) "
                "        ORDER BY id LIMIT 1), "
                "       (SELECT id FROM treatment_goals WHERE source_job_id = ANY(:targets) "
                "        ORDER BY id DESC LIMIT 1)"
            ),
            {"targets": targets},
        )
    ).one()
    return (row[0], row[1]) if row[0] is not None else None


async def run_batch(
    conn: AsyncConnection,
    *,
    targets: list[uuid.UUID],
    lo: uuid.UUID,
    end: uuid.UUID,
    batch_size: int,
    force: bool,
    dry_run: bool,
) -> RollbackBatch:
    """Delete (or count) the next `batch_size` goals of the target jobs from `lo` on."""
    row = (
        await conn.execute(
            text(_DRY_SQL if dry_run else _REAL_SQL),
            {
                "targets": targets,
                "lo": lo,
                "end": end,
                "batch_size": batch_size,
                "force": force,
            },
        )
    ).one()
    return RollbackBatch(
        last_id=row.last_id,
        stats={"goals_deleted": row.deletable, "goals_kept_modified": row.examined - row.deletable},
    )
