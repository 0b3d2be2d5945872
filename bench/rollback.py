"""Undoing a real run: the engine's rollback job against one hand-written DELETE.

Both start from identical copies of a database a real run has just migrated. The baseline is
what an operator would type: every goal of the job gone in one statement and one transaction.
The engine's rollback also keeps goals clinicians changed since, counts, and commits in batches
on two partitions of the goal ids.
"""

import time
from dataclasses import dataclass

import asyncpg

from bench import cpu

DELETE_SQL = "DELETE FROM treatment_goals WHERE source_job_id = $1::uuid"


class RollbackMismatch(Exception):
    """The rollback job and the hand-written DELETE removed different goals."""


@dataclass(frozen=True)
class DeleteResult:
    seconds: float
    goals_deleted: int
    cpu_seconds: float  # of its PostgreSQL backend


async def delete(url: str, job_id: str) -> DeleteResult:
    """Run the hand-written DELETE on its own connection and time it, commit included."""
    conn = await asyncpg.connect(url)
    backend = conn.get_server_pid()
    try:
        cpu_before = cpu.seconds(backend) or 0.0
        started = time.perf_counter()
        status = await conn.execute(DELETE_SQL, job_id)
        seconds = time.perf_counter() - started
        cpu_used = (cpu.seconds(backend) or 0.0) - cpu_before
    finally:
        await conn.close()
    return DeleteResult(seconds, int(status.split()[-1]), cpu_used)


async def outcome(url: str, *, target_id: str, rollback_id: str) -> tuple[int, list[int]]:
    """Goals of the target still in treatment_goals (none after either kind of undo), and the
    goals each partition of the rollback job deleted, in partition order."""
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM treatment_goals WHERE source_job_id = $1::uuid", target_id
        )
        rows = await conn.fetch(
            "SELECT goals_deleted FROM migration_job_partitions WHERE job_id = $1::uuid "
            "ORDER BY partition",
            rollback_id,
        )
    finally:
        await conn.close()
    return left, [r["goals_deleted"] for r in rows]
