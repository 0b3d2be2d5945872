"""Running a job: its partitions side by side, a heartbeat, retries, and prompt clean stops.

`run_job` is the one way any job runs, whether the API started it in the background of the
serving process or the CLI in the foreground:

    claim ─▶ count the total ─▶ partitions side by side ─▶ verdict ─▶ record the end

Each partition worker loops: pass the health gate (wait while the database is unwell, or take
turns with the other partitions while clinicians are at work: throttle.py), find the next batch
at the size pacing.py picks, run it and save its counters and cursor in the same transaction
(the fence: see store.py), then check whether to stop. A transient database
error (errors.py) retries the whole batch with backoff; a stop (cancel, shutdown, Ctrl-C, too
many errors, lost lease) always lands between batches, so what is committed and what the
counters say never disagree. A run that finds its lease revoked stops without touching the job:
whoever revoked it owns the job now.
"""

import asyncio
import enum
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import logs
from app.config import Settings
from app.db import APPLICATION_NAME
from app.jobs import engine, errors, pacing, partitions, queries, rollback, store, throttle

log = logging.getLogger("app.jobs")

# A log line names at most this many failed sessions; the job's issues list them all.
LOGGED_FAILED_IDS = 5


class Stop(enum.Enum):
    CANCEL = "cancelled"
    SHUTDOWN = "interrupted"
    MAX_ERRORS = "failed"
    LEASE_LOST = "lost"


class RetriesExhausted(Exception):
    """A transient database error outlasted the retries; the job fails and can be resumed."""

    def __init__(self, cause: BaseException, attempts: int):
        super().__init__(errors.describe(cause))
        self.cause = cause
        self.attempts = attempts


@dataclass
class BatchEvent:
    """What a progress callback hears after each committed batch."""

    job: dict[str, Any]
    partition: int
    stats: dict[str, int]
    report: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # the attempt that committed, from its start to its commit


@dataclass
class _Run:
    job: dict[str, Any]
    token: uuid.UUID
    stop: asyncio.Event
    on_batch: Callable[[BatchEvent], None] | None
    report: bool
    reason: Stop | None = None
    on_throttle: Callable[[dict[str, Any] | None], None] | None = None
    # Per partition, the failed sessions its committed batches added in this run, as the
    # database holds them: a batch lost to a crash and redone counts once (max_errors). The
    # baseline is what the partition held when this run began, kept across redone batches.
    errors: dict[int, int] = field(default_factory=dict)
    errors_at_start: dict[int, int] = field(default_factory=dict)
    # Pacing: each partition's batch size, the job's limits (refreshed by every heartbeat), the
    # backend pids of the workers' connections (whose lock waits the watcher looks for), and
    # what the health gate knows.
    sizers: dict[int, pacing.Sizer] = field(default_factory=dict)
    limits: throttle.Limits = field(default_factory=throttle.Limits)
    pids: set[int] = field(default_factory=set)
    lock_wait: float = 0.0  # the longest wait on the job's locks seen since the last check
    others_active: int = 0  # other sessions at work in the last second, at the last sample
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # one batch at a time when sharing
    shown_at: float = 0.0
    slowdown: throttle.Slowdown = field(default_factory=throttle.Slowdown)
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    health: throttle.Health | None = None
    health_read_at: float = 0.0
    waiting_on: throttle.Trip | None = None
    waiting_since: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def errors_this_run(self) -> int:
        return sum(self.errors.values())

    def halt(self, reason: Stop) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()


async def run_job(
    db: AsyncEngine,
    settings: Settings,
    *,
    job_id: uuid.UUID,
    token: uuid.UUID,
    stop: asyncio.Event | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
    on_batch: Callable[[BatchEvent], None] | None = None,
    on_throttle: Callable[[dict[str, Any] | None], None] | None = None,
    report: bool = False,
) -> str | None:
    """Run (or continue) a queued job to its end; return its final status.

    Returns None when the job was not (or is no longer) ours: already claimed, or its lease
    revoked while it ran. Setting `stop` ends the run at the next batch boundary as interrupted.
    `on_start` gets the claimed job, its sessions_total known, before the first batch;
    `on_batch` each committed batch; `on_throttle` each change of what the run waits on (the
    job's `throttle` object, or None when it goes on).
    """

    async def claim() -> dict | None:
        async with db.begin() as conn:
            return await store.claim(conn, job_id=job_id, token=token)

    job = await _retrying(settings, None, claim, job_id=job_id)
    if job is None:
        return None
    run = _Run(
        job=job,
        token=token,
        stop=asyncio.Event(),
        on_batch=on_batch,
        report=report,
        on_throttle=on_throttle,
    )
    run.limits = throttle.Limits.from_dict(job.get("limits"), settings.limits())
    began = time.monotonic()
    log.info(
        "job %s started: kind=%s dry_run=%s",
        job_id,
        job["kind"],
        job["dry_run"],
        extra=logs.event("job.started", job_id=job_id, kind=job["kind"], dry_run=job["dry_run"]),
    )
    helpers = [
        asyncio.create_task(_heartbeat(db, settings, run)),
        asyncio.create_task(_watch(db, settings, run)),
    ]
    if stop is not None:
        helpers.append(asyncio.create_task(_relay(stop, run)))
    try:
        while True:
            failures = await _execute(db, settings, run, on_start)
            if run.reason is Stop.LEASE_LOST or any(
                isinstance(f, store.LeaseLost) for f in failures
            ):
                log.warning(
                    "job %s: lease revoked, another run or process owns it now; stopped",
                    job_id,
                    extra=logs.event("job.lease_lost", job_id=job_id),
                )
                return None
            status, error = _verdict(run, next(iter(failures), None))
            try:
                if not await _record_end(db, settings, run, status, error):
                    return None
                break
            except store.Unfinished:
                log.warning(
                    "job %s: the database lost batches it had committed (a crash before they "
                    "reached disk); running them again from the cursors it kept",
                    job_id,
                    extra=logs.event("job.batches_lost", job_id=job_id),
                )
                on_start = None
    finally:
        for task in helpers:
            task.cancel()
    async with db.connect() as conn:
        final = await queries.get_job(conn, job_id=job_id)
    counts = ", ".join(f"{n}={final[n]}" for n in store.COUNTERS if final[n])
    kept = engine.COUNTER_NAMES if job["kind"] == "migrate" else store.ROLLBACK_STAT_NAMES
    log.info(
        "job %s ended: %s (%s)",
        job_id,
        status,
        counts or "nothing to do",
        extra=logs.event(
            "job.ended",
            job_id=job_id,
            kind=job["kind"],
            status=status,
            duration_seconds=round(time.monotonic() - began, 3),
            counts={n: final[n] for n in kept},
        ),
    )
    return status


async def _execute(
    db: AsyncEngine,
    settings: Settings,
    run: _Run,
    on_start: Callable[[dict[str, Any]], None] | None,
) -> list[BaseException]:
    """Count the job's total once, then walk its unfinished partitions side by side."""
    job = run.job
    try:
        if job["sessions_total"] is None:
            job["sessions_total"] = await _retrying(
                settings, run, lambda: _count_total(db, job, run.token)
            )
        if on_start:
            on_start(job)
        async with db.connect() as conn:
            parts = await store.load_partitions(conn, job_id=job["id"])
        results = await asyncio.gather(
            *(_work(db, settings, run, p) for p in parts if not p.done),
            return_exceptions=True,
        )
    except (SQLAlchemyError, OSError, RetriesExhausted, store.LeaseLost) as exc:
        return [exc]
    return [r for r in results if isinstance(r, BaseException) and not _is_cancel(r)] or [
        r for r in results if isinstance(r, BaseException)
    ]


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError)


async def _count_total(db: AsyncEngine, job: dict[str, Any], token: uuid.UUID) -> int:
    async with db.begin() as conn:
        total = await (
            engine.count_candidates(conn)
            if job["kind"] == "migrate"
            else rollback.count_goals(conn, targets=job["target_job_ids"])
        )
        await store.set_total(conn, job_id=job["id"], token=token, total=total)
    return total


def _verdict(run: _Run, failure: BaseException | None) -> tuple[str, str | None]:
    """The status and error a run ends with."""
    job = run.job
    if failure is not None and not _is_cancel(failure):
        if isinstance(failure, RetriesExhausted):
            error = (
                f"{failure} (still failing after {failure.attempts} attempts); "
                "nothing of the failing batch was kept: resume the job once the database is "
                "available again"
            )
            log.error(
                "job %s failed: %s",
                job["id"],
                error,
                extra=logs.event(
                    "job.failed",
                    job_id=job["id"],
                    attempts=failure.attempts,
                    **logs.failure(failure.cause),
                ),
            )
        else:
            error = errors.describe(failure)
            # A database error says enough; anything else is a bug, and its traceback (code
            # lines, no row data) is what finds it.
            trace = None if isinstance(failure, SQLAlchemyError | OSError) else failure
            log.error(
                "job %s failed: %s",
                job["id"],
                error,
                exc_info=trace,
                extra=logs.event("job.failed", job_id=job["id"], **logs.failure(failure)),
            )
        return "failed", error
    if run.reason is None:
        return "succeeded", None
    if run.reason is Stop.MAX_ERRORS:
        return "failed", (
            f"more than max_errors={job['max_errors']} sessions failed in this run "
            f"({run.errors_this_run}); see the job's issues, fix the cause, then resume"
        )
    return run.reason.value, None


async def _record_end(
    db: AsyncEngine, settings: Settings, run: _Run, status: str, error: str | None
) -> bool:
    """Write the job's end (retrying transient errors); False when the lease was gone."""

    async def record() -> bool:
        async with db.begin() as conn:
            done = await store.finish(
                conn, job_id=run.job["id"], token=run.token, status=status, error=error
            )
            if done:
                await store.trim_findings(conn, job_id=run.job["id"], keep=engine.FINDINGS_CAP)
            return done

    try:
        return await _retrying(settings, None, record, job_id=run.job["id"])
    except (SQLAlchemyError, OSError, RetriesExhausted) as exc:
        # The heartbeat stops with us; any instance marks the job interrupted once it is stale.
        log.error(
            "job %s: could not record its end (%s)",
            run.job["id"],
            errors.describe(exc),
            extra=logs.event("job.end_not_recorded", job_id=run.job["id"], **logs.failure(exc)),
        )
        return False


async def _retrying(
    settings: Settings,
    run: _Run | None,
    action: Callable[[], Awaitable],
    *,
    job_id: uuid.UUID | None = None,
    partition: int | None = None,
    on_timeout: Callable[[], Any] | None = None,
):
    """Run `action`, retrying transient database errors with capped exponential backoff.

    A statement or lock timeout calls `on_timeout` first (an adaptive batch halves). Returns
    None, without retrying further, when the run is told to stop while it waits.
    """
    delay = settings.retry_backoff_seconds
    for attempt in range(1, settings.retry_attempts + 2):
        try:
            return await action()
        except (SQLAlchemyError, OSError, store.Superseded) as exc:
            # Superseded: a late commit of an earlier attempt moved the partition on; the next
            # attempt reads where the database stands and carries on from there.
            if not isinstance(exc, store.Superseded) and (
                errors.classify(exc) is not errors.Kind.TRANSIENT
            ):
                raise
            if attempt > settings.retry_attempts:
                raise RetriesExhausted(exc, attempt) from exc
            if on_timeout is not None and errors.timed_out(exc):
                on_timeout()
            job_id = run.job["id"] if run else job_id
            log.warning(
                "job %s: %s; retrying in %.1f s (attempt %d of %d)",
                job_id or "?",
                errors.describe(exc),
                delay,
                attempt + 1,
                settings.retry_attempts + 1,
                extra=logs.event(
                    "job.retry" if partition is None else "job.batch_retry",
                    job_id=job_id,
                    partition=partition,
                    **logs.failure(exc),
                    retry_in_seconds=delay,
                    attempt=attempt + 1,
                    attempts=settings.retry_attempts + 1,
                ),
            )
            if run is not None and await _wait(run.stop, delay):
                return None
            if run is None:
                await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_backoff_max_seconds)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True as soon as `event` is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def _relay(stop: asyncio.Event, run: _Run) -> None:
    await stop.wait()
    run.halt(Stop.SHUTDOWN)


async def _beat(db: AsyncEngine, run: _Run) -> None:
    """Refresh the lease's heartbeat, and halt the run on a cancel request or a lost lease."""
    try:
        async with db.begin() as conn:
            beat = await store.heartbeat(conn, job_id=run.job["id"], token=run.token)
    except (SQLAlchemyError, OSError) as exc:
        log.warning(
            "job %s: heartbeat failed (%s)",
            run.job["id"],
            errors.describe(exc),
            extra=logs.event("job.heartbeat_failed", job_id=run.job["id"], **logs.failure(exc)),
        )
        return
    if beat is None:
        run.halt(Stop.LEASE_LOST)
        return
    run.limits = throttle.Limits.from_dict(beat.limits, run.limits)
    if beat.status == "cancelling":
        run.halt(Stop.CANCEL)


async def _heartbeat(db: AsyncEngine, settings: Settings, run: _Run) -> None:
    while True:
        await asyncio.sleep(settings.heartbeat_seconds)
        await _beat(db, run)


async def _pause(
    db: AsyncEngine, run: _Run, seconds: float, until: Callable[[], bool] | None = None
) -> None:
    """The pause between batches: wakes at once on shutdown, within half a second on cancel,
    and within half a second of `until()` turning true."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await _wait(run.stop, min(left, 0.5)):
            return
        if until is not None and until():
            return
        await _beat(db, run)


@dataclass
class _Batch:
    """One committed batch, as the worker loop needs it. cursor None: the partition is done."""

    cursor: uuid.UUID | None
    job_status: str
    stats: dict[str, int] = field(default_factory=dict)
    report: list[dict[str, Any]] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    seconds: float = 0.0
    processed: int = 0  # sessions, or goals examined by a rollback
    asked: int | None = None  # the size its bounds were drawn for, when not the sizer's now


async def _health_gate(db: AsyncEngine, settings: Settings, run: _Run) -> bool:
    """Before a batch: wait here while a health signal is over its limit (throttle.py).

    One partition checks at a time, so while one waits the others queue behind it and the whole
    job holds still. The wait rechecks every throttle_recheck_seconds, beats the heartbeat, and
    ends at once on a cancel or a shutdown. A session seen waiting on the job's locks also makes
    adaptive batches halve: smaller batches hold their locks for less time. Returns True when
    the job is to share the database with clinicians at work (_share) rather than wait.
    """
    async with run.gate:
        while not run.stop.is_set():
            trip = await _check(db, settings, run)
            if trip is None or trip.sharing:
                if run.waiting_on is not None or trip is not None:
                    await _show_throttle(db, settings, run, trip)
                return trip is not None
            await _show_throttle(db, settings, run, trip)
            if trip.signal == "lock_waits":
                for sizer in run.sizers.values():
                    sizer.timed_out()
            await _pause(db, run, settings.throttle_recheck_seconds)
    return False


async def _check(db: AsyncEngine, settings: Settings, run: _Run) -> throttle.Trip | None:
    """The signal over its limit now, if any; the views are read at most once per check period."""
    stale = time.monotonic() - run.health_read_at >= settings.throttle_check_seconds
    waiting = run.waiting_on is not None and not run.waiting_on.sharing
    if run.health is None or stale or waiting:
        try:
            async with db.connect() as conn:
                run.health = await throttle.read(conn)
        except (SQLAlchemyError, OSError) as exc:
            if run.health_read_at >= 0:  # once per run: a failing read must not flood the log
                log.warning(
                    "job %s: could not read the database's health (%s); going on without it",
                    run.job["id"],
                    errors.describe(exc),
                    extra=logs.event(
                        "job.health_unreadable", job_id=run.job["id"], **logs.failure(exc)
                    ),
                )
            run.health_read_at = -1.0
        else:
            run.health_read_at = time.monotonic()
    lock_wait, run.lock_wait = run.lock_wait, 0.0
    if run.health is None:
        return None
    return throttle.decide(
        run.health,
        run.limits,
        lock_wait=lock_wait,
        slowdown=run.slowdown.take(),
        others_active=run.others_active,
    )


async def _show_throttle(
    db: AsyncEngine, settings: Settings, run: _Run, trip: throttle.Trip | None
) -> None:
    """Put what the job waits on in its row; a change is one log line and one audit entry.

    A new reading of the same signal is written at most once per recheck period.
    """
    job_id, before = run.job["id"], run.waiting_on
    changed = trip is None or before is None or trip.signal != before.signal
    if not changed and time.monotonic() - run.shown_at < settings.throttle_recheck_seconds:
        return
    run.shown_at = time.monotonic()
    if trip is not None and changed:
        run.waiting_since = datetime.now(UTC)
    shown = None
    if trip is not None:
        since = run.waiting_since.isoformat()
        shown = {**trip.as_dict(), "message": trip.message, "sharing": trip.sharing, "since": since}
    if trip is None:
        waited = round((datetime.now(UTC) - run.waiting_since).total_seconds(), 1)
        action, details = "throttle_cleared", {"signal": before.signal, "waited_seconds": waited}
        log.info(
            "job %s: going on after waiting %.1f s on %s",
            job_id,
            waited,
            before.message,
            extra=logs.event("job.throttle_cleared", job_id=job_id, **details),
        )
    elif changed:
        action, details = "throttled", shown
        log.info(
            "job %s: %s: %s",
            job_id,
            "sharing the database" if trip.sharing else "waiting",
            trip.message,
            extra=logs.event("job.throttled", job_id=job_id, **trip.as_dict()),
        )
    else:
        action, details = None, None  # the same wait, a new reading: no new audit entry
    run.waiting_on = trip
    if run.on_throttle is not None and (changed or trip is not None):
        run.on_throttle(shown)
    try:
        async with db.begin() as conn:
            await store.set_throttle(
                conn,
                job_id=job_id,
                token=run.token,
                throttle=shown,
                audit_action=action,
                details=details,
            )
    except (SQLAlchemyError, OSError) as exc:
        # Showing the wait is for people; the wait itself goes on, and the next change retries.
        log.warning(
            "job %s: could not record its throttle (%s)",
            job_id,
            errors.describe(exc),
            extra=logs.event("job.throttle_not_recorded", job_id=job_id, **logs.failure(exc)),
        )


async def _watch(db: AsyncEngine, settings: Settings, run: _Run) -> None:
    """While batches run, note the longest wait of another session on the job's locks, and
    how many other sessions are at work.

    Between batches the job holds no lock, so the health gate cannot see these waits itself.
    """
    conn: AsyncConnection | None = None
    try:
        while True:
            await asyncio.sleep(settings.lock_watch_seconds)
            limits = run.limits
            if not run.pids or (
                limits.max_lock_wait_seconds is None and limits.share_above_sessions is None
            ):
                continue
            try:
                if conn is None:
                    conn = await db.connect()
                    await conn.execution_options(isolation_level="AUTOCOMMIT")
                waited, run.others_active = await throttle.watch(
                    conn, sorted(run.pids), APPLICATION_NAME
                )
            except (SQLAlchemyError, OSError):
                if conn is not None:
                    await _discard(conn)
                conn = None
                continue
            run.lock_wait = max(run.lock_wait, waited)
    finally:
        if conn is not None:
            await _discard(conn)


async def _backend_pid(conn: AsyncConnection) -> int:
    """The server process behind a connection, as the driver knows it (no round trip)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection.get_server_pid()


async def _work(db: AsyncEngine, settings: Settings, run: _Run, part: store.Partition) -> None:
    """Walk one partition batch by batch until it is done or the run is told to stop."""
    job = run.job
    step = _migrate_batch if job["kind"] == "migrate" else _rollback_batch
    # What this worker knows of its partition beyond the cursor: the findings, preview goals and
    # failed sessions it counted, and the next batch's (lo, hi) when the last batch found it.
    known = {
        "findings": part.findings_stored,
        "preview": part.preview_stored,
        "errors": part.errors,
        "ahead": None,
    }
    cursor = part.cursor
    run.errors_at_start.setdefault(part.number, part.errors)
    sizer = run.sizers.setdefault(
        part.number,
        pacing.Sizer(
            size=job["batch_size"],
            adaptive=job["adaptive"],
            target_seconds=settings.batch_target_seconds,
            smallest=settings.batch_size_min,
            largest=settings.batch_size_max,
            step=settings.batch_size_step,
        ),
    )
    in_doubt = False  # after a failure, the database may hold more or less than we believe
    conn: AsyncConnection | None = None  # held from batch to batch; replaced after a failure
    pid: int | None = None

    async def one_batch() -> _Batch:
        nonlocal cursor, in_doubt, conn, pid
        started = time.monotonic()
        if conn is None:
            conn = await db.connect()
            pid = await _backend_pid(conn)
            run.pids.add(pid)
        try:
            # One transaction: the batch's rows, its counters and cursor, and the lease check.
            async with conn.begin():
                if in_doubt:
                    # Continue from what the database holds, not from what this process believes.
                    saved = await store.load_partition(
                        conn, job_id=job["id"], partition=part.number
                    )
                    if saved.done:
                        return _Batch(None, "running")
                    cursor = saved.cursor
                    known.update(
                        findings=saved.findings_stored,
                        preview=saved.preview_stored,
                        errors=saved.errors,
                        ahead=None,
                    )
                lo = part.range_start if cursor is None else partitions.after(cursor)
                batch = await step(conn, run, part, cursor, lo, known, sizer.size, started)
        except BaseException:
            # Whatever failed, the database may now hold more than this process believes (a
            # COMMIT whose answer was lost) or less (a crash lost batches that had committed
            # asynchronously): the next attempt reads the cursor the database kept.
            in_doubt = True
            run.pids.discard(pid)
            await _discard(conn)
            conn = None
            raise
        in_doubt = False
        batch.seconds = time.monotonic() - started
        return batch

    try:
        while not run.stop.is_set():
            sharing = await _health_gate(db, settings, run)
            if run.stop.is_set():
                return
            attempt = functools.partial(
                _retrying, settings, run, one_batch, partition=part.number,
                on_timeout=sizer.timed_out,
            )  # fmt: skip
            sizer.target_seconds = (
                settings.throttle_share_batch_seconds if sharing else settings.batch_target_seconds
            )
            if sizer.halved:  # a halving shows at once: bounds drawn for more are dropped
                known["ahead"] = None
            batch = await (_share(db, settings, run, attempt) if sharing else attempt())
            if batch is None:
                return  # told to stop while waiting to retry; nothing of that batch committed
            run.slowdown.add(batch.seconds, batch.processed)
            sizer.took(batch.seconds, batch.processed, batch.asked)
            if batch.failed:
                _log_failed(job["id"], batch.failed, part.number)
            run.errors[part.number] = known["errors"] - run.errors_at_start[part.number]
            if batch.cursor is not None and run.on_batch:
                run.on_batch(BatchEvent(job, part.number, batch.stats, batch.report, batch.seconds))
            if batch.job_status == "cancelling":
                run.halt(Stop.CANCEL)
            if run.errors_this_run > job["max_errors"]:
                run.halt(Stop.MAX_ERRORS)
            if batch.cursor is None or batch.cursor == part.range_end:
                return
            cursor = batch.cursor
            if job["pause_ms"] and not run.stop.is_set():
                await _pause(db, run, job["pause_ms"] / 1000)
    except BaseException:
        run.stop.set()  # one partition failing ends the run for all of them
        raise
    finally:
        run.pids.discard(pid)
        if conn is not None:
            await _discard(conn)


async def _share(
    db: AsyncEngine, settings: Settings, run: _Run, attempt: Callable[[], Awaitable]
) -> Any:
    """While clinicians work: one short batch of the job at a time, then a rest, so that its
    batches take THROTTLE_SHARE_DUTY of the time (3%: 0.05 s of work, 1.6 s of rest).

    What a batch costs clinicians is not only a core: its WAL is flushed by their commits, new
    WAL segments are written while they wait, and the pages it reads push theirs out of shared
    buffers. Only the share of their statements that meet a batch sets their p99, so the job
    keeps that share small (docs/BENCHMARKS.md). The rest ends within half a second once they
    are gone, and the job goes back to all partitions at full speed.
    """

    def clinicians_gone() -> bool:
        return not throttle.clinicians_at_work(run.limits, run.others_active)

    async with run.turn:
        began = time.monotonic()
        batch = await attempt()
        if batch is not None and not run.stop.is_set():
            took = time.monotonic() - began
            rest = took * (1 / settings.throttle_share_duty - 1)
            await _pause(db, run, rest, until=clinicians_gone)
    return batch


async def _discard(conn: AsyncConnection) -> None:
    """Give a worker's connection back; one that a failure left unusable is simply dropped."""
    try:
        await conn.close()
    except (SQLAlchemyError, OSError) as exc:
        log.debug(
            "closing a worker connection failed: %s",
            errors.describe(exc),
            extra=logs.event("job.connection_close_failed", **logs.failure(exc)),
        )


def _log_failed(job_id: uuid.UUID, failed: list[uuid.UUID], partition: int) -> None:
    shown = ", ".join(map(str, failed[:LOGGED_FAILED_IDS]))
    more = len(failed) - LOGGED_FAILED_IDS
    log.warning(
        "job %s: %d session(s) failed and were rolled back: %s%s",
        job_id,
        len(failed),
        shown,
        f" and {more} more (all on the job's issues)" if more > 0 else "",
        extra=logs.event(
            "job.sessions_failed",
            job_id=job_id,
            partition=partition,
            failed_sessions=len(failed),
            session_ids=failed[:LOGGED_FAILED_IDS],
        ),
    )


async def _migrate_batch(
    conn: AsyncConnection,
    run: _Run,
    part: store.Partition,
    cursor: uuid.UUID | None,
    lo: uuid.UUID | None,
    known: dict,
    size: int,
    started: float,
) -> _Batch:
    """Migrate the next whole patients of this partition, or mark it done."""
    job = run.job
    hi = None
    # The bounds the last batch drew for this one, with the size of that moment: any bounds give
    # the same results, and drawing them anew would cost a statement (pacing.Sizer.took).
    ahead, known["ahead"] = known["ahead"], None
    asked = size
    if ahead is not None and ahead[0] == lo:
        asked, hi = ahead[1], ahead[2]
    elif lo is not None and lo <= part.range_end:
        hi = await engine.next_bound(conn, lo=lo, end=part.range_end, batch_size=size)
    if hi is None:
        return _Batch(None, await _save(conn, run, part, cursor, None, done=True, stats={}))
    result = await engine.run_batch(
        conn,
        job_id=job["id"],
        lo=lo,
        hi=hi,
        dry_run=job["dry_run"],
        findings_room=engine.FINDINGS_CAP - known["findings"],
        preview_room=engine.PREVIEW_CAP - known["preview"],
        report=run.report,
        bound_ahead=(part.range_end, size),
    )
    processed = result.stats["sessions_processed"]
    status = await _save(
        conn,
        run,
        part,
        cursor,
        hi,
        done=hi == part.range_end,
        stats=result.stats,
        findings_stored=result.findings_stored,
        preview_stored=result.preview_stored,
        batch=(asked, processed, time.monotonic() - started),
    )
    known["findings"] += result.findings_stored
    known["preview"] += result.preview_stored
    known["errors"] += result.stats["errors"]
    if result.next_hi is not None:
        known["ahead"] = (partitions.after(hi), size, result.next_hi)
    batch = _Batch(hi, status, result.stats, result.report, result.failed_sessions)
    batch.processed, batch.asked = processed, asked
    return batch


async def _rollback_batch(
    conn: AsyncConnection,
    run: _Run,
    part: store.Partition,
    cursor: uuid.UUID | None,
    lo: uuid.UUID | None,
    known: dict,
    size: int,
    started: float,
) -> _Batch:
    """Delete (or count) the next goals of the target jobs in this partition."""
    job = run.job
    if lo is None:
        return _Batch(None, await _save(conn, run, part, cursor, None, done=True, stats={}))
    batch = await rollback.run_batch(
        conn,
        targets=job["target_job_ids"],
        lo=lo,
        end=part.range_end,
        batch_size=size,
        force=job["force"],
        dry_run=job["dry_run"],
    )
    done = batch.last_id is None or batch.last_id == part.range_end
    processed = sum(batch.stats.values())
    status = await _save(
        conn,
        run,
        part,
        cursor,
        batch.last_id,
        done=done,
        stats=batch.stats,
        batch=(size, processed, time.monotonic() - started) if processed else None,
    )
    return _Batch(batch.last_id, status, batch.stats, processed=processed)


async def _save(
    conn: AsyncConnection,
    run: _Run,
    part: store.Partition,
    started_from: uuid.UUID | None,
    cursor: uuid.UUID | None,
    **kwargs,
) -> str:
    """Save a batch's progress; its transaction then commits without waiting for the disk.

    The batch's goals, counters and cursor commit together, so a server crash can lose only a
    tail of whole batches, which the run (or a later resume) redoes from the cursor that
    survived: nothing is half-applied or counted twice. The job's end commits synchronously, and
    that flush takes every earlier batch with it, so a job recorded as finished is always
    durable (docs/RELIABILITY.md).
    """
    return await store.save_progress(
        conn,
        job_id=run.job["id"],
        partition=part.number,
        token=run.token,
        started_from=started_from,
        cursor=cursor,
        async_commit=True,
        **kwargs,
    )


async def create_job(
    db: AsyncEngine, settings: Settings, **params: Any
) -> tuple[uuid.UUID, uuid.UUID]:
    """Check and create a queued job in its own transaction; return (job id, run token).

    Raises store.ActiveJobExists, and for rollbacks store.JobNotFound or store.JobStateError
    (store.LaterRunsRelyOn among them). A rollback's `keep_later_runs` is kept in its audit.
    """
    params.setdefault("partition_count", settings.job_partitions)
    async with db.begin() as conn:
        await recover_stale(conn, settings)
        if params.get("kind") == "rollback":
            await store.check_rollback_targets(
                conn,
                targets=params["targets"],
                dry_run=params.get("dry_run", True),
                keep_later_runs=params.get("keep_later_runs", False),
            )
            params["split"] = await rollback.goal_span(conn, targets=params["targets"])
        return await store.create_job(conn, **params)


async def resume_job(
    db: AsyncEngine, settings: Settings, *, job_id: uuid.UUID, actor: str, **changes: Any
) -> uuid.UUID:
    """Queue a stopped job again in its own transaction; return the new run token.

    `changes` may set a new pause_ms or max_errors for the rest of the job.
    Raises store.ActiveJobExists, store.JobNotFound or store.JobStateError.
    """
    async with db.begin() as conn:
        await recover_stale(conn, settings)
        return await store.resume(conn, job_id=job_id, actor=actor, **changes)


async def recover_stale(conn: AsyncConnection, settings: Settings) -> list[uuid.UUID]:
    """Mark jobs whose process is gone as interrupted, so they neither block nor mislead.

    Runs before every start and resume, so a dead job never holds the one-active-job guard.
    """
    stale = await store.mark_stale_interrupted(
        conn, stale_after_seconds=settings.stale_after_seconds
    )
    for job_id in stale:
        log.warning(
            "job %s had no heartbeat: marked interrupted",
            job_id,
            extra=logs.event("job.marked_interrupted", job_id=job_id),
        )
    return stale


class JobRunner:
    """Starts jobs in the background of the serving process and stops them on shutdown.

    Jobs take ids and open their own connections; nothing from a request outlives it.
    """

    def __init__(
        self,
        db: AsyncEngine,
        settings: Settings,
        on_batch: Callable[[BatchEvent], None] | None = None,
    ):
        self.db = db
        self.settings = settings
        self.on_batch = on_batch  # hears every batch this process commits (app.metrics)
        self.stopping = asyncio.Event()
        self.tasks: dict[asyncio.Task, tuple[uuid.UUID, uuid.UUID]] = {}

    async def start(self, **params: Any) -> uuid.UUID:
        """Create a job (see create_job) and run it in the background."""
        job_id, token = await create_job(self.db, self.settings, **params)
        self._launch(job_id, token)
        return job_id

    async def resume(self, *, job_id: uuid.UUID, actor: str, **changes: Any) -> None:
        """Queue a stopped job again and continue it in the background."""
        token = await resume_job(self.db, self.settings, job_id=job_id, actor=actor, **changes)
        self._launch(job_id, token)

    def _launch(self, job_id: uuid.UUID, token: uuid.UUID) -> None:
        task = asyncio.create_task(
            run_job(
                self.db,
                self.settings,
                job_id=job_id,
                token=token,
                stop=self.stopping,
                on_batch=self.on_batch,
            ),
            name=f"job-{job_id}",
        )
        self.tasks[task] = (job_id, token)
        task.add_done_callback(lambda t: self.tasks.pop(t, None))

    async def shutdown(self, grace_seconds: float = 8.0) -> None:
        """Let running jobs finish their batch and record themselves interrupted.

        A job still mid-statement after the grace period is cancelled (its batch rolls back)
        and recorded interrupted here, so every instance shows it correctly at once.
        """
        self.stopping.set()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(list(self.tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            job_id, token = self.tasks.get(task) or (None, None)
            if job_id is not None:
                await abandon(
                    self.db,
                    job_id=job_id,
                    token=token,
                    error="stopped mid-batch by a shutdown; that batch was rolled back",
                )


async def abandon(db: AsyncEngine, *, job_id: uuid.UUID, token: uuid.UUID, error: str) -> bool:
    """Record a run cut off mid-batch (its batch rolled back) as interrupted; False if not ours."""
    try:
        async with db.begin() as conn:
            return await store.finish(
                conn, job_id=job_id, token=token, status="interrupted", error=error
            )
    except (SQLAlchemyError, OSError) as exc:
        log.error(
            "job %s: could not record its end (%s)",
            job_id,
            errors.describe(exc),
            extra=logs.event("job.end_not_recorded", job_id=job_id, **logs.failure(exc)),
        )
        return False  # the stale heartbeat will mark it interrupted
