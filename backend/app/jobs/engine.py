"""The migration's rules, and one batch of them as a single set-based statement.

A batch is every candidate session of a contiguous range of patients. Duplicates never cross
patients, so a batch holding whole patients can decide every duplicate by itself: against the
goals already in treatment_goals, and against its own earlier items in (session_date, id,
item index) order. That is what lets a dry run predict a real run without remembering what it
"would have created" in earlier batches, and what lets two partitions of the patient space run
side by side on both cores.

A real batch commits all its sessions together. If its statement fails because of one session's
data (errors.py), the batch is replayed in one transaction with a savepoint per session, in
processing order, so only the sessions that fail are rolled back: the observable result is that
of one transaction per session. Any other failure propagates to the runner, which retries the
whole batch (transient) or ends the job.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs import errors
from app.models.therapy_session import CANDIDATE_PREDICATE

# ASCII whitespace only: space, tab, LF, CR, FF, VT. U+00A0 and zero-width characters stay.
TRIM = r"E' \t\n\r\f\x0b'"

# Each partition keeps up to this many findings and preview goals, in processing order; the
# runner trims a job's findings back to FINDINGS_CAP when it ends.
FINDINGS_CAP = 10_000
PREVIEW_CAP = 100

# Statistics every migrate job keeps, in the order the API, CLI and page show them.
STAT_NAMES = (
    "sessions_processed",
    "sessions_with_action_items",
    "goals_created",
    "goals_skipped_duplicate",
    "goals_skipped_invalid",
    "errors",
)
# Kept beside them: the items of sessions that failed and were rolled back, so verification can
# reconcile every item (items = created + duplicate + invalid + those), and the patients who
# were given goals (exact when summed over batches, which hold whole patients).
COUNTER_NAMES = (*STAT_NAMES, "items_in_failed_sessions", "patients_with_goals_created")

# The batch statement is a chain of CTEs, one per step of the rules; batch_sql() picks the
# variants (real or dry, a patient range or one session of it, with or without a report).
_S = CANDIDATE_PREDICATE.replace("extracted_notes", "s.extracted_notes")
_BATCH = f"""batch AS (
    SELECT s.id AS session_id, s.patient_id, s.therapist_id, s.session_date,
           s.extracted_notes -> 'action_items' AS action_items
    FROM therapy_sessions AS s
    WHERE {_S}
      AND s.patient_id BETWEEN :lo AND :hi"""
_ONE_SESSION = "\n      AND s.id = :session_id"

_ELEMENTS = """elements AS (
    SELECT b.session_id, b.patient_id, b.therapist_id, b.session_date,
           (e.ordinality - 1)::int AS item_index, e.value AS item
    FROM batch AS b
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(b.action_items) = 'array' THEN b.action_items END
    ) WITH ORDINALITY AS e
)"""

# Every item with its verdict; a non-array action_items is one invalid item without index.
_ITEMS = f"""items AS (
    SELECT el.session_id, el.patient_id, el.therapist_id, el.session_date, el.item_index,
           CASE
               WHEN jsonb_typeof(el.item) <> 'object' THEN 'item is not an object'
               WHEN jsonb_typeof(el.item -> 'task') IS DISTINCT FROM 'string'
                    OR btrim(el.item ->> 'task', {TRIM}) = '' THEN 'missing task'
               WHEN jsonb_typeof(el.item -> 'details') NOT IN ('string', 'null')
                    THEN 'details is not a string'
               WHEN jsonb_typeof(el.item -> 'category') NOT IN ('string', 'null')
                    THEN 'category is not a string'
           END AS reason,
           btrim(el.item ->> 'task', {TRIM}) AS task,
           CASE WHEN jsonb_typeof(el.item -> 'details') = 'string'
                THEN btrim(el.item ->> 'details', {TRIM}) END AS details,
           CASE WHEN jsonb_typeof(el.item -> 'category') = 'string'
                THEN nullif(btrim(el.item ->> 'category', {TRIM}), '') END AS category
    FROM elements AS el
    UNION ALL
    SELECT b.session_id, b.patient_id, b.therapist_id, b.session_date, NULL,
           'action_items is not an array', NULL, NULL, NULL
    FROM batch AS b
    WHERE jsonb_typeof(b.action_items) <> 'array'
)"""

_GOALS = """goals AS (
    SELECT i.session_id, i.patient_id, i.therapist_id, i.session_date, i.item_index, i.category,
           CASE WHEN i.details <> '' THEN i.task || ' - ' || i.details ELSE i.task END
               AS description
    FROM items AS i
    WHERE i.reason IS NULL
)"""

# The first occurrence of each (patient, description) in processing order is the one that
# may create a goal; every later one is a duplicate.
_FIRSTS = """firsts AS (
    SELECT DISTINCT ON (g.patient_id, g.description) g.*
    FROM goals AS g
    ORDER BY g.patient_id, g.description, g.session_date, g.session_id, g.item_index
)"""

# The range predicate on t.patient_id keeps any plan (nested loop or hash anti-join) on this
# batch's patients instead of re-reading the whole, growing goals table every batch.
_NEW_GOALS = """new_goals AS (
    SELECT f.*
    FROM firsts AS f
    WHERE NOT EXISTS (
        SELECT 1
        FROM treatment_goals AS t
        WHERE t.patient_id = f.patient_id
          AND t.patient_id BETWEEN :lo AND :hi
          AND md5(t.description) = md5(f.description)
          AND t.description = f.description
    )
)"""

# Goal ids are UUIDv7 (RFC 9562: 48 bits of milliseconds, then random bits), built inline so it
# works before PostgreSQL 18's uuidv7(). Time-ordered ids land at the right edge of the primary
# key and of (source_job_id, id) instead of all over them: at 1M sessions this cut the goal-index
# blocks a run reads from 935k to 82k (docs/BENCHMARKS.md).
UUID7 = """encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                          FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"""

_CREATE_REAL = f"""created AS (
    INSERT INTO treatment_goals (id, patient_id, therapist_id, session_id,
                                 description, category, status, created_at, updated_at,
                                 source_job_id)
    SELECT {UUID7}, patient_id, therapist_id, session_id, description, category, 'assigned',
           session_date, now(), :job_id
    FROM new_goals
    RETURNING patient_id
)"""

# A dry run writes nothing to treatment_goals; it keeps the first goals it would create.
_CREATE_DRY = """created AS (
    SELECT patient_id FROM new_goals
),
previewed AS (
    INSERT INTO migration_previews (job_id, session_id, item_index, patient_id, description,
                                    category, created_at)
    SELECT :job_id, session_id, item_index, patient_id, description, category, session_date
    FROM new_goals
    ORDER BY patient_id, session_date, session_id, item_index
    LIMIT :preview_room
    RETURNING 1
)"""

_FINDINGS = """findings AS (
    INSERT INTO migration_findings (job_id, session_id, item_index, kind, reason)
    SELECT :job_id, i.session_id, i.item_index, 'invalid', i.reason
    FROM items AS i
    WHERE i.reason IS NOT NULL
    ORDER BY i.patient_id, i.session_date, i.session_id, i.item_index
    LIMIT :findings_room
    RETURNING 1
)"""

# Verbose runs (the CLI's --verbose) also get every session and item outcome, for the
# operator's own terminal; never logged.
_REPORT = """report AS (
    SELECT b.session_id, b.patient_id, b.session_date,
           CASE WHEN jsonb_typeof(b.action_items) = 'array'
                THEN jsonb_array_length(b.action_items) ELSE 1 END AS item_count,
           i.item_index, i.reason, g.description, g.category,
           CASE WHEN i.session_id IS NULL THEN NULL
                WHEN i.reason IS NOT NULL THEN 'invalid'
                WHEN n.session_id IS NOT NULL THEN 'created'
                ELSE 'duplicate' END AS outcome
    FROM batch AS b
    LEFT JOIN items AS i ON i.session_id = b.session_id
    LEFT JOIN goals AS g ON g.session_id = i.session_id AND g.item_index = i.item_index
    LEFT JOIN new_goals AS n ON n.session_id = i.session_id AND n.item_index = i.item_index
)"""

# One pass over each CTE the counts need: a scalar subquery per count would scan `batch` and
# `created` several times each, and keep `goals` materialized for its one count (about 15% of
# a dry batch's time on PostgreSQL 15, docs/ENGINE.md). Items without a reason are the goals.
_COUNTS = """
    b.sessions_processed, b.sessions_with_action_items, c.goals_created,
    c.patients_with_goals_created, i.goals - c.goals_created AS goals_skipped_duplicate,
    i.invalid AS goals_skipped_invalid, f.findings_stored"""
_COUNTED = """
FROM (SELECT count(*) AS sessions_processed,
             count(*) FILTER (WHERE jsonb_typeof(action_items) = 'array'
                                AND action_items <> '[]'::jsonb) AS sessions_with_action_items
      FROM batch) AS b
CROSS JOIN (SELECT count(*) AS goals_created,
                   count(DISTINCT patient_id) AS patients_with_goals_created
            FROM created) AS c
CROSS JOIN (SELECT count(*) FILTER (WHERE reason IS NULL) AS goals,
                   count(*) FILTER (WHERE reason IS NOT NULL) AS invalid
            FROM items) AS i
CROSS JOIN (SELECT count(*) AS findings_stored FROM findings) AS f"""
_REPORT_COLUMN = """,
    (SELECT json_agg(r ORDER BY r.session_date, r.session_id, r.item_index NULLS FIRST)
     FROM report AS r) AS report"""


def _bound_sql(start: str) -> str:
    """The last patient of the first :batch_size candidate sessions from `start` to :end."""
    return f"""SELECT patient_id FROM (
    SELECT patient_id
    FROM therapy_sessions
    WHERE {CANDIDATE_PREDICATE}
      AND {start} AND patient_id <= :end
    ORDER BY patient_id, session_date, id
    LIMIT :batch_size
) AS window_
ORDER BY patient_id DESC
LIMIT 1"""


_NEXT_BOUND_SQL = _bound_sql("patient_id >= :lo")
# The batch statement can find the next batch's bound too, saving the next batch a round trip.
_BOUND_AHEAD_COLUMN = f""",
    ({_bound_sql("patient_id > :hi")}) AS next_hi"""

# The sessions of a batch in processing order, with what a failed one still counts for.
_BATCH_SESSIONS_SQL = f"""
SELECT id,
       jsonb_typeof(extracted_notes -> 'action_items') = 'array'
           AND extracted_notes -> 'action_items' <> '[]'::jsonb AS has_items,
       CASE WHEN jsonb_typeof(extracted_notes -> 'action_items') = 'array'
            THEN jsonb_array_length(extracted_notes -> 'action_items') ELSE 1 END AS item_count
FROM therapy_sessions
WHERE {CANDIDATE_PREDICATE} AND patient_id BETWEEN :lo AND :hi
ORDER BY patient_id, session_date, id
"""

COUNT_CANDIDATES_SQL = f"SELECT count(*) FROM therapy_sessions WHERE {CANDIDATE_PREDICATE}"

# This batch's goals are the job's only goals in its patient range: batches hold whole patients.
_BATCH_PATIENTS_SQL = """
SELECT count(DISTINCT patient_id) FROM treatment_goals
WHERE source_job_id = :job_id AND patient_id BETWEEN :lo AND :hi
"""


def batch_sql(
    *, dry_run: bool, one_session: bool = False, report: bool = False, ahead: bool = False
) -> str:
    """The batch statement for a real or dry run, over a patient range or one session of it.

    With `ahead` it also returns `next_hi`, the bound of the batch after it (see next_bound).
    """
    ctes = [
        _BATCH + (_ONE_SESSION if one_session else "") + "\n)",
        _ELEMENTS,
        _ITEMS,
        _GOALS,
        _FIRSTS,
        _NEW_GOALS,
        _CREATE_DRY if dry_run else _CREATE_REAL,
        _FINDINGS,
    ]
    columns = _COUNTS + (_BOUND_AHEAD_COLUMN if ahead else "")
    if report:
        ctes.append(_REPORT)
        columns += _REPORT_COLUMN
    return "WITH " + ",\n".join(ctes) + "\nSELECT" + columns + _COUNTED + "\n"


# Verification: the goals a real run over patients lo..hi would create now, read-only. The
# same rules as a batch (the CTEs above), so "nothing missing" means exactly "a real run now
# would create nothing"; the first few session ids, in processing order, let an operator look.
_MISSING_SQL = f"""WITH {_BATCH}
),
{_ELEMENTS},
{_ITEMS},
{_GOALS},
{_FIRSTS},
{_NEW_GOALS}
SELECT count(*) AS goals,
       count(DISTINCT session_id) AS sessions,
       count(DISTINCT patient_id) AS patients,
       (array_agg(session_id ORDER BY patient_id, session_date, session_id))[1:5] AS examples
FROM new_goals
"""


@dataclass
class Missing:
    """Goals a real run would create now: how many, for how many sessions and patients."""

    goals: int = 0
    sessions: int = 0
    patients: int = 0
    examples: list[uuid.UUID] = field(default_factory=list)

    def add(self, other: "Missing", keep: int = 5) -> None:
        self.goals += other.goals
        self.sessions += other.sessions  # batches hold whole patients, so these add up
        self.patients += other.patients
        self.examples = (self.examples + other.examples)[:keep]


async def missing_goals(conn: AsyncConnection, *, lo: uuid.UUID, hi: uuid.UUID) -> Missing:
    """What a real run over patients lo..hi would create now (nothing is written)."""
    row = (await conn.execute(text(_MISSING_SQL), {"lo": lo, "hi": hi})).one()
    return Missing(row.goals, row.sessions, row.patients, list(row.examples or []))


@dataclass
class BatchResult:
    """What one batch did: statistic deltas, findings kept, and (verbose) item outcomes."""

    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    findings_stored: int = 0
    preview_stored: int = 0
    failed_sessions: list[uuid.UUID] = field(default_factory=list)
    report: list[dict[str, Any]] = field(default_factory=list)
    next_hi: uuid.UUID | None = None  # the next batch's bound, when asked for and found

    def add(self, row: Any) -> None:
        for name in (*STAT_NAMES, "patients_with_goals_created"):
            if name != "errors":
                self.stats[name] += getattr(row, name)
        self.findings_stored += row.findings_stored
        if getattr(row, "report", None):
            self.report.extend(row.report)

    def add_failed(self, session: Any) -> None:
        """A session that failed and was rolled back: it counts, its items create nothing."""
        self.stats["sessions_processed"] += 1
        self.stats["sessions_with_action_items"] += int(session.has_items)
        self.stats["errors"] += 1
        self.stats["items_in_failed_sessions"] += session.item_count
        self.failed_sessions.append(session.id)


async def next_bound(
    conn: AsyncConnection, *, lo: uuid.UUID, end: uuid.UUID, batch_size: int
) -> uuid.UUID | None:
    """The last patient of the next batch: whole patients, at least `batch_size` sessions."""
    result = await conn.execute(
        text(_NEXT_BOUND_SQL), {"lo": lo, "end": end, "batch_size": batch_size}
    )
    return result.scalar_one_or_none()


async def count_candidates(conn: AsyncConnection) -> int:
    """How many sessions the migration will look at."""
    return (await conn.execute(text(COUNT_CANDIDATES_SQL))).scalar_one()


async def run_batch(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    lo: uuid.UUID,
    hi: uuid.UUID,
    dry_run: bool,
    findings_room: int,
    preview_room: int,
    report: bool = False,
    bound_ahead: tuple[uuid.UUID, int] | None = None,
) -> BatchResult:
    """Migrate patients lo..hi inside the caller's transaction; replay per session on failure.

    The caller owns the transaction and commits it together with the job's progress. Errors
    that are not one session's data (errors.classify) propagate: the caller retries or fails.
    With `bound_ahead` (the partition's end, the batch size), the result's `next_hi` is the
    next batch's bound as next_bound() would give it now; None after a replay.
    """
    params = {
        "job_id": job_id,
        "lo": lo,
        "hi": hi,
        "findings_room": max(findings_room, 0),
        "preview_room": max(preview_room, 0),
    }
    if bound_ahead is not None:
        params["end"], params["batch_size"] = bound_ahead
    result = BatchResult()
    statement = text(batch_sql(dry_run=dry_run, report=report, ahead=bound_ahead is not None))
    if dry_run:
        # A dry run inserts no goals, so a failure is never one session's data: no savepoint to
        # replay from; the error ends the attempt (a transient one is retried).
        row = (await conn.execute(statement, params)).one()
    else:
        try:
            async with conn.begin_nested():
                row = (await conn.execute(statement, params)).one()
        except DBAPIError as exc:
            if errors.classify(exc) is not errors.Kind.SESSION:
                raise
            return await _replay(conn, params, report=report)
    result.add(row)
    if bound_ahead is not None:
        result.next_hi = row.next_hi
    if dry_run:
        result.preview_stored = min(result.stats["goals_created"], params["preview_room"])
    return result


async def _replay(conn: AsyncConnection, params: dict[str, Any], *, report: bool) -> BatchResult:
    """Run the batch again one session at a time, each under its own savepoint, in order."""
    result = BatchResult()
    sessions = (
        await conn.execute(text(_BATCH_SESSIONS_SQL), {"lo": params["lo"], "hi": params["hi"]})
    ).all()
    statement = text(batch_sql(dry_run=False, one_session=True, report=report))
    for session in sessions:
        room = params["findings_room"] - result.findings_stored
        try:
            async with conn.begin_nested():
                row = (
                    await conn.execute(
                        statement, {**params, "session_id": session.id, "findings_room": room}
                    )
                ).one()
        except DBAPIError as exc:
            if errors.classify(exc) is not errors.Kind.SESSION:
                raise
            result.add_failed(session)
            if room > 0:
                await record_error(conn, job_id=params["job_id"], session_id=session.id, exc=exc)
                result.findings_stored += 1
            if report:
                info = str(errors.error_info(exc))
                result.report.append({"session_id": str(session.id), "error": info})
            continue
        result.add(row)
    # One statement per session counts a patient once per session: count the batch's instead.
    result.stats["patients_with_goals_created"] = (
        await conn.execute(text(_BATCH_PATIENTS_SQL), params)
    ).scalar_one()
    return result


async def record_error(
    conn: AsyncConnection, *, job_id: uuid.UUID, session_id: uuid.UUID, exc: BaseException
) -> None:
    """Keep a failed session's id and the safe description of its database error."""
    await conn.execute(
        text(
            "INSERT INTO migration_findings (job_id, session_id, item_index, kind, reason) "
            "VALUES (:job_id, :session_id, NULL, 'error', :reason)"
        ),
        {"job_id": job_id, "session_id": session_id, "reason": str(errors.error_info(exc))},
    )
