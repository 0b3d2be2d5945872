"""EXPLAIN (ANALYZE, BUFFERS) of one engine batch and of the ceiling, each rolled back.

The batch is the one the runner would run starting a quarter of the way into the patient space,
with the parameters the runner passes; it goes through the service's own engine factory, so it
runs under the service's connection settings. One variant changes only plan_cache_mode: the
foreign-key checks PostgreSQL runs for each inserted goal are queries too, and follow it.
"""

import re
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy import text

from app.config import load_settings
from app.db import create_engine
from app.jobs import engine, partitions
from bench.ceiling import CEILING_SQL

BATCH_START = uuid.UUID(int=1 << 126)
_TIMING = re.compile(r"^(Planning|Execution) Time: ([\d.]+) ms$")
_TRIGGER = re.compile(r"^Trigger (?:for constraint )?(\S+).*: time=([\d.]+) calls=(\d+)$")


def _printable(line: str) -> str:
    """A plan line with the TRIM literal's control characters written as escapes."""
    return "".join(c if c >= " " else f"\\x{ord(c):02x}" for c in line)


@dataclass(frozen=True)
class Plan:
    """An EXPLAIN ANALYZE output and its top-level numbers."""

    label: str
    text: str
    planning_ms: float
    execution_ms: float
    triggers: list[dict]
    sessions: int | None = None

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "sessions": self.sessions,
            "planning_ms": self.planning_ms,
            "execution_ms": self.execution_ms,
            "triggers": self.triggers,
            "text": self.text,
        }


def parse(label: str, lines: list[str], sessions: int | None = None) -> Plan:
    """Pick the planning, execution and per-trigger times out of EXPLAIN's text."""
    times, triggers = {}, []
    for line in lines:
        if match := _TIMING.match(line.strip()):
            times[match.group(1)] = float(match.group(2))
        elif match := _TRIGGER.match(line.strip()):
            triggers.append(
                {
                    "name": match.group(1),
                    "ms": float(match.group(2)),
                    "calls": int(match.group(3)),
                }
            )
    return Plan(
        label=label,
        text="\n".join(_printable(line) for line in lines),
        planning_ms=times.get("Planning", 0.0),
        execution_ms=times.get("Execution", 0.0),
        triggers=triggers,
        sessions=sessions,
    )


# (what, dry run, plan_cache_mode to SET LOCAL first: None keeps the service's own)
VARIANTS = (
    ("real, as the service runs it", False, None),
    ("dry, as the service runs it", True, None),
    # What forcing custom plans costs: the foreign-key checks are re-planned for every row.
    ("real, plan_cache_mode=force_custom_plan", False, "force_custom_plan"),
)
LATE_VARIANTS = (("real, as the service runs it", False, None),)


async def _batch_end(conn, batch_size: int):
    end = next(e for s, e in partitions.ranges(2) if s <= BATCH_START <= e)
    return await engine.next_bound(conn, lo=BATCH_START, end=end, batch_size=batch_size)


async def engine_batches(
    url: str, *, batch_size: int, variants=VARIANTS, context: str = "before a run"
) -> list[Plan]:
    """Explain the batch of `batch_size` sessions starting at BATCH_START, once per variant.

    The batch runs once first, unexplained, so every variant meets warm caches; each variant
    is undone by its own savepoint, so all of them see the same data.
    """
    db = create_engine(load_settings(database_url=url, _env_file=None))
    plans = []
    try:
        async with db.connect() as conn:
            transaction = await conn.begin()
            try:
                job_id = (
                    await conn.execute(
                        text(
                            "INSERT INTO migration_jobs (kind, dry_run, batch_size, requested_by) "
                            "VALUES ('migrate', false, :batch_size, 'bench') RETURNING id"
                        ),
                        {"batch_size": batch_size},
                    )
                ).scalar_one()
                hi = await _batch_end(conn, batch_size)
                sessions = (
                    await conn.execute(
                        text(f"{engine.COUNT_CANDIDATES_SQL} AND patient_id BETWEEN :lo AND :hi"),
                        {"lo": BATCH_START, "hi": hi},
                    )
                ).scalar_one()
                params = {
                    "job_id": job_id,
                    "lo": BATCH_START,
                    "hi": hi,
                    "findings_room": engine.FINDINGS_CAP,
                    "preview_room": engine.PREVIEW_CAP,
                }
                warm_up = await conn.begin_nested()
                await conn.execute(text(engine.batch_sql(dry_run=False)), params)
                await warm_up.rollback()
                for what, dry_run, plan_cache_mode in variants:
                    savepoint = await conn.begin_nested()
                    if plan_cache_mode:
                        await conn.execute(text(f"SET LOCAL plan_cache_mode = {plan_cache_mode}"))
                    rows = await conn.execute(
                        text("EXPLAIN (ANALYZE, BUFFERS) " + engine.batch_sql(dry_run=dry_run)),
                        params,
                    )
                    lines = [row[0] for row in rows]
                    await savepoint.rollback()
                    label = f"engine batch ({what}; batch_size={batch_size}; {context})"
                    plans.append(parse(label, lines, sessions))
            finally:
                await transaction.rollback()
    finally:
        await db.dispose()
    return plans


async def ceiling(url: str) -> Plan:
    """Explain the ceiling over the whole data set; its goals stay, as after a full run."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + CEILING_SQL)
    finally:
        await conn.close()
    return parse("ceiling (whole migration)", [row[0] for row in rows])


async def reopen_batch(url: str, *, batch_size: int) -> int:
    """Delete the explained batch's migrated goals (and vacuum), so it can run again late.

    After the ceiling has stored every goal, this leaves a goals table as the engine finds it
    on its last batches: full size, with only this batch's goals still to create.
    """
    db = create_engine(load_settings(database_url=url, _env_file=None))
    try:
        async with db.begin() as conn:
            hi = await _batch_end(conn, batch_size)
            deleted = await conn.execute(
                text(
                    "DELETE FROM treatment_goals WHERE session_id IS NOT NULL "
                    "AND patient_id BETWEEN :lo AND :hi"
                ),
                {"lo": BATCH_START, "hi": hi},
            )
        async with db.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE treatment_goals"))
    finally:
        await db.dispose()
    return deleted.rowcount
