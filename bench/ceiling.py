"""The SQL ceiling: the whole migration as one hand-written statement, and the row-set check.

The statement applies the engine's rules (docs/ENGINE.md) and nothing else: no batches, no
statistics, no findings, no progress, one transaction. It is what PostgreSQL can do on one
core, so it is the time the engine has to beat, and its rows are the ones the engine must
create.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from app.jobs.engine import TRIM
from bench import cpu

CEILING_SQL = f"""
WITH items AS (
    SELECT s.id AS session_id, s.patient_id, s.therapist_id, s.session_date,
           e.ordinality AS item_index,
           btrim(e.value ->> 'task', {TRIM}) AS task,
           CASE WHEN jsonb_typeof(e.value -> 'details') = 'string'
                THEN btrim(e.value ->> 'details', {TRIM}) END AS details,
           CASE WHEN jsonb_typeof(e.value -> 'category') = 'string'
                THEN nullif(btrim(e.value ->> 'category', {TRIM}), '') END AS category
    FROM therapy_sessions AS s
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(s.extracted_notes -> 'action_items') = 'array'
             THEN s.extracted_notes -> 'action_items' END
    ) WITH ORDINALITY AS e
    WHERE jsonb_typeof(s.extracted_notes -> 'action_items') = 'array'
      AND jsonb_typeof(e.value) = 'object'
      AND jsonb_typeof(e.value -> 'task') = 'string'
      AND coalesce(jsonb_typeof(e.value -> 'details'), 'null') IN ('string', 'null')
      AND coalesce(jsonb_typeof(e.value -> 'category'), 'null') IN ('string', 'null')
),
goals AS (
    SELECT i.session_id, i.patient_id, i.therapist_id, i.session_date, i.item_index, i.category,
           CASE WHEN i.details <> '' THEN i.task || ' - ' || i.details ELSE i.task END
               AS description
    FROM items AS i
    WHERE i.task <> ''
),
firsts AS (
    SELECT DISTINCT ON (g.patient_id, g.description) g.*
    FROM goals AS g
    ORDER BY g.patient_id, g.description, g.session_date, g.session_id, g.item_index
)
INSERT INTO treatment_goals (patient_id, therapist_id, session_id, description, category,
                             status, created_at, updated_at)
SELECT f.patient_id, f.therapist_id, f.session_id, f.description, f.category, 'assigned',
       f.session_date, now()
FROM firsts AS f
WHERE NOT EXISTS (
    SELECT 1
    FROM treatment_goals AS t
    WHERE t.patient_id = f.patient_id
      AND md5(t.description) = md5(f.description)
      AND t.description = f.description
)
"""

# The demo's pre-existing goals have no session; every goal with one was migrated.
ROWS_SQL = """
SELECT patient_id, session_id, description, category, created_at
FROM treatment_goals
WHERE session_id IS NOT NULL
"""

_COLUMNS = ("patient_id", "session_id", "description", "category", "created_at")

_LOAD_SQL = """
CREATE TEMP TABLE ceiling_rows (
    patient_id uuid, session_id uuid, description text, category text, created_at timestamptz
)
"""

# EXCEPT ALL both ways: any missing, extra or duplicated row shows up in one of the counts.
_DIFF_SQL = """
SELECT
    (SELECT count(*) FROM (
        SELECT patient_id, session_id, description, category, created_at FROM ceiling_rows
        EXCEPT ALL
        SELECT patient_id, session_id, description, category, created_at FROM engine_rows
    ) AS missing) AS missing,
    (SELECT count(*) FROM (
        SELECT patient_id, session_id, description, category, created_at FROM engine_rows
        EXCEPT ALL
        SELECT patient_id, session_id, description, category, created_at FROM ceiling_rows
    ) AS extra) AS extra
"""


class RowSetMismatch(Exception):
    """The engine's goals differ from the ceiling's: one of them breaks the rules."""


@dataclass(frozen=True)
class CeilingResult:
    seconds: float
    goals_created: int
    cpu_seconds: float  # of its PostgreSQL backend
    background_cores: float  # other load on the machine meanwhile


async def run(url: str) -> CeilingResult:
    """Run the ceiling statement on its own connection and time it, commit included."""
    conn = await asyncpg.connect(url)
    backend = conn.get_server_pid()
    try:
        cpu_before = cpu.seconds(backend) or 0.0
        background = cpu.Background()
        started = time.perf_counter()
        async with conn.transaction():
            status = await conn.execute(CEILING_SQL)
        seconds = time.perf_counter() - started
        cpu_used = (cpu.seconds(backend) or 0.0) - cpu_before
    finally:
        await conn.close()
    return CeilingResult(
        seconds=seconds,
        goals_created=int(status.split()[-1]),
        cpu_seconds=cpu_used,
        background_cores=background.cores(cpu_used),
    )


async def export_rows(url: str, path: Path) -> None:
    """Save the ceiling's goals as a binary COPY file, to compare engine runs against."""
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_from_query(ROWS_SQL, output=str(path), format="binary")
    finally:
        await conn.close()


async def check(
    url: str, rows_file: Path, *, engine_rows_sql: str, label: str, subset: bool = False
) -> int:
    """Compare the goals `engine_rows_sql` selects in `url` with the ceiling's; return the count.

    Raises RowSetMismatch when a row differs (with `subset`, only when one is not the ceiling's).
    """
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_LOAD_SQL)
        await conn.copy_to_table(
            "ceiling_rows", source=str(rows_file), columns=_COLUMNS, format="binary"
        )
        await conn.execute(f"CREATE TEMP VIEW engine_rows AS {engine_rows_sql}")
        diff = await conn.fetchrow(_DIFF_SQL)
        count = await conn.fetchval("SELECT count(*) FROM engine_rows")
    finally:
        await conn.close()
    if diff["extra"] or (diff["missing"] and not subset):
        raise RowSetMismatch(
            f"{label}: {diff['missing']} of the ceiling's goals are missing and "
            f"{diff['extra']} goals are not among the ceiling's"
        )
    return count
