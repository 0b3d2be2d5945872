"""The read side of the job table: jobs with their counters, findings, previews, audit trails.

What the routers, the command line and verification read; nothing here writes. The life cycle
and its fencing live in store.py.
"""

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs.engine import STAT_NAMES
from app.jobs.store import COUNTERS, ROLLED_BACK_SQL
from app.models.migration_job import ACTIVE_STATUSES, TERMINAL_STATUSES

# A real run confirmed from a dry run (its id kept in the run's start audit entry) carries
# that dry run's statistics, so a poll reads a job and its prediction in one statement.
_PREDICTED = f"""LEFT JOIN LATERAL (
    SELECT d.job_id AS dry_run_id,
           jsonb_build_object({", ".join(f"'{n}', sum(d.{n})" for n in STAT_NAMES)}) AS predicted
    FROM migration_audit AS a
    JOIN migration_job_partitions AS d ON d.job_id = (a.details ->> 'confirmed_from')::uuid
    WHERE a.job_id = j.id AND a.action = 'start' AND j.kind = 'migrate' AND NOT j.dry_run
      AND a.details ->> 'confirmed_from' IS NOT NULL
    GROUP BY d.job_id
) AS c ON true"""

_JOB_SELECT = f"""
SELECT j.*,
       greatest(extract(epoch FROM clock_timestamp() - j.run_started_at), 0) AS run_seconds,
       greatest(extract(epoch FROM clock_timestamp() - j.heartbeat_at), 0)::float
           AS heartbeat_age_seconds,
       {", ".join(f"coalesce(sum(p.{n}), 0)::bigint AS {n}" for n in COUNTERS)},
       c.dry_run_id AS confirmed_from, c.predicted, b.current_batch_size
FROM migration_jobs AS j
LEFT JOIN migration_job_partitions AS p ON p.job_id = j.id
{_PREDICTED}
LEFT JOIN LATERAL (
    SELECT batch_size AS current_batch_size FROM migration_batches
    WHERE job_id = j.id ORDER BY inserted_at DESC LIMIT 1
) AS b ON true
"""
_GROUP = " GROUP BY j.id, c.dry_run_id, c.predicted, b.current_batch_size"


async def get_job(conn: AsyncConnection, *, job_id: uuid.UUID) -> dict | None:
    """One job with its partitions' counters summed."""
    row = (
        (
            await conn.execute(
                text(_JOB_SELECT + " WHERE j.id = :job_id" + _GROUP), {"job_id": job_id}
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


def _job_filter(status: str | None, kind: str | None) -> str:
    where = [f"j.{name} = :{name}" for name, value in (("status", status), ("kind", kind)) if value]
    return (" WHERE " + " AND ".join(where)) if where else ""


async def list_jobs(
    conn: AsyncConnection,
    *,
    limit: int,
    offset: int,
    status: str | None = None,
    kind: str | None = None,
) -> list[dict]:
    """Jobs, newest first, optionally of one status and kind."""
    rows = await conn.execute(
        text(
            _JOB_SELECT
            + _job_filter(status, kind)
            + _GROUP
            + " ORDER BY j.created_at DESC, j.id LIMIT :limit OFFSET :offset"
        ),
        {"limit": limit, "offset": offset, "status": status, "kind": kind},
    )
    return [dict(r) for r in rows.mappings()]


async def count_jobs(
    conn: AsyncConnection, *, status: str | None = None, kind: str | None = None
) -> int:
    """How many jobs list_jobs would page through."""
    return (
        await conn.execute(
            text("SELECT count(*) FROM migration_jobs AS j" + _job_filter(status, kind)),
            {"status": status, "kind": kind},
        )
    ).scalar_one()


async def judged_real_run(conn: AsyncConnection) -> dict | None:
    """The run verification judges: the newest succeeded real migration never rolled back.

    (Rolled back: a real rollback of it succeeded or deleted goals, store.ROLLED_BACK_SQL.)

    With its item reconciliation and how many of the goals it created are still there.
    """
    row = (
        (
            await conn.execute(
                text(
                    "SELECT j.id, "
                    "  sum(p.goals_created)::bigint AS goals_created, "
                    "  sum(p.goals_created + p.goals_skipped_duplicate + p.goals_skipped_invalid"
                    "      + p.items_in_failed_sessions)::bigint AS accounted, "
                    "  sum(p.items_in_failed_sessions)::bigint AS items_in_failed_sessions, "
                    "  sum(p.errors)::bigint AS errors, "
                    "  (SELECT count(*) FROM treatment_goals AS g WHERE g.source_job_id = j.id)"
                    "      AS goals_present "
                    "FROM migration_jobs AS j "
                    "JOIN migration_job_partitions AS p ON p.job_id = j.id "
                    "WHERE j.kind = 'migrate' AND NOT j.dry_run AND j.status = 'succeeded' "
                    f"  AND NOT {ROLLED_BACK_SQL.format(job='j')} "
                    "GROUP BY j.id ORDER BY j.finished_at DESC LIMIT 1"
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def list_findings(
    conn: AsyncConnection, *, job_id: uuid.UUID, kind: str | None, limit: int, offset: int
) -> tuple[list[dict], int]:
    """A page of a job's recorded findings, and how many it recorded in all."""
    where = "job_id = :job_id" + (" AND kind = :kind" if kind else "")
    params = {"job_id": job_id, "kind": kind, "limit": limit, "offset": offset}
    rows = await conn.execute(
        text(
            "SELECT session_id, item_index, kind, reason FROM migration_findings "
            f"WHERE {where} ORDER BY id LIMIT :limit OFFSET :offset"
        ),
        params,
    )
    total = (
        await conn.execute(text(f"SELECT count(*) FROM migration_findings WHERE {where}"), params)
    ).scalar_one()
    return [dict(r) for r in rows.mappings()], total


async def count_findings_by_reason(
    conn: AsyncConnection, *, job_id: uuid.UUID, kind: str | None
) -> dict[str, int]:
    """How many recorded findings of a job there are per reason, most frequent first."""
    where = "job_id = :job_id" + (" AND kind = :kind" if kind else "")
    rows = await conn.execute(
        text(
            f"SELECT reason, count(*) FROM migration_findings WHERE {where} "
            "GROUP BY reason ORDER BY count(*) DESC, reason"
        ),
        {"job_id": job_id, "kind": kind},
    )
    return {reason: n for reason, n in rows}


async def list_preview(conn: AsyncConnection, *, job_id: uuid.UUID, limit: int) -> list[dict]:
    """The first goals a dry run would create."""
    rows = await conn.execute(
        text(
            "SELECT session_id, patient_id, description, category, created_at "
            "FROM migration_previews WHERE job_id = :job_id "
            "ORDER BY patient_id, created_at, session_id, item_index LIMIT :limit"
        ),
        {"job_id": job_id, "limit": limit},
    )
    return [dict(r) for r in rows.mappings()]


async def list_audit(conn: AsyncConnection, *, job_id: uuid.UUID) -> list[dict]:
    """The job's audit trail, oldest first."""
    rows = await conn.execute(
        text(
            "SELECT at, actor, action, details FROM migration_audit "
            "WHERE job_id = :job_id ORDER BY id"
        ),
        {"job_id": job_id},
    )
    return [dict(r) for r in rows.mappings()]


async def job_ids_starting_with(
    conn: AsyncConnection, *, prefix: str, limit: int = 4
) -> list[uuid.UUID]:
    """Up to `limit` ids of jobs whose id starts with `prefix` (dashes ignored), newest first.

    The caller passes only hex digits and dashes, so the pattern holds no LIKE wildcards.
    """
    rows = await conn.execute(
        text(
            "SELECT id FROM migration_jobs WHERE replace(id::text, '-', '') LIKE :pattern "
            "ORDER BY created_at DESC, id LIMIT :limit"
        ),
        {"pattern": prefix.replace("-", "").lower() + "%", "limit": limit},
    )
    return list(rows.scalars())


async def jobs_to_report(conn: AsyncConnection, *, recent: int, timeout_ms: int) -> list[dict]:
    """The active jobs and the `recent` last ended ones, for a metrics scrape, newest first.

    Bounded in rows and in time: the scrape must answer even while the database is slow, so
    this transaction's statements stop after `timeout_ms`.
    """
    await conn.execute(
        text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)}
    )
    rows = await conn.execute(
        text(
            _JOB_SELECT + f" WHERE j.status IN {ACTIVE_STATUSES} OR j.id IN ("
            "   SELECT id FROM migration_jobs"
            f"  WHERE status NOT IN {ACTIVE_STATUSES}"
            "   ORDER BY coalesce(finished_at, created_at) DESC, id LIMIT :recent)"
            + _GROUP
            + " ORDER BY j.created_at DESC, j.id"
        ),
        {"recent": recent},
    )
    return [dict(r) for r in rows.mappings()]


# The job's batches in equal slices of time from its first batch to its last: what each slice
# went through and at what size, for the job page's chart. A slice is at least a second wide;
# a slice without batches (the job waited, or paused) is there too, with nothing in it.
_TIMELINE_SQL = """
WITH b AS (
    SELECT inserted_at, batch_size, processed, seconds FROM migration_batches
    WHERE job_id = :job_id AND seconds IS NOT NULL
),
span AS (
    SELECT min(inserted_at) AS t0,
           extract(epoch FROM max(inserted_at) - min(inserted_at)) AS seconds
    FROM b
),
grid AS (
    SELECT t0, greatest(seconds / :slices, 1.0) AS width FROM span WHERE t0 IS NOT NULL
),
filled AS (
    SELECT floor(extract(epoch FROM b.inserted_at - grid.t0) / grid.width)::int AS slice,
           count(*) AS batches,
           sum(b.processed)::bigint AS processed,
           round(avg(b.batch_size))::int AS batch_size,
           sum(b.seconds)::float AS busy_seconds
    FROM b, grid GROUP BY 1
)
SELECT grid.t0 + make_interval(secs => n * grid.width) AS start, grid.width AS seconds,
       coalesce(f.batches, 0) AS batches, coalesce(f.processed, 0) AS processed,
       f.batch_size, coalesce(f.busy_seconds, 0) AS busy_seconds
FROM grid
CROSS JOIN generate_series(0, (SELECT max(slice) FROM filled)) AS n
LEFT JOIN filled AS f ON f.slice = n
ORDER BY n
"""
_THROTTLE_ACTIONS = ("throttled", "throttle_cleared", *TERMINAL_STATUSES, "resume")
THROTTLE_PERIODS_KEPT = 500


async def timeline(conn: AsyncConnection, *, job_id: uuid.UUID, slices: int) -> dict:
    """Rate and batch size over time from the batch rows, and when the job waited, and on what.

    A wait ends at the next throttle change, the run's end or a resume; one still going has
    no end. Bounded: `slices` rows and the last THROTTLE_PERIODS_KEPT waits.
    """
    rows = (await conn.execute(text(_TIMELINE_SQL), {"job_id": job_id, "slices": slices})).all()
    events = (
        await conn.execute(
            text(
                "SELECT * FROM (SELECT id, at, action, details FROM migration_audit "
                "WHERE job_id = :job_id AND action = ANY(:actions) ORDER BY id DESC LIMIT :n) "
                "AS e ORDER BY id"
            ),
            {"job_id": job_id, "actions": list(_THROTTLE_ACTIONS), "n": 2 * THROTTLE_PERIODS_KEPT},
        )
    ).all()
    waits: list[dict] = []
    for event in events:
        if waits and waits[-1]["to"] is None:
            waits[-1]["to"] = event.at
        if event.action == "throttled":
            details = event.details
            waits.append(
                {
                    "signal": details.get("signal"),
                    "message": details.get("message") or details.get("signal"),
                    "from": event.at,
                    "to": None,
                }
            )
    return {
        "slices": [
            {
                "start": r.start,
                "seconds": r.seconds,
                "batches": r.batches,
                "processed": r.processed,
                "rate_per_second": round(r.processed / float(r.seconds), 1),
                "batch_size": r.batch_size,
                "busy_seconds": round(r.busy_seconds, 3),
            }
            for r in rows
        ],
        "throttled": waits[-THROTTLE_PERIODS_KEPT:],
    }
