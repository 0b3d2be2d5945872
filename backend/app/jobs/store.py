"""The job life cycle in SQL: creating, claiming, leasing, revoking, finishing jobs.

Every statement that changes migration_jobs, migration_job_partitions and migration_audit is
here (queries.py reads them); the batch statements of engine.py and rollback.py write
findings, previews and goals in the same transaction as save_progress(). State lives only in
PostgreSQL, so any process or replica can answer for any job:

    queued ──claim──▶ running ──▶ succeeded | failed | cancelled | interrupted
       │                 │ cancel            ▲
       │                 ▼                   │ (stale heartbeat, shutdown)
       └──cancel──▶  cancelling ─────────────┘
    cancelled | interrupted | failed ──resume──▶ queued (same id, same cursors and counters)

Fencing. Each run holds a fresh run_token (its lease) on the job and on every partition.
Whatever takes a job away from its run (stale heartbeat, cancel or shutdown completing, resume,
a rollback of it) revokes those tokens in the same transaction. Every batch ends with
save_progress(), which updates its partition row only while it still carries the run's token,
under that row's lock and inside the batch's transaction: a batch of a revoked run, whenever
its process wakes up, finds no row to update and rolls back with its goals.
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs import errors, partitions
from app.jobs.engine import COUNTER_NAMES
from app.models.migration_job import ACTIVE_STATUSES, RESUMABLE_STATUSES, RUNNING_STATUSES

ROLLBACK_STAT_NAMES = ("goals_deleted", "goals_kept_modified")
COUNTERS = COUNTER_NAMES + ROLLBACK_STAT_NAMES
# The status sets as SQL lists, e.g. ('queued', 'running', 'cancelling').
_ACTIVE = str(ACTIVE_STATUSES)
_RUNNING = str(RUNNING_STATUSES)
_RESUMABLE = str(RESUMABLE_STATUSES)


class ActiveJobExists(Exception):
    """Another migration or rollback job is active in this database."""

    def __init__(
        self,
        active_job_id: uuid.UUID | None,
        status: str | None = None,
        heartbeat_age_seconds: float | None = None,
    ):
        super().__init__(f"another job is active: {active_job_id}")
        self.active_job_id = active_job_id
        self.status = status
        self.heartbeat_age_seconds = heartbeat_age_seconds


class JobStateError(Exception):
    """The job is not in a state that allows what was asked."""


# How long a cancel waits for the job row before answering JobBusy (a heartbeat holds it briefly).
CANCEL_LOCK_WAIT = "1s"


class JobBusy(JobStateError):
    """Another transaction holds the job's row right now; the same request succeeds later."""


class RolledBack(JobStateError):
    """The job was the target of a real rollback: continuing it would migrate a part of it."""


class JobNotFound(Exception):
    """No job has this id."""


class LeaseLost(Exception):
    """This process no longer owns the job's run (it was declared stale or resumed elsewhere)."""


class Unfinished(Exception):
    """The run saw every partition finish, but the database lost some of its last batches."""


class Superseded(Exception):
    """The partition moved on since this batch began: an earlier attempt of it committed late.

    Not a lost lease: the run still owns the job, and goes on from the cursor the database holds.
    """


class LaterRunsRelyOn(JobStateError):
    """Later real runs counted the targets' goals as duplicates: rolling back alone strands them."""

    def __init__(self, targets: Sequence[uuid.UUID], later: Sequence[uuid.UUID]):
        self.targets = list(targets)
        self.later = list(later)
        together = ",".join(str(j) for j in (*targets, *later))
        super().__init__(
            f"later real runs ({', '.join(map(str, later))}) counted goals of "
            f"{'these jobs' if len(targets) > 1 else 'this job'} as duplicates and created none "
            "for those items: rolling back alone would leave those items without a goal. Either "
            f"roll them back together (POST /admin/migrations/goals/rollback?jobs={together}; "
            f"command line: --rollback {together}), or roll back alone and run a migration "
            "again afterwards to create the goals (keep_later_runs=true; command line: "
            "--keep-later-runs)"
        )


# A migration counts as rolled back once a real rollback of it succeeded or deleted any of its
# goals. A rollback cancelled before it deleted anything leaves its target as it was: still
# resumable, still judged by verification.
_TOOK_EFFECT = """NOT r.dry_run AND (r.status = 'succeeded' OR EXISTS (
          SELECT 1 FROM migration_job_partitions AS rp
          WHERE rp.job_id = r.id AND rp.goals_deleted > 0))"""
ROLLED_BACK_SQL = (
    "EXISTS (SELECT 1 FROM migration_jobs AS r WHERE {job}.id = ANY(r.target_job_ids) AND "
    + _TOOK_EFFECT
    + ")"
)

# Real migrations, outside the targets, that ran after a target whose goals are still there,
# counted duplicates, and were never rolled back: their duplicates may be those goals. (Runs
# keep no record of which goal a duplicate matched; this errs on the side of refusing.)
_LATER_RUNS_SQL = f"""
SELECT b.id FROM migration_jobs AS b
WHERE b.kind = 'migrate' AND NOT b.dry_run AND b.id <> ALL(:targets)
  AND EXISTS (SELECT 1 FROM migration_jobs AS a
              WHERE a.id = ANY(:targets) AND a.created_at < b.created_at
                AND EXISTS (SELECT 1 FROM treatment_goals AS g WHERE g.source_job_id = a.id))
  AND EXISTS (SELECT 1 FROM migration_job_partitions AS bp
              WHERE bp.job_id = b.id AND bp.goals_skipped_duplicate > 0)
  AND NOT {ROLLED_BACK_SQL.format(job="b")}
ORDER BY b.created_at
"""


@dataclass(frozen=True)
class Partition:
    """A partition row as a worker needs it."""

    number: int
    range_start: uuid.UUID
    range_end: uuid.UUID
    cursor: uuid.UUID | None
    done: bool
    findings_stored: int
    preview_stored: int
    errors: int


async def _active_job(conn: AsyncConnection) -> ActiveJobExists:
    """The exception naming the job that holds the one-active-job guard, and how alive it is."""
    row = (
        await conn.execute(
            text(
                "SELECT id, status, "
                "extract(epoch FROM clock_timestamp() - heartbeat_at)::float AS age "
                f"FROM migration_jobs WHERE status IN {_ACTIVE} LIMIT 1"
            )
        )
    ).one_or_none()
    return ActiveJobExists(*row) if row else ActiveJobExists(None)


async def audit(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    actor: str,
    action: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry to the audit trail."""
    await conn.execute(
        text(
            "INSERT INTO migration_audit (job_id, actor, action, details) "
            "VALUES (:job_id, :actor, :action, CAST(:details AS jsonb))"
        ),
        {"job_id": job_id, "actor": actor, "action": action, "details": json.dumps(details or {})},
    )


async def create_job(
    conn: AsyncConnection,
    *,
    kind: str,
    dry_run: bool,
    batch_size: int,
    requested_by: str,
    partition_count: int,
    split: tuple[uuid.UUID, uuid.UUID] | None = None,
    pause_ms: int = 0,
    max_errors: int = 1000,
    force: bool = False,
    targets: Sequence[uuid.UUID] = (),
    adaptive: bool = False,
    limits: dict[str, Any] | None = None,
    **extra: Any,
) -> tuple[uuid.UUID, uuid.UUID]:
    """Insert a queued job and its partitions; return (job id, run token).

    `targets` are the jobs a rollback takes back. `split` is the span of keys the partitions
    share out evenly (default: the whole uuid space). `extra` parameters are only audited.

    The partial unique index on active jobs makes this the single point where two admins,
    workers or replicas race: exactly one insert wins, the rest get ActiveJobExists.
    """
    token = uuid.uuid4()
    params = {
        "kind": kind,
        "dry_run": dry_run,
        "batch_size": batch_size,
        "requested_by": requested_by,
        "pause_ms": pause_ms,
        "max_errors": max_errors,
        "force": force,
        "target_job_id": targets[0] if targets else None,
        "targets": list(targets) or None,
        "token": token,
        "adaptive": adaptive,
        "limits": limits,
    }
    try:
        async with conn.begin_nested():
            job_id = (
                await conn.execute(
                    text(
                        "INSERT INTO migration_jobs (kind, dry_run, batch_size, requested_by, "
                        "pause_ms, max_errors, force, target_job_id, target_job_ids, run_token, "
                        "heartbeat_at, adaptive, limits) "
                        "VALUES (:kind, :dry_run, :batch_size, :requested_by, :pause_ms, "
                        ":max_errors, :force, :target_job_id, :targets, :token, now(), "
                        ":adaptive, CAST(:limits AS jsonb)) "
                        "RETURNING id"
                    ),
                    {**params, "limits": json.dumps(limits) if limits is not None else None},
                )
            ).scalar_one()
            await conn.execute(
                text(
                    "INSERT INTO migration_job_partitions "
                    "(job_id, partition, range_start, range_end, run_token) "
                    "VALUES (:job_id, :partition, :start, :end, :token)"
                ),
                [
                    {"job_id": job_id, "partition": i, "start": s, "end": e, "token": token}
                    for i, (s, e) in enumerate(
                        partitions.ranges(partition_count, lo=split[0], hi=split[1])
                        if split
                        else partitions.ranges(partition_count)
                    )
                ],
            )
            details = {
                k: v for k, v in params.items() if k not in ("token", "requested_by", "targets")
            }
            details["target_job_ids"] = [str(t) for t in targets]
            details.update({k: str(v) if isinstance(v, uuid.UUID) else v for k, v in extra.items()})
            details["target_job_id"] = str(targets[0]) if targets else None
            await audit(conn, job_id=job_id, actor=requested_by, action="start", details=details)
            for target in targets:
                await audit(
                    conn,
                    job_id=target,
                    actor=requested_by,
                    action="rollback",
                    details={"rollback_job_id": str(job_id), "force": force, "dry_run": dry_run},
                )
    except IntegrityError as exc:
        if "uq_migration_jobs_one_active" not in str(exc.orig):
            raise
        raise await _active_job(conn) from None
    return job_id, token


async def check_rollback_targets(
    conn: AsyncConnection,
    *,
    targets: Sequence[uuid.UUID],
    dry_run: bool = True,
    keep_later_runs: bool = False,
) -> None:
    """Refuse unless every target is a finished real migration job; revoke their leases.

    A real rollback is also refused (LaterRunsRelyOn) while later runs rely on the targets'
    goals, unless `keep_later_runs` says a migration will be run again afterwards.
    """
    if not targets:
        raise JobStateError("name at least one job to roll back")
    for job_id in dict.fromkeys(targets):
        await check_rollback_target(conn, job_id=job_id)
    if not dry_run and not keep_later_runs:
        await refuse_stranding(conn, targets=targets)


async def refuse_stranding(conn: AsyncConnection, *, targets: Sequence[uuid.UUID]) -> None:
    """Raise LaterRunsRelyOn when later real runs counted the targets' goals as duplicates."""
    later = (await conn.execute(text(_LATER_RUNS_SQL), {"targets": list(targets)})).scalars()
    later = list(later)
    if later:
        raise LaterRunsRelyOn(targets, later)


async def job_state(conn: AsyncConnection, *, job_id: uuid.UUID) -> Any:
    """A job's kind, dry_run, status and targets, or None for an unknown id."""
    return (
        await conn.execute(
            text(
                "SELECT kind, dry_run, status, target_job_ids FROM migration_jobs "
                "WHERE id = :job_id"
            ),
            {"job_id": job_id},
        )
    ).one_or_none()


async def check_rollback_target(conn: AsyncConnection, *, job_id: uuid.UUID) -> None:
    """Refuse to roll back anything but a finished real migration job; revoke its leases."""
    row = await job_state(conn, job_id=job_id)
    if row is None:
        raise JobNotFound(job_id)
    if row.kind != "migrate":
        raise JobStateError("a rollback job cannot be rolled back")
    if row.dry_run:
        raise JobStateError("a dry run created no goals; there is nothing to roll back")
    if row.status in ACTIVE_STATUSES:
        raise JobStateError(f"the job is {row.status}; cancel it or wait for it to end first")
    # No run of the target may commit again once its goals start going: revoke any lease left.
    if not await _lock_partitions(conn, job_id):
        raise JobStateError("a batch of the job is still committing; try again in a few seconds")
    await conn.execute(
        text("UPDATE migration_jobs SET run_token = NULL WHERE id = :job_id"), {"job_id": job_id}
    )
    await _revoke_partitions(conn, job_id=job_id)


async def claim(conn: AsyncConnection, *, job_id: uuid.UUID, token: uuid.UUID) -> dict | None:
    """Move a queued job to running under `token`; return its row, or None if not ours."""
    row = (
        (
            await conn.execute(
                text(
                    "UPDATE migration_jobs SET status = 'running', throttle = NULL, "
                    "started_at = coalesce(started_at, now()), run_started_at = now(), "
                    "heartbeat_at = now(), run_start_processed = ("
                    "  SELECT coalesce(sum(sessions_processed + goals_deleted"
                    "                      + goals_kept_modified), 0)"
                    "  FROM migration_job_partitions WHERE job_id = :job_id) "
                    "WHERE id = :job_id AND status = 'queued' AND run_token = :token "
                    "RETURNING *"
                ),
                {"job_id": job_id, "token": token},
            )
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row else None


async def set_total(
    conn: AsyncConnection, *, job_id: uuid.UUID, token: uuid.UUID, total: int
) -> None:
    """Record how many units (sessions, or goals for a rollback) the job has to go through.

    Fenced like every write of a run: LeaseLost once the run's token is gone.
    """
    updated = await conn.execute(
        text(
            "UPDATE migration_jobs SET sessions_total = :total "
            f"WHERE id = :job_id AND run_token = :token AND status IN {_RUNNING} RETURNING 1"
        ),
        {"job_id": job_id, "token": token, "total": total},
    )
    if updated.first() is None:
        raise LeaseLost(job_id)


_PARTITION_SELECT = (
    "SELECT partition, range_start, range_end, cursor, done, findings_stored, preview_stored, "
    "errors FROM migration_job_partitions WHERE job_id = :job_id"
)


async def load_partitions(conn: AsyncConnection, *, job_id: uuid.UUID) -> list[Partition]:
    """The job's partitions, in order."""
    rows = await conn.execute(text(_PARTITION_SELECT + " ORDER BY partition"), {"job_id": job_id})
    return [Partition(*row) for row in rows]


async def load_partition(conn: AsyncConnection, *, job_id: uuid.UUID, partition: int) -> Partition:
    """One partition as the database holds it now."""
    row = await conn.execute(
        text(_PARTITION_SELECT + " AND partition = :partition"),
        {"job_id": job_id, "partition": partition},
    )
    return Partition(*row.one())


async def save_progress(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    partition: int,
    token: uuid.UUID,
    started_from: uuid.UUID | None,
    cursor: uuid.UUID | None,
    done: bool,
    stats: dict[str, int],
    findings_stored: int = 0,
    preview_stored: int = 0,
    batch: tuple[int, int, float] | None = None,
    async_commit: bool = False,
) -> str:
    """Add a batch's counters and move the cursor, inside the batch's own transaction.

    Returns the job's status, so a worker notices a cancel request at this very boundary.
    Raises LeaseLost when the partition no longer carries this run's token, and Superseded when
    it no longer stands where this batch started (`started_from`, the cursor the batch read):
    an earlier attempt of the same batch, its COMMIT's answer lost, committed after all. Either
    way the caller's transaction must roll back, taking the batch's goals with it. The update
    waits on the row lock of such an attempt still committing, then re-reads the row.
    `batch` (the size it asked for, the rows it went through, its seconds so far) is recorded in
    migration_batches with the transaction's time, which is also when a real run's goals were
    inserted (rollback relies on it); `async_commit` makes the transaction commit without
    waiting for its WAL to reach disk (runner.py says when that is safe). Both ride on this one
    statement, so a batch costs no extra round trip for them.
    """
    assignments = ", ".join(f"{name} = {name} + :{name}" for name in COUNTERS)
    params = {name: stats.get(name, 0) for name in COUNTERS}
    result = await conn.execute(
        text(
            f"WITH saved AS (UPDATE migration_job_partitions SET {assignments}, "
            "cursor = coalesce(:cursor, cursor), done = :done, "
            "findings_stored = findings_stored + :findings_stored, "
            "preview_stored = preview_stored + :preview_stored "
            "WHERE job_id = :job_id AND partition = :partition AND run_token = :token "
            "AND cursor IS NOT DISTINCT FROM :started_from AND NOT done "
            "RETURNING (SELECT status FROM migration_jobs WHERE id = :job_id) AS status), "
            "recorded AS (INSERT INTO migration_batches "
            "(job_id, partition, inserted_at, batch_size, processed, seconds) "
            "SELECT :job_id, :partition, now(), :batch_size, :processed, :seconds "
            "FROM saved WHERE :record_batch) "
            "SELECT status, CASE WHEN :async_commit "
            "THEN set_config('synchronous_commit', 'off', true) END FROM saved"
        ),
        {
            **params,
            "job_id": job_id,
            "partition": partition,
            "token": token,
            "started_from": started_from,
            "cursor": cursor,
            "done": done,
            "findings_stored": findings_stored,
            "preview_stored": preview_stored,
            "record_batch": batch is not None,
            "batch_size": batch[0] if batch else None,
            "processed": batch[1] if batch else None,
            "seconds": batch[2] if batch else None,
            "async_commit": async_commit,
        },
    )
    status = result.scalar_one_or_none()
    if status is None:
        owned = await conn.execute(
            text(
                "SELECT 1 FROM migration_job_partitions "
                "WHERE job_id = :job_id AND partition = :partition AND run_token = :token"
            ),
            {"job_id": job_id, "partition": partition, "token": token},
        )
        raise (Superseded if owned.first() else LeaseLost)(job_id)
    return status


async def heartbeat(conn: AsyncConnection, *, job_id: uuid.UUID, token: uuid.UUID) -> Any:
    """Refresh the heartbeat; return the job's status and limits, or None when the lease is lost.

    The limits come back with every beat, so a change made while the job runs (set_limits)
    reaches it within a heartbeat.
    """
    return (
        await conn.execute(
            text(
                "UPDATE migration_jobs SET heartbeat_at = now() "
                "WHERE id = :job_id AND run_token = :token "
                f"AND status IN {_RUNNING} RETURNING status, limits"
            ),
            {"job_id": job_id, "token": token},
        )
    ).one_or_none()


async def set_throttle(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    token: uuid.UUID,
    throttle: dict[str, Any] | None,
    audit_action: str | None,
    details: dict[str, Any] | None = None,
) -> bool:
    """Show what the run waits on (None: nothing); audit it when it changed. False: not ours."""
    updated = await conn.execute(
        text(
            "UPDATE migration_jobs SET throttle = CAST(:throttle AS jsonb) "
            f"WHERE id = :job_id AND run_token = :token AND status IN {_RUNNING} RETURNING 1"
        ),
        {"job_id": job_id, "token": token, "throttle": json.dumps(throttle) if throttle else None},
    )
    if updated.first() is None:
        return False
    if audit_action:
        await audit(conn, job_id=job_id, actor="system", action=audit_action, details=details)
    return True


async def set_limits(
    conn: AsyncConnection, *, job_id: uuid.UUID, actor: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change a job's health thresholds; a running job applies them within a heartbeat.

    Allowed while the job is active or can be resumed; audited with the old and new values.
    Returns the limits the job had stored before ({} for a job that kept the settings').
    """
    row = (
        await conn.execute(
            text("SELECT status, limits FROM migration_jobs WHERE id = :job_id FOR NO KEY UPDATE"),
            {"job_id": job_id},
        )
    ).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    if row.status not in (*ACTIVE_STATUSES, *RESUMABLE_STATUSES):
        raise JobStateError(f"the job is {row.status}; its limits no longer apply to anything")
    before = row.limits or {}
    await conn.execute(
        text(
            "UPDATE migration_jobs SET limits = coalesce(limits, '{}'::jsonb) || "
            "CAST(:changes AS jsonb) WHERE id = :job_id"
        ),
        {"job_id": job_id, "changes": json.dumps(changes)},
    )
    details = {name: {"from": before.get(name), "to": value} for name, value in changes.items()}
    await audit(conn, job_id=job_id, actor=actor, action="limits", details=details)
    return before


async def finish(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    token: uuid.UUID,
    status: str,
    error: str | None = None,
) -> bool:
    """End this run with `status` and give up its lease; audit what the system decided.

    False (and nothing written) when the lease is already gone. A job succeeds only when the
    database holds every partition done: batches commit asynchronously (runner.py), and a
    server crash can take the last of them with it after the run saw them commit. Then this
    raises Unfinished, and the run goes on from the cursors that survived.
    """
    done = (
        await conn.execute(
            text(
                "UPDATE migration_jobs SET status = :status, error = :error, run_token = NULL, "
                "finished_at = now(), heartbeat_at = now(), throttle = NULL "
                "WHERE id = :job_id AND run_token = :token "
                f"AND status IN {_RUNNING} "
                "AND (:status <> 'succeeded' OR NOT EXISTS ("
                "  SELECT 1 FROM migration_job_partitions WHERE job_id = :job_id AND NOT done)) "
                "RETURNING kind, dry_run, target_job_id"
            ),
            {"job_id": job_id, "token": token, "status": status, "error": error},
        )
    ).one_or_none()
    if done is None:
        if status == "succeeded" and await _holds_lease(conn, job_id=job_id, token=token):
            raise Unfinished(job_id)
        return False
    await _revoke_partitions(conn, job_id=job_id)
    if done.kind == "rollback" and status == "succeeded" and not done.dry_run:
        await conn.execute(
            text(
                "UPDATE migration_jobs SET rolled_back_by = :job_id WHERE id = ANY("
                "  SELECT unnest(target_job_ids) FROM migration_jobs WHERE id = :job_id)"
            ),
            {"job_id": job_id},
        )
    if status != "succeeded":
        await audit(conn, job_id=job_id, actor="system", action=status, details={"error": error})
    return True


async def _holds_lease(conn: AsyncConnection, *, job_id: uuid.UUID, token: uuid.UUID) -> bool:
    return (
        await conn.execute(
            text(
                "SELECT 1 FROM migration_jobs WHERE id = :job_id AND run_token = :token "
                f"AND status IN {_RUNNING}"
            ),
            {"job_id": job_id, "token": token},
        )
    ).first() is not None


async def trim_findings(conn: AsyncConnection, *, job_id: uuid.UUID, keep: int) -> None:
    """Keep a job's first `keep` findings; partitions may together have stored more."""
    await conn.execute(
        text(
            "DELETE FROM migration_findings WHERE job_id = :job_id AND id > ("
            "  SELECT id FROM migration_findings WHERE job_id = :job_id"
            "  ORDER BY id OFFSET :keep - 1 LIMIT 1)"
        ),
        {"job_id": job_id, "keep": keep},
    )


async def request_cancel(
    conn: AsyncConnection, *, job_id: uuid.UUID, actor: str, stale_after_seconds: float
) -> str:
    """Ask an active job to stop at its next batch boundary.

    A queued job, or one whose process stopped beating, is cancelled at once (its lease revoked
    in this transaction, so a frozen process that wakes up later cannot commit another batch).
    Waits at most CANCEL_LOCK_WAIT for the job row: a heartbeat holds it for milliseconds, but a
    process frozen between its heartbeat and that heartbeat's commit holds it until PostgreSQL
    ends the idle transaction, and the caller is then told to try again in a few seconds
    (JobBusy) instead of hanging that long.
    """
    await conn.execute(
        text("SELECT set_config('lock_timeout', :wait, true)"), {"wait": CANCEL_LOCK_WAIT}
    )
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    text(
                        "SELECT status, "
                        "heartbeat_at < now() - make_interval(secs => :stale) AS stale "
                        # NO KEY: every batch holds a key-share lock on its job's row (the
                        # foreign keys of what it inserts); this must not wait on that.
                        "FROM migration_jobs WHERE id = :job_id FOR NO KEY UPDATE"
                    ),
                    {"job_id": job_id, "stale": stale_after_seconds},
                )
            ).one_or_none()
    except DBAPIError as exc:
        if errors.error_info(exc).sqlstate != "55P03":
            raise
        raise JobBusy(
            "the job's process is writing to it right now; try again in a few seconds"
        ) from None
    if row is None:
        raise JobNotFound(job_id)
    if row.status not in ACTIVE_STATUSES:
        raise JobStateError(f"the job is {row.status}, not active; there is nothing to cancel")
    at_once = row.status == "queued" or (row.stale and await _lock_partitions(conn, job_id))
    if at_once:
        await _revoke(conn, job_id=job_id, status="cancelled")
        status = "cancelled"
    else:
        await conn.execute(
            text("UPDATE migration_jobs SET status = 'cancelling' WHERE id = :job_id"),
            {"job_id": job_id},
        )
        status = "cancelling"
    await audit(conn, job_id=job_id, actor=actor, action="cancel")
    return status


async def _lock_partitions(conn: AsyncConnection, job_id: uuid.UUID) -> bool:
    """Lock all of a job's partition rows now, or report that a batch holds one.

    A batch holds its partition row from save_progress() to its commit. If its process froze in
    that instant, waiting would hang the caller; PostgreSQL ends that transaction once it has
    been idle for the run's idle timeout (runner.py), and a later call succeeds.
    """
    row = (
        await conn.execute(
            text(
                "WITH locked AS (SELECT 1 FROM migration_job_partitions WHERE job_id = :job_id "
                "                FOR UPDATE SKIP LOCKED) "
                "SELECT (SELECT count(*) FROM locked) = "
                "       (SELECT count(*) FROM migration_job_partitions WHERE job_id = :job_id)"
            ),
            {"job_id": job_id},
        )
    ).scalar_one()
    return bool(row)


async def _revoke_partitions(conn: AsyncConnection, *, job_id: uuid.UUID) -> None:
    await conn.execute(
        text("UPDATE migration_job_partitions SET run_token = NULL WHERE job_id = :job_id"),
        {"job_id": job_id},
    )


async def _revoke(
    conn: AsyncConnection, *, job_id: uuid.UUID, status: str, error: str | None = None
) -> None:
    """End an active job's run from outside it: new status, no lease left on job or partitions."""
    await conn.execute(
        text(
            "UPDATE migration_jobs SET status = :status, run_token = NULL, finished_at = now(), "
            "throttle = NULL, error = coalesce(:error, error) WHERE id = :job_id"
        ),
        {"job_id": job_id, "status": status, "error": error},
    )
    await _revoke_partitions(conn, job_id=job_id)


async def resume(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    actor: str,
    pause_ms: int | None = None,
    max_errors: int | None = None,
    batch_size: int | None = None,
) -> uuid.UUID:
    """Queue a stopped job again under a new token; its cursors and counters carry on.

    A new pause_ms, max_errors or batch_size, when given, applies from this run on and is
    audited (batches always end at a patient boundary, so any size continues exactly).
    """
    token = uuid.uuid4()
    rollback_id = (
        await conn.execute(
            text(
                "SELECT r.id FROM migration_jobs AS r "
                f"WHERE :job_id = ANY(r.target_job_ids) AND {_TOOK_EFFECT} "
                "ORDER BY r.created_at LIMIT 1"
            ),
            {"job_id": job_id},
        )
    ).scalar_one_or_none()
    if rollback_id is not None:
        raise RolledBack(
            f"the job was rolled back by job {rollback_id}; resuming it would migrate only the "
            "patients after its cursor. Start a new migration job instead"
        )
    job = await job_state(conn, job_id=job_id)
    if job is not None and job.kind == "rollback" and not job.dry_run:
        # Runs may have relied on the targets' goals since this rollback stopped, unless its
        # start said a migration runs again afterwards (kept in its start audit entry).
        kept = await conn.execute(
            text(
                "SELECT 1 FROM migration_audit WHERE job_id = :job_id AND action = 'start' "
                "AND (details ->> 'keep_later_runs')::boolean"
            ),
            {"job_id": job_id},
        )
        if kept.first() is None:
            await refuse_stranding(conn, targets=job.target_job_ids)
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    text(
                        "UPDATE migration_jobs SET status = 'queued', run_token = :token, "
                        "error = NULL, finished_at = NULL, heartbeat_at = now(), "
                        "pause_ms = coalesce(:pause_ms, pause_ms), "
                        "max_errors = coalesce(:max_errors, max_errors), "
                        "batch_size = coalesce(:batch_size, batch_size) "
                        f"WHERE id = :job_id AND status IN {_RESUMABLE} RETURNING id"
                    ),
                    {
                        "job_id": job_id,
                        "token": token,
                        "pause_ms": pause_ms,
                        "max_errors": max_errors,
                        "batch_size": batch_size,
                    },
                )
            ).one_or_none()
            if row is None:
                exists = await conn.execute(
                    text("SELECT 1 FROM migration_jobs WHERE id = :job_id"), {"job_id": job_id}
                )
                if exists.scalar_one_or_none() is None:
                    raise JobNotFound(job_id)
                raise JobStateError("only a cancelled, interrupted or failed job can be resumed")
            # The old run's lease was revoked when it stopped; this run's token takes its place.
            await conn.execute(
                text(
                    "UPDATE migration_job_partitions SET run_token = :token WHERE job_id = :job_id"
                ),
                {"job_id": job_id, "token": token},
            )
            changes = {"pause_ms": pause_ms, "max_errors": max_errors, "batch_size": batch_size}
            details = {k: v for k, v in changes.items() if v is not None}
            await audit(conn, job_id=job_id, actor=actor, action="resume", details=details)
    except IntegrityError as exc:
        if "uq_migration_jobs_one_active" not in str(exc.orig):
            raise
        raise await _active_job(conn) from None
    return token


async def mark_stale_interrupted(conn: AsyncConnection, *, stale_after_seconds: float) -> list:
    """Mark active jobs whose heartbeat stopped as interrupted, revoking their leases.

    The process may only be frozen (SIGSTOP, a paused VM, a laptop asleep), not gone: revoking
    its lease here is what keeps it from committing the batch it has in flight when it wakes.
    Never waits on a lock: jobs that are locked right now are left for a later call.
    """
    stale = (
        await conn.execute(
            text(
                "SELECT id, 'the process running this job stopped (no heartbeat since '"
                " || to_char(heartbeat_at AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') || ')' AS error "
                f"FROM migration_jobs WHERE status IN {_ACTIVE} "
                "AND heartbeat_at < now() - make_interval(secs => :stale) "
                # NO KEY: a frozen batch still holds a key-share lock on its job's row.
                "FOR NO KEY UPDATE SKIP LOCKED"
            ),
            {"stale": stale_after_seconds},
        )
    ).all()
    ids = []
    for job_id, error in stale:
        if not await _lock_partitions(conn, job_id):
            continue
        await _revoke(conn, job_id=job_id, status="interrupted", error=error)
        ids.append(job_id)
    for job_id in ids:
        await audit(
            conn,
            job_id=job_id,
            actor="system",
            action="interrupted",
            details={"reason": "stale heartbeat"},
        )
    return list(ids)
