"""Request and response models of the admin API; field names are a contract."""

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.jobs.engine import STAT_NAMES
from app.jobs.store import ROLLBACK_STAT_NAMES
from app.jobs.throttle import Limits as LimitValues
from app.models.migration_job import ACTIVE_STATUSES, JOB_STATUSES, RUNNING_STATUSES

JobStatus = Literal[JOB_STATUSES]


class MigrateProgress(BaseModel):
    sessions_total: int | None = Field(description="Candidate sessions to go through")
    sessions_processed: int
    percent: float | None
    rate_per_second: float | None = Field(
        description="Sessions per second in this run since it (re)started; null when not running"
    )
    eta_seconds: float | None


class RollbackProgress(BaseModel):
    goals_total: int | None = Field(description="Goals of the target jobs to go through")
    goals_processed: int = Field(description="Goals deleted or kept so far")
    percent: float | None
    rate_per_second: float | None = Field(
        description="Goals per second in this run since it (re)started; null when not running"
    )
    eta_seconds: float | None


class MigrateStats(BaseModel):
    sessions_processed: int
    sessions_with_action_items: int
    goals_created: int
    goals_skipped_duplicate: int
    goals_skipped_invalid: int
    errors: int


class RollbackStats(BaseModel):
    goals_deleted: int = Field(description="Deleted, or for a dry run: would delete")
    goals_kept_modified: int = Field(description="Kept because changed since migrated")


class Prediction(BaseModel):
    dry_run_id: uuid.UUID = Field(description="The dry run this real run was confirmed from")
    predicted: MigrateStats
    matched: bool | None = Field(
        description="Whether the run's statistics equal the dry run's; null until it succeeded"
    )
    differences: dict[str, int] | None = Field(
        description="Actual minus predicted, per statistic that differs; null until it succeeded"
    )


class Limits(BaseModel):
    """The health thresholds a job yields to (null: that signal is off)."""

    max_replay_lag_seconds: float | None = Field(
        description="Wait while a standby's replay lag (pg_stat_replication) is over this"
    )
    max_replay_lag_bytes: int | None = Field(
        description="Wait while a standby, or a logical replication slot, is this many bytes of "
        "WAL behind"
    )
    max_archive_backlog: int | None = Field(
        description="Wait while this many WAL segments wait for the archiver (archive_mode on)"
    )
    yield_to_autovacuum: bool = Field(
        description="Wait while autovacuum works on therapy_sessions or treatment_goals (an "
        "anti-wraparound vacuum is always waited for)"
    )
    max_lock_wait_seconds: float | None = Field(
        description="Back off (wait, and halve adaptive batches) when another session waited "
        "this long on a lock the job holds"
    )
    max_batch_slowdown: float | None = Field(
        description="Wait when a batch takes this many times its recent median time per row"
    )
    share_above_sessions: int | None = Field(
        None,
        description="Share the database while more other sessions than this were at work in the "
        "last second: one short batch at a time, with rests that keep the job to "
        "THROTTLE_SHARE_DUTY (3%) of the time",
    )


class Throttle(BaseModel):
    """What a running job waits on right now."""

    signal: Literal[
        "anti_wraparound_vacuum",
        "replay_lag_seconds",
        "replay_lag_bytes",
        "slot_lag_bytes",
        "archive_backlog",
        "autovacuum",
        "lock_waits",
        "batch_slowdown",
        "clinicians_active",
    ]
    sharing: bool = Field(
        False, description="true: the job goes on, one batch at a time, instead of waiting"
    )
    value: float | None = Field(description="The signal's reading (null for a vacuum)")
    threshold: float | None = Field(description="The job's limit for it")
    unit: str | None = Field(description="s, bytes, segments or ×")
    where: str | None = Field(description="The standby, slot or table it concerns")
    message: str = Field(examples=["standby replay lag 12.4 s, limit 5 s (test_standby)"])
    since: datetime


class Job(BaseModel):
    id: uuid.UUID
    kind: Literal["migrate", "rollback"]
    dry_run: bool
    status: JobStatus
    rolled_back: bool = Field(description="A real rollback took this job's goals back")
    patients_with_goals_created: int | None = Field(
        None, description="Patients given at least one goal (would be, for a dry run)"
    )
    batch_size: int = Field(description="The size batches start at (and keep, unless adaptive)")
    adaptive: bool = Field(description="Batch sizes follow the target batch duration")
    current_batch_size: int | None = Field(None, description="The size of the job's latest batch")
    limits: Limits | None = Field(
        description="The health thresholds it yields to; null for jobs from before they existed"
    )
    throttle: Throttle | None = Field(
        description="What the job waits on now; null while it is not waiting"
    )
    pause_ms: int
    max_errors: int
    force: bool
    requested_by: str
    target_job_id: uuid.UUID | None = Field(description="A rollback's (first) target")
    target_job_ids: list[uuid.UUID] | None = Field(description="Every job a rollback takes back")
    rolled_back_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    heartbeat_age_seconds: float | None = Field(
        description="Seconds since the running process last beat; null when the job is not active"
    )
    released_in_seconds: float | None = Field(
        description="For an active job: seconds until it is marked interrupted (and the "
        "one-active-job guard released) if its heartbeat does not come back"
    )
    progress: MigrateProgress | RollbackProgress
    stats: MigrateStats | RollbackStats
    error: str | None
    confirmed_from: uuid.UUID | None = None
    prediction: Prediction | None = None

    @classmethod
    def from_row(
        cls,
        row: dict,
        *,
        stale_after_seconds: float = 30.0,
        default_limits: LimitValues | None = None,
    ) -> "Job":
        """Build the public job object from queries.get_job's row.

        A limit the job's row lacks (one added after the job started) shows as the runner
        applies it: `default_limits`, the service's settings.
        """
        running = row["status"] in RUNNING_STATUSES
        total = row["sessions_total"]
        if row["kind"] == "migrate":
            stats = MigrateStats(**{n: row[n] for n in STAT_NAMES})
            processed = row["sessions_processed"]
        else:
            stats = RollbackStats(**{n: row[n] for n in ROLLBACK_STAT_NAMES})
            processed = row["goals_deleted"] + row["goals_kept_modified"]
        percent = rate = eta = None
        if total is not None:
            percent = min(round(100.0 * processed / total, 2), 100.0) if total else 100.0
        seconds = float(row["run_seconds"] or 0)
        if running and seconds > 0:
            rate = round(max(processed - row["run_start_processed"], 0) / seconds, 2)
            if rate and total is not None:
                eta = round(max(total - processed, 0) / rate, 1)
        numbers = {"percent": percent, "rate_per_second": rate, "eta_seconds": eta}
        if row["kind"] == "migrate":
            progress = MigrateProgress(
                sessions_total=total, sessions_processed=processed, **numbers
            )
        else:
            progress = RollbackProgress(goals_total=total, goals_processed=processed, **numbers)
        age = row.get("heartbeat_age_seconds")
        active = row["status"] in ACTIVE_STATUSES and age is not None
        return cls(
            **{k: row[k] for k in cls.model_fields if k in row and k not in _COMPUTED},
            rolled_back=row["rolled_back_by"] is not None,
            patients_with_goals_created=(
                row["patients_with_goals_created"] if row["kind"] == "migrate" else None
            ),
            heartbeat_age_seconds=round(age, 1) if active else None,
            released_in_seconds=round(max(stale_after_seconds - age, 0), 1) if active else None,
            progress=progress,
            stats=stats,
            limits=row.get("limits")
            and LimitValues.from_dict(row["limits"], default_limits or LimitValues()).as_dict(),
        )


_COMPUTED = (
    "limits",
    "progress",
    "stats",
    "rolled_back",
    "patients_with_goals_created",
    "heartbeat_age_seconds",
    "released_in_seconds",
)


class JobList(BaseModel):
    items: list[Job]
    total: int = Field(description="Jobs matching the filters, over all pages")


class ActiveJobConflict(BaseModel):
    """409: the one-active-job guard is held."""

    detail: str
    active_job_id: uuid.UUID | None = Field(
        description="The job holding the guard; null if it ended just now"
    )
    active_job_status: JobStatus | None = None
    heartbeat_age_seconds: float | None = None
    released_in_seconds: float | None = Field(
        None, description="When the active job is released if its process is gone"
    )


class ValidationIssue(BaseModel):
    """One parameter that was refused, and why."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description='Where, e.g. ["query", "offset"]')
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """422: what was wrong with the request, parameter by parameter."""

    detail: list[ValidationIssue]


class Problem(BaseModel):
    """An error in one sentence (401, 403, 404, 503, and 409 for a job's state)."""

    detail: str


class LaterRunsConflict(BaseModel):
    """409: later real runs counted the targets' goals as duplicates: a rollback strands them."""

    detail: str = Field(description="What would happen, and the two ways out")
    later_job_ids: list[uuid.UUID] = Field(
        description="The later runs: roll them back together with the targets (jobs=…), or "
        "roll back with keep_later_runs=true and run a migration again afterwards"
    )


class PreflightCheck(BaseModel):
    name: str = Field(description="What was checked, e.g. 'table treatment_goals'")
    status: Literal["ok", "warning", "problem"]
    detail: str
    fix: str | None = Field(description="What to do, for a warning or a problem")


class Preflight(BaseModel):
    ready: bool = Field(description="No check is a problem")
    checked_at: datetime
    checks: list[PreflightCheck]


class SchemaNotReady(BaseModel):
    """409: the database cannot take a job yet (the cheap part of the preflight)."""

    detail: str
    problems: list[PreflightCheck]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    detail: str | None = None


class Finding(BaseModel):
    session_id: uuid.UUID
    item_index: int | None
    kind: Literal["invalid", "error"]
    reason: str


class FindingList(BaseModel):
    items: list[Finding]
    total: int
    counts: dict[str, int] = Field(description="Recorded findings per reason")


class PreviewGoal(BaseModel):
    session_id: uuid.UUID
    patient_id: uuid.UUID
    description: str
    category: str | None
    created_at: datetime


class PreviewList(BaseModel):
    items: list[PreviewGoal]


class TimelineSlice(BaseModel):
    """One slice of a job's run time: what its batches went through in it, at what size."""

    start: datetime
    seconds: float = Field(description="The slice's width (every slice has the same)")
    batches: int
    processed: int = Field(description="Sessions (a rollback: goals) its batches went through")
    rate_per_second: float = Field(description="processed / seconds")
    batch_size: int | None = Field(
        description="The mean size its batches asked for; null when none ran in it"
    )
    busy_seconds: float = Field(description="Time its batches took, summed over partitions")


class ThrottledPeriod(BaseModel):
    signal: str | None
    message: str | None
    from_: datetime = Field(alias="from")
    to: datetime | None = Field(description="null: still waiting")

    model_config = {"populate_by_name": True}


class Timeline(BaseModel):
    """A job's pace over time, from its batch rows, and the times it waited on a signal."""

    slices: list[TimelineSlice]
    throttled: list[ThrottledPeriod]


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    details: dict


class AuditList(BaseModel):
    items: list[AuditEntry]


class DuplicatePair(BaseModel):
    """A migrated goal and a clinician's goal with the same patient and description."""

    patient_id: uuid.UUID
    migrated_goal_id: uuid.UUID
    other_goal_id: uuid.UUID


class Verification(BaseModel):
    sessions_with_action_items: int = Field(description="Candidate sessions (action_items set)")
    total_action_items: int = Field(description="Items in JSONB; a non-array counts as one")
    goals_total: int
    goals_from_migrations: int
    all_items_accounted: bool = Field(
        description="The verdict, on the data: a real run now would create no goal (every item "
        "is a goal, a duplicate or invalid)"
    )
    goals_missing: int = Field(description="Goals a real run now would create")
    sessions_missing_goals: int = Field(description="Sessions those goals come from")
    patients_missing_goals: int = Field(description="Patients those goals are for")
    missing_session_ids: list[uuid.UUID] = Field(
        description="The first few of those sessions, in processing order"
    )
    fix: str | None = Field(description="What creates the missing goals; null when none is")
    duplicate_pairs: int = Field(
        description="Migrated goals with a clinician's goal of the same patient and description "
        "(written while their batch ran: docs/RELIABILITY.md)"
    )
    duplicate_pair_examples: list[DuplicatePair]
    last_real_run_id: uuid.UUID | None = Field(
        description="The run whose counters are checked: the newest succeeded real migration "
        "never rolled back"
    )
    last_real_run_accounted: int | None = Field(
        description="created + duplicate + invalid + items in failed sessions of that run"
    )
    last_real_run_items_in_failed_sessions: int | None
    last_real_run_goals_missing: int | None = Field(
        description="Goals that run created which are no longer in treatment_goals"
    )
    counters_agree: bool | None = Field(
        description="The second, cheaper check: that run's counters account for every item in "
        "JSONB and its goals are all there; null when no run is judged"
    )
    summary: str = Field(description="The verdict in one or more plain sentences")
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
