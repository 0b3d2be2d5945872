"""Running a job: its partitions side by side, a heartbeat, and a clean stop at batch boundaries.

`run_job` is the one way any job runs, whether the API started it in the background of the
serving process or the CLI in the foreground. Each partition worker loops: find the next batch,
run it and save its counters and cursor in the same transaction, then check whether to stop.
A stop (cancel, shutdown, Ctrl-C, too many errors, lost lease) always lands between batches,
so what is committed and what the counters say never disagree.
"""

import asyncio
import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.config import Settings
from app.jobs import engine, partitions, rollback, store

log = logging.getLogger("app.jobs")


class Stop(enum.Enum):
    CANCEL = "cancelled"
    SHUTDOWN = "interrupted"
    MAX_ERRORS = "failed"
    LEASE_LOST = "lost"


@dataclass
class BatchEvent:
    """What a progress callback hears after each committed batch."""

    job: dict[str, Any]
    partition: int
    stats: dict[str, int]
    report: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    job: dict[str, Any]
    token: uuid.UUID
    stop: asyncio.Event
    on_batch: Callable[[BatchEvent], None] | None
    report: bool
    reason: Stop | None = None
    errors_this_run: int = 0

    def halt(self, reason: Stop) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


def describe_failure(exc: BaseException) -> str:
    """A job-level error in words an operator can act on, without any clinical text."""
    if isinstance(exc, DBAPIError):
        info = engine.error_info(exc)
        if info.sqlstate == "42P01":
            relation = engine.missing_relation(exc) or "treatment_goals"
            return f"relation '{relation}' does not exist; run: alembic upgrade head"
        if exc.connection_invalidated or info.sqlstate is None:
            return f"database connection lost: {info.error_class}"
        return f"database error: {info}"
    if isinstance(exc, OSError):
        return f"database unreachable: {exc.strerror or exc}"
    return f"internal error: {type(exc).__name__}"


async def run_job(
    db: AsyncEngine,
    settings: Settings,
    *,
    job_id: uuid.UUID,
    token: uuid.UUID,
    stop: asyncio.Event | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[BatchEvent], None] | None = None,
    report: bool = False,
) -> str | None:
    """Run (or continue) a queued job to its end; return its final status.

    Returns None when the job was not ours to run (already claimed or its token replaced).
    Setting `stop` ends the run at the next batch boundary as interrupted. `on_start` gets the
    claimed job, its sessions_total known, before the first batch; `on_batch` each batch.
    """
    async with db.begin() as conn:
        job = await store.claim(conn, job_id=job_id, token=token)
    if job is None:
        return None
    run = _Run(job=job, token=token, stop=asyncio.Event(), on_batch=on_batch, report=report)
    log.info("job %s started: kind=%s dry_run=%s", job_id, job["kind"], job["dry_run"])
    outside_stop = asyncio.create_task(_relay(stop, run)) if stop else None
    beat = asyncio.create_task(_heartbeat(db, settings, run))
    failure: BaseException | None = None
    try:
        if job["sessions_total"] is None:
            async with db.begin() as conn:
                total = await (
                    engine.count_candidates(conn)
                    if job["kind"] == "migrate"
                    else rollback.count_goals(conn, target_job_id=job["target_job_id"])
                )
                await store.set_total(conn, job_id=job_id, total=total)
            job["sessions_total"] = total
        if on_start:
            on_start(job)
        async with db.connect() as conn:
            parts = await store.load_partitions(conn, job_id=job_id)
        results = await asyncio.gather(
            *(_work(db, run, p) for p in parts if not p.done),
            return_exceptions=True,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
    except (SQLAlchemyError, OSError) as exc:
        failure = exc
    finally:
        beat.cancel()
        if outside_stop:
            outside_stop.cancel()

    if isinstance(failure, store.LeaseLost) or run.reason is Stop.LEASE_LOST:
        log.warning("job %s: lease lost, another run owns it now", job_id)
        return None
    if failure is not None and not isinstance(failure, asyncio.CancelledError):
        status, error = "failed", describe_failure(failure)
        log.error("job %s failed: %s", job_id, error)
    elif run.reason is None:
        status, error = "succeeded", None
    elif run.reason is Stop.MAX_ERRORS:
        status = "failed"
        error = (
            f"more than max_errors={job['max_errors']} sessions failed in this run "
            f"({run.errors_this_run}); see the job's issues, fix the cause, then resume"
        )
    else:
        status, error = run.reason.value, None
    try:
        async with db.begin() as conn:
            await store.finish(conn, job_id=job_id, token=token, status=status, error=error)
            await store.trim_findings(conn, job_id=job_id, keep=engine.FINDINGS_CAP)
    except (SQLAlchemyError, OSError) as exc:
        # The heartbeat stops with us; another instance will mark the job interrupted.
        log.error("job %s: could not record its end (%s)", job_id, describe_failure(exc))
        return None
    async with db.connect() as conn:
        final = await store.get_job(conn, job_id=job_id)
    counts = ", ".join(f"{n}={final[n]}" for n in store.COUNTERS if final[n])
    log.info("job %s ended: %s (%s)", job_id, status, counts or "nothing to do")
    return status


async def _relay(stop: asyncio.Event, run: _Run) -> None:
    await stop.wait()
    run.halt(Stop.SHUTDOWN)


async def _heartbeat(db: AsyncEngine, settings: Settings, run: _Run) -> None:
    """Keep the lease fresh and notice a cancel request or a lost lease between batches."""
    while True:
        await asyncio.sleep(settings.heartbeat_seconds)
        try:
            async with db.begin() as conn:
                status = await store.heartbeat(conn, job_id=run.job["id"], token=run.token)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("job %s: heartbeat failed (%s)", run.job["id"], describe_failure(exc))
            continue
        if status is None:
            run.halt(Stop.LEASE_LOST)
        elif status == "cancelling":
            run.halt(Stop.CANCEL)


@dataclass
class _Batch:
    """One committed batch, as the worker loop needs it. cursor None: the partition is done."""

    cursor: uuid.UUID | None
    job_status: str
    stats: dict[str, int] = field(default_factory=dict)
    report: list[dict[str, Any]] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)


async def _work(db: AsyncEngine, run: _Run, part: store.Partition) -> None:
    """Walk one partition batch by batch until it is done or the run is told to stop."""
    job = run.job
    step = _migrate_batch if job["kind"] == "migrate" else _rollback_batch
    kept = {"findings": part.findings_stored, "preview": part.preview_stored}
    cursor = part.cursor
    try:
        while not run.stop.is_set():
            lo = part.range_start if cursor is None else partitions.after(cursor)
            async with db.connect() as conn, conn.begin():
                batch = await step(conn, run, part, lo, kept)
            if batch.failed:
                run.errors_this_run += len(batch.failed)
                log.warning(
                    "job %s: %d session(s) failed and were rolled back: %s",
                    job["id"],
                    len(batch.failed),
                    ", ".join(map(str, batch.failed)),
                )
            if batch.cursor is not None and run.on_batch:
                run.on_batch(BatchEvent(job, part.number, batch.stats, batch.report))
            if batch.job_status == "cancelling":
                run.halt(Stop.CANCEL)
            if run.errors_this_run > job["max_errors"]:
                run.halt(Stop.MAX_ERRORS)
            if batch.cursor is None or batch.cursor == part.range_end:
                return
            cursor = batch.cursor
            if job["pause_ms"] and not run.stop.is_set():
                await asyncio.sleep(job["pause_ms"] / 1000)
    except BaseException:
        run.stop.set()  # one partition failing ends the run for all of them
        raise


async def _migrate_batch(
    conn: AsyncConnection, run: _Run, part: store.Partition, lo: uuid.UUID | None, kept: dict
) -> _Batch:
    """Migrate the next whole patients of this partition, or mark it done."""
    job = run.job
    hi = None
    if lo is not None and lo <= part.range_end:
        hi = await engine.next_bound(conn, lo=lo, end=part.range_end, batch_size=job["batch_size"])
    if hi is None:
        return _Batch(None, await _save(conn, run, part, cursor=None, done=True, stats={}))
    result = await engine.run_batch(
        conn,
        job_id=job["id"],
        lo=lo,
        hi=hi,
        dry_run=job["dry_run"],
        findings_room=engine.FINDINGS_CAP - kept["findings"],
        preview_room=engine.PREVIEW_CAP - kept["preview"],
        report=run.report,
    )
    status = await _save(
        conn,
        run,
        part,
        cursor=hi,
        done=hi == part.range_end,
        stats=result.stats,
        findings_stored=result.findings_stored,
        preview_stored=result.preview_stored,
        record_batch=not job["dry_run"] and result.stats["goals_created"] > 0,
    )
    kept["findings"] += result.findings_stored
    kept["preview"] += result.preview_stored
    return _Batch(hi, status, result.stats, result.report, result.failed_sessions)


async def _rollback_batch(
    conn: AsyncConnection, run: _Run, part: store.Partition, lo: uuid.UUID | None, kept: dict
) -> _Batch:
    """Delete (or count) the next goals of the target job in this partition."""
    job = run.job
    if lo is None:
        return _Batch(None, await _save(conn, run, part, cursor=None, done=True, stats={}))
    batch = await rollback.run_batch(
        conn,
        target_job_id=job["target_job_id"],
        lo=lo,
        end=part.range_end,
        batch_size=job["batch_size"],
        force=job["force"],
        dry_run=job["dry_run"],
    )
    done = batch.last_id is None or batch.last_id == part.range_end
    status = await _save(conn, run, part, cursor=batch.last_id, done=done, stats=batch.stats)
    return _Batch(batch.last_id, status, batch.stats)


async def _save(conn: AsyncConnection, run: _Run, part: store.Partition, **kwargs) -> str:
    return await store.save_progress(
        conn, job_id=run.job["id"], partition=part.number, token=run.token, **kwargs
    )


async def create_job(
    db: AsyncEngine, settings: Settings, **params: Any
) -> tuple[uuid.UUID, uuid.UUID]:
    """Check and create a queued job in its own transaction; return (job id, run token).

    Raises store.ActiveJobExists, and for rollbacks store.JobNotFound or store.JobStateError.
    """
    params.setdefault("partition_count", settings.job_partitions)
    async with db.begin() as conn:
        await recover_stale(conn, settings)
        if params.get("kind") == "rollback":
            await store.check_rollback_target(conn, job_id=params["target_job_id"])
        return await store.create_job(conn, **params)


async def resume_job(
    db: AsyncEngine, settings: Settings, *, job_id: uuid.UUID, actor: str
) -> uuid.UUID:
    """Queue a stopped job again in its own transaction; return the new run token.

    Raises store.ActiveJobExists, store.JobNotFound or store.JobStateError.
    """
    async with db.begin() as conn:
        await recover_stale(conn, settings)
        return await store.resume(conn, job_id=job_id, actor=actor)


async def recover_stale(conn: AsyncConnection, settings: Settings) -> list[uuid.UUID]:
    """Mark jobs whose process is gone as interrupted, so they neither block nor mislead.

    Runs before every start and resume, so a dead job never holds the one-active-job guard.
    """
    stale = await store.mark_stale_interrupted(
        conn, stale_after_seconds=settings.stale_after_seconds
    )
    for job_id in stale:
        log.warning("job %s had no heartbeat: marked interrupted", job_id)
    return stale


class JobRunner:
    """Starts jobs in the background of the serving process and stops them on shutdown.

    Jobs take ids and open their own connections; nothing from a request outlives it.
    """

    def __init__(self, db: AsyncEngine, settings: Settings):
        self.db = db
        self.settings = settings
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()

    async def start(self, **params: Any) -> uuid.UUID:
        """Create a job (see create_job) and run it in the background."""
        job_id, token = await create_job(self.db, self.settings, **params)
        self._launch(job_id, token)
        return job_id

    async def resume(self, *, job_id: uuid.UUID, actor: str) -> None:
        """Queue a stopped job again and continue it in the background."""
        token = await resume_job(self.db, self.settings, job_id=job_id, actor=actor)
        self._launch(job_id, token)

    def _launch(self, job_id: uuid.UUID, token: uuid.UUID) -> None:
        task = asyncio.create_task(
            run_job(self.db, self.settings, job_id=job_id, token=token, stop=self.stopping),
            name=f"job-{job_id}",
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def shutdown(self, grace_seconds: float = 8.0) -> None:
        """Let running jobs finish their batch and record themselves interrupted."""
        self.stopping.set()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=grace_seconds)
        for task in pending:
            # Cancelling mid-statement rolls the batch back; the stale heartbeat does the rest.
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
