"""Admin API for the goal migration: start, watch, cancel, resume, roll back, verify."""

import dataclasses
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from app import schemas
from app.config import Settings
from app.deps import (
    AdminUser,
    ConnDep,
    EngineDep,
    RunnerDep,
    SettingsDep,
    reject_unknown_input,
    require_admin,
)
from app.jobs import engine, prediction, queries, store, throttle
from app.jobs import verify as verify_numbers
from app.jobs.runner import recover_stale
from app.models.migration_job import ACTIVE_STATUSES
from app.schema import preflight

router = APIRouter(
    prefix="/admin/migrations/goals",
    tags=["goal migration"],
    dependencies=[Depends(require_admin), Depends(reject_unknown_input)],
    responses={
        401: {"model": schemas.Problem},
        403: {"model": schemas.Problem},
        # Every route answers 422 for an unknown parameter (reject_unknown_input), also those
        # without parameters; one definition for all, as FastAPI adds none where this one is.
        422: {"model": schemas.ValidationProblem, "description": "Validation Error"},
        503: {
            "model": schemas.Problem,
            "description": "The database is unreachable or busy, "
            "or (AUTH_MODE=oidc) the sign-in key set cannot be fetched",
        },
    },
)

DEFAULT_BATCH_SIZE = 1000
# Beyond any real count of jobs or findings, and inside PostgreSQL's bigint.
MAX_OFFSET = 10_000_000
_NOT_FOUND = {404: {"model": schemas.Problem}}
_NEW = "A new value for the rest of the job (recorded in its audit trail)"
# What each kind of 409 answers with: starting a job meets the active-job guard, a schema that
# is not ready, or a confirmed_from its job refuses; acting on a job also meets that job's state.
_START_CONFLICT = {
    409: {"model": schemas.ActiveJobConflict | schemas.SchemaNotReady | schemas.Problem}
}
# Acting on a job also meets its state; rolling back (or resuming a rollback) meets the later
# runs that rely on the targets' goals.
_JOB_CONFLICT = {
    409: {
        "model": schemas.ActiveJobConflict
        | schemas.SchemaNotReady
        | schemas.LaterRunsConflict
        | schemas.Problem
    }
}
_KEEP_LATER_RUNS = (
    "Roll back even though later real runs counted these goals as duplicates; run a migration "
    "again afterwards to create the goals they skipped (GET /verify counts them)"
)


_OFF = " (0 turns it off; default from the service's THROTTLE_* settings)"
_ADAPTIVE = (
    "Tune each batch's size to the target batch duration (BATCH_TARGET_SECONDS), starting at "
    "batch_size; false keeps batch_size fixed"
)


@dataclasses.dataclass
class LimitParams:
    """The health thresholds a request may set, each optional (throttle.Limits)."""

    max_replay_lag_seconds: Annotated[
        float | None, Query(ge=0, le=86400, description="Standby replay lag, seconds" + _OFF)
    ] = None
    max_replay_lag_bytes: Annotated[
        int | None,
        Query(ge=0, le=2**50, description="Standby or logical slot lag, bytes of WAL" + _OFF),
    ] = None
    max_archive_backlog: Annotated[
        int | None, Query(ge=0, le=10**6, description="WAL segments not yet archived" + _OFF)
    ] = None
    yield_to_autovacuum: Annotated[
        bool | None,
        Query(description="Wait for autovacuum on the two tables (anti-wraparound: always)"),
    ] = None
    max_lock_wait_seconds: Annotated[
        float | None,
        Query(ge=0, le=3600, description="A session's wait on the job's locks, seconds" + _OFF),
    ] = None
    max_batch_slowdown: Annotated[
        float | None,
        Query(ge=0, le=1000, description="Batch time over its recent median, times" + _OFF),
    ] = None
    share_above_sessions: Annotated[
        int | None,
        Query(
            ge=0,
            le=100000,
            description="Share the database (one batch at a time, resting as long) while more "
            "other sessions than this were at work in the last second" + _OFF,
        ),
    ] = None

    def given(self) -> dict:
        """The limits the request sets, 0 turned into null (off)."""
        return throttle.given(dataclasses.asdict(self))

    def for_new_job(self, settings: Settings) -> dict:
        return settings.limits(self.given()).as_dict()


LimitsDep = Annotated[LimitParams, Depends()]


async def active_job_conflict(request: Request, exc: store.ActiveJobExists) -> JSONResponse:
    """409 naming the job that holds the one-active-job guard (installed by create_app)."""
    stale_after = request.app.state.settings.stale_after_seconds
    age = exc.heartbeat_age_seconds
    released_in = round(max(stale_after - age, 0), 1) if age is not None else None
    detail = "another migration or rollback job is active"
    if exc.active_job_id:
        detail += f" (job {exc.active_job_id}, {exc.status})"
    if age is not None and age > 2 * request.app.state.settings.heartbeat_seconds:
        detail += (
            f"; its process has not beaten for {age:.0f} s: if it is gone, the job is marked "
            f"interrupted and released in {released_in:.0f} s"
        )
    conflict = schemas.ActiveJobConflict(
        detail=detail,
        active_job_id=exc.active_job_id,
        active_job_status=exc.status,
        heartbeat_age_seconds=round(age, 1) if age is not None else None,
        released_in_seconds=released_in,
    )
    return JSONResponse(
        status_code=status.HTTP_409_CONFLICT, content=conflict.model_dump(mode="json")
    )


async def job_not_found(request: Request, exc: store.JobNotFound) -> JSONResponse:
    """404 for a job id that names no job (installed by create_app)."""
    return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": "job not found"})


async def job_state_conflict(request: Request, exc: store.JobStateError) -> JSONResponse:
    """409 for an action the job's state does not allow (installed by create_app)."""
    if isinstance(exc, store.LaterRunsRelyOn):
        body = schemas.LaterRunsConflict(detail=str(exc), later_job_ids=exc.later)
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT, content=body.model_dump(mode="json")
        )
    return JSONResponse(status_code=status.HTTP_409_CONFLICT, content={"detail": str(exc)})


async def schema_not_ready(request: Request, exc: preflight.SchemaNotReady) -> JSONResponse:
    """409 with the preflight's problems instead of a job failing mid-way (see create_app)."""
    body = schemas.SchemaNotReady(
        detail="the database is not ready for a migration job: "
        + "; ".join(f"{p.name} {p.detail}" for p in exc.problems),
        problems=[dataclasses.asdict(p) for p in exc.problems],
    )
    return JSONResponse(status_code=status.HTTP_409_CONFLICT, content=body.model_dump())


async def _require_ready(conn: AsyncConnection) -> None:
    # The cheap part of the preflight: two catalog look-ups, before any job is created.
    async with conn.begin():
        await preflight.require_ready(conn)


async def _job(conn: ConnDep, settings: SettingsDep, job_id: uuid.UUID) -> schemas.Job:
    async with conn.begin():
        await recover_stale(conn, settings)
        row = await queries.get_job(conn, job_id=job_id)
    return _shown(row, settings)


async def _polled_job(db: EngineDep, settings: SettingsDep, job_id: uuid.UUID) -> schemas.Job:
    """One job for a poll: one statement, no transaction.

    The page and the command line poll every second while a run keeps both cores busy, and
    every round trip then waits its turn for a core; a stale heartbeat is rare, so the job is
    recovered (in a transaction of its own) only when the row read says it is stale.
    """
    async with db.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        row = await queries.get_job(conn, job_id=job_id)
        if row is not None and _looks_stale(row, settings):
            async with db.begin() as tx:
                await recover_stale(tx, settings)
            row = await queries.get_job(conn, job_id=job_id)
    return _shown(row, settings)


def _shown(row: dict | None, settings: Settings) -> schemas.Job:
    """The job as the API shows it, or a 404."""
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="job not found")
    return schemas.Job.from_row(
        prediction.annotate(row),
        stale_after_seconds=settings.stale_after_seconds,
        default_limits=settings.limits(),
    )


def _looks_stale(row: dict, settings: Settings) -> bool:
    return row["status"] in ACTIVE_STATUSES and (
        row["heartbeat_age_seconds"] > settings.stale_after_seconds
    )


def _accepted(response: Response, job: schemas.Job) -> schemas.Job:
    response.headers["Location"] = f"{router.prefix}/{job.id}"
    return job


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Job,
    responses={
        **_START_CONFLICT,
        404: {"model": schemas.Problem, "description": "confirmed_from names no job"},
    },
    summary="Start a migration job (a dry run unless dry_run=false)",
)
async def start_migration(
    response: Response,
    admin: AdminUser,
    runner: RunnerDep,
    conn: ConnDep,
    settings: SettingsDep,
    limits: LimitsDep,
    dry_run: bool = True,
    batch_size: Annotated[int, Query(ge=1, le=10000)] = DEFAULT_BATCH_SIZE,
    pause_ms: Annotated[int, Query(ge=0, le=60000)] = 0,
    max_errors: Annotated[int, Query(ge=0, le=10_000_000)] = 1000,
    adaptive: Annotated[bool, Query(description=_ADAPTIVE)] = True,
    confirmed_from: Annotated[
        uuid.UUID | None,
        Query(
            description="The succeeded dry run this real run was confirmed from (with "
            "dry_run=false only: 409 otherwise, as for a job that is not a succeeded dry run)"
        ),
    ] = None,
):
    await _require_ready(conn)
    if confirmed_from is not None:
        async with conn.begin():
            await prediction.check_source(conn, job_id=confirmed_from, dry_run=dry_run)
    job_id = await runner.start(
        kind="migrate",
        dry_run=dry_run,
        batch_size=batch_size,
        pause_ms=pause_ms,
        max_errors=max_errors,
        adaptive=adaptive,
        limits=limits.for_new_job(settings),
        requested_by=admin.sub,
        # kept in the start audit entry, where queries.get_job finds it
        **({"confirmed_from": confirmed_from} if confirmed_from else {}),
    )
    return _accepted(response, await _job(conn, settings, job_id))


@router.get("", response_model=schemas.JobList, summary="Jobs, newest first")
async def list_jobs(
    conn: ConnDep,
    settings: SettingsDep,
    status: schemas.JobStatus | None = None,
    kind: Literal["migrate", "rollback"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    async with conn.begin():
        await recover_stale(conn, settings)
        rows = await queries.list_jobs(conn, limit=limit, offset=offset, status=status, kind=kind)
        rows = [prediction.annotate(r) for r in rows]
        total = await queries.count_jobs(conn, status=status, kind=kind)
    stale_after = settings.stale_after_seconds
    return schemas.JobList(
        items=[
            schemas.Job.from_row(
                r, stale_after_seconds=stale_after, default_limits=settings.limits()
            )
            for r in rows
        ],
        total=total,
    )


@router.get(
    "/verify",
    response_model=schemas.Verification,
    summary="Does treatment_goals hold every action item? The rules re-run read-only over the "
    "data, the last run's counters beside them",
)
async def verify(db: EngineDep, settings: SettingsDep):
    report = await verify_numbers.report(db, partition_count=settings.job_partitions)
    return schemas.Verification(**report)


@router.get(
    "/preflight",
    response_model=schemas.Preflight,
    summary="Read-only check of the database: is it ready for a migration, and if not, why",
)
async def preflight_report(conn: ConnDep):
    return preflight.as_dict(await preflight.run(conn))


@router.get("/{job_id}", response_model=schemas.Job, responses=_NOT_FOUND, summary="One job")
async def get_job(job_id: uuid.UUID, db: EngineDep, settings: SettingsDep):
    return await _polled_job(db, settings, job_id)


@router.get(
    "/{job_id}/issues",
    response_model=schemas.FindingList,
    responses=_NOT_FOUND,
    summary="Invalid items and failed sessions a job recorded",
)
async def list_issues(
    job_id: uuid.UUID,
    conn: ConnDep,
    settings: SettingsDep,
    kind: Literal["invalid", "error"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
):
    await _job(conn, settings, job_id)
    items, total = await queries.list_findings(
        conn, job_id=job_id, kind=kind, limit=limit, offset=offset
    )
    counts = await queries.count_findings_by_reason(conn, job_id=job_id, kind=kind)
    return schemas.FindingList(items=items, total=total, counts=counts)


@router.get(
    "/{job_id}/preview",
    response_model=schemas.PreviewList,
    responses=_NOT_FOUND,
    summary="The first goals a dry run would create",
)
async def preview(
    job_id: uuid.UUID,
    conn: ConnDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=engine.PREVIEW_CAP)] = engine.PREVIEW_CAP,
):
    await _job(conn, settings, job_id)
    return schemas.PreviewList(items=await queries.list_preview(conn, job_id=job_id, limit=limit))


@router.get(
    "/{job_id}/audit",
    response_model=schemas.AuditList,
    responses=_NOT_FOUND,
    summary="Who did what to this job, and what the system did",
)
async def audit(job_id: uuid.UUID, conn: ConnDep, settings: SettingsDep):
    await _job(conn, settings, job_id)
    return schemas.AuditList(items=await queries.list_audit(conn, job_id=job_id))


@router.get(
    "/{job_id}/timeline",
    response_model=schemas.Timeline,
    response_model_by_alias=True,
    responses=_NOT_FOUND,
    summary="Rate and batch size over time, and when the job waited on a health signal",
)
async def timeline(
    job_id: uuid.UUID,
    conn: ConnDep,
    settings: SettingsDep,
    slices: Annotated[int, Query(ge=1, le=500, description="How many slices of time")] = 60,
):
    await _job(conn, settings, job_id)
    return await queries.timeline(conn, job_id=job_id, slices=slices)


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Job,
    responses={**_NOT_FOUND, 409: {"model": schemas.Problem}},
    summary="Stop an active job at its next batch boundary",
)
async def cancel(job_id: uuid.UUID, admin: AdminUser, conn: ConnDep, settings: SettingsDep):
    # No stale recovery first: a job whose process is gone is cancelled at once, not interrupted.
    async with conn.begin():
        await store.request_cancel(
            conn, job_id=job_id, actor=admin.sub, stale_after_seconds=settings.stale_after_seconds
        )
    return await _job(conn, settings, job_id)


@router.post(
    "/{job_id}/limits",
    response_model=schemas.Job,
    responses={**_NOT_FOUND, 409: {"model": schemas.Problem}},
    summary="Change the health thresholds of an active or stopped job (audited); a running job "
    "applies them within a heartbeat",
)
async def change_limits(
    job_id: uuid.UUID, limits: LimitsDep, admin: AdminUser, conn: ConnDep, settings: SettingsDep
):
    changes = limits.given()
    if not changes:
        return await _job(conn, settings, job_id)  # nothing to change, nothing audited
    async with conn.begin():
        await store.set_limits(conn, job_id=job_id, actor=admin.sub, changes=changes)
    return await _job(conn, settings, job_id)


@router.post(
    "/{job_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Job,
    responses={**_NOT_FOUND, **_JOB_CONFLICT},
    summary="Continue a cancelled, interrupted or failed job from its saved cursor",
)
async def resume(
    job_id: uuid.UUID,
    response: Response,
    admin: AdminUser,
    runner: RunnerDep,
    conn: ConnDep,
    settings: SettingsDep,
    pause_ms: Annotated[int | None, Query(ge=0, le=60000, description=_NEW)] = None,
    max_errors: Annotated[int | None, Query(ge=0, le=10_000_000, description=_NEW)] = None,
    batch_size: Annotated[int | None, Query(ge=1, le=10000, description=_NEW)] = None,
):
    await _require_ready(conn)
    await _job(conn, settings, job_id)
    changes = {"pause_ms": pause_ms, "max_errors": max_errors, "batch_size": batch_size}
    await runner.resume(
        job_id=job_id, actor=admin.sub, **{k: v for k, v in changes.items() if v is not None}
    )
    return _accepted(response, await _job(conn, settings, job_id))


async def _start_rollback(
    response: Response,
    admin: AdminUser,
    runner: RunnerDep,
    conn: ConnDep,
    settings: SettingsDep,
    *,
    targets: list[uuid.UUID],
    force: bool,
    dry_run: bool,
    batch_size: int,
    pause_ms: int,
    keep_later_runs: bool,
    adaptive: bool,
    limits: LimitParams,
) -> schemas.Job:
    new_id = await runner.start(
        kind="rollback",
        dry_run=dry_run,
        force=force,
        batch_size=batch_size,
        pause_ms=pause_ms,
        adaptive=adaptive,
        limits=limits.for_new_job(settings),
        targets=targets,
        requested_by=admin.sub,
        **({"keep_later_runs": True} if keep_later_runs else {}),
    )
    return _accepted(response, await _job(conn, settings, new_id))


_ROLLBACK_DRY_RUN = "Count what would be deleted and kept (the default); false deletes"
# One or more uuids (with or without dashes, any case), comma-separated, spaces allowed.
_UUID = r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"
_JOB_IDS_PATTERN = rf"^ *{_UUID} *(, *{_UUID} *)*$"


@router.post(
    "/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Job,
    responses={**_NOT_FOUND, **_JOB_CONFLICT},
    summary="Take back the goals of several migration jobs in one rollback (a dry run unless "
    "dry_run=false)",
)
async def rollback_jobs(
    response: Response,
    admin: AdminUser,
    runner: RunnerDep,
    conn: ConnDep,
    settings: SettingsDep,
    limits: LimitsDep,
    jobs: Annotated[
        str,
        Query(
            max_length=4000,
            # Documented for clients and the schema fuzzer; _job_ids() checks it and names
            # what is not a job id, which a bare pattern mismatch would not.
            json_schema_extra={"pattern": _JOB_IDS_PATTERN},
            description="Comma-separated ids of the migration jobs to roll back",
            examples=["0b9c2f4e-8a1d-4c3b-9e5f-1a2b3c4d5e6f,5d2e7a90-3b4c-4d5e-8f60-7a8b9c0d1e2f"],
        ),
    ],
    force: bool = False,
    dry_run: Annotated[bool, Query(description=_ROLLBACK_DRY_RUN)] = True,
    batch_size: Annotated[int, Query(ge=1, le=10000)] = DEFAULT_BATCH_SIZE,
    pause_ms: Annotated[int, Query(ge=0, le=60000)] = 0,
    keep_later_runs: Annotated[bool, Query(description=_KEEP_LATER_RUNS)] = False,
    adaptive: Annotated[bool, Query(description=_ADAPTIVE)] = True,
):
    targets = _job_ids(jobs)
    await _require_ready(conn)
    return await _start_rollback(
        response, admin, runner, conn, settings, targets=targets, force=force,
        dry_run=dry_run, batch_size=batch_size, pause_ms=pause_ms, keep_later_runs=keep_later_runs,
        adaptive=adaptive, limits=limits,
    )  # fmt: skip


def _job_ids(value: str) -> list[uuid.UUID]:
    """Parse `jobs=ID,ID`; a 422 that names what is not a job id."""
    ids, bad = [], []
    for part in (p.strip() for p in value.split(",")):
        try:
            ids.append(uuid.UUID(part))
        except ValueError:
            bad.append(part)
    if bad or not ids:
        raise RequestValidationError(
            [
                {
                    "type": "uuid_parsing",
                    "loc": ["query", "jobs"],
                    "msg": "jobs must be comma-separated job ids"
                    + (
                        f"; not a job id: {', '.join(repr(b[:40]) for b in bad[:3])}" if bad else ""
                    ),
                    "input": None,
                }
            ]
        )
    return list(dict.fromkeys(ids))


@router.post(
    "/{job_id}/rollback",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.Job,
    responses={**_NOT_FOUND, **_JOB_CONFLICT},
    summary="Delete the goals this job created, keeping those changed since (a dry run unless "
    "dry_run=false)",
)
async def rollback(
    job_id: uuid.UUID,
    response: Response,
    admin: AdminUser,
    runner: RunnerDep,
    conn: ConnDep,
    settings: SettingsDep,
    limits: LimitsDep,
    force: bool = False,
    dry_run: Annotated[bool, Query(description=_ROLLBACK_DRY_RUN)] = True,
    batch_size: Annotated[int, Query(ge=1, le=10000)] = DEFAULT_BATCH_SIZE,
    pause_ms: Annotated[int, Query(ge=0, le=60000)] = 0,
    keep_later_runs: Annotated[bool, Query(description=_KEEP_LATER_RUNS)] = False,
    adaptive: Annotated[bool, Query(description=_ADAPTIVE)] = True,
):
    await _require_ready(conn)
    await _job(conn, settings, job_id)
    return await _start_rollback(
        response, admin, runner, conn, settings, targets=[job_id], force=force,
        dry_run=dry_run, batch_size=batch_size, pause_ms=pause_ms, keep_later_runs=keep_later_runs,
        adaptive=adaptive, limits=limits,
    )  # fmt: skip
