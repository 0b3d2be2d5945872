"""Request and response models of the admin API; field names are a contract."""

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.jobs.engine import STAT_NAMES
from app.jobs.store import ROLLBACK_STAT_NAMES

JobStatus = Literal[
    "queued", "running", "cancelling", "cancelled", "succeeded", "failed", "interrupted"
]


class Progress(BaseModel):
    sessions_total: int | None = Field(
        description="Units to go through: candidate sessions, or goals for a rollback"
    )
    sessions_processed: int
    percent: float | None
    rate_per_second: float | None = Field(description="This run's pace since it (re)started")
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


class Job(BaseModel):
    id: uuid.UUID
    kind: Literal["migrate", "rollback"]
    dry_run: bool
    status: JobStatus
    batch_size: int
    pause_ms: int
    max_errors: int
    force: bool
    requested_by: str
    target_job_id: uuid.UUID | None
    rolled_back_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    progress: Progress
    stats: MigrateStats | RollbackStats
    error: str | None

    @classmethod
    def from_row(cls, row: dict) -> "Job":
        """Build the public job object from store.get_job's row."""
        if row["kind"] == "migrate":
            stats = MigrateStats(**{n: row[n] for n in STAT_NAMES})
            processed = row["sessions_processed"]
        else:
            stats = RollbackStats(**{n: row[n] for n in ROLLBACK_STAT_NAMES})
            processed = row["goals_deleted"] + row["goals_kept_modified"]
        total = row["sessions_total"]
        percent = rate = eta = None
        if total is not None:
            percent = min(round(100.0 * processed / total, 2), 100.0) if total else 100.0
        if row["status"] in ("running", "cancelling") and row["run_seconds"]:
            seconds = float(row["run_seconds"])
            rate = round((processed - row["run_start_processed"]) / seconds, 2) if seconds else None
            if rate and total is not None:
                eta = round(max(total - processed, 0) / rate, 1)
        return cls(
            **{k: row[k] for k in cls.model_fields if k in row and k not in ("progress", "stats")},
            progress=Progress(
                sessions_total=total,
                sessions_processed=processed,
                percent=percent,
                rate_per_second=rate,
                eta_seconds=eta,
            ),
            stats=stats,
        )


class JobList(BaseModel):
    items: list[Job]


class ActiveJobConflict(BaseModel):
    detail: str
    active_job_id: uuid.UUID | None


class Problem(BaseModel):
    detail: str


class Finding(BaseModel):
    session_id: uuid.UUID
    item_index: int | None
    kind: Literal["invalid", "error"]
    reason: str


class FindingList(BaseModel):
    items: list[Finding]
    total: int


class PreviewGoal(BaseModel):
    session_id: uuid.UUID
    patient_id: uuid.UUID
    description: str
    category: str | None
    created_at: datetime


class PreviewList(BaseModel):
    items: list[PreviewGoal]


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    action: str
    details: dict


class AuditList(BaseModel):
    items: list[AuditEntry]


class Verification(BaseModel):
    sessions_with_action_items: int = Field(description="Candidate sessions (action_items set)")
    total_action_items: int = Field(description="Items in JSONB; a non-array counts as one")
    goals_total: int
    goals_from_migrations: int
    last_real_run_id: uuid.UUID | None = Field(
        description="The run judged: the newest succeeded real migration never rolled back"
    )
    last_real_run_accounted: int | None = Field(
        description="created + duplicate + invalid + items in failed sessions of that run"
    )
    last_real_run_items_in_failed_sessions: int | None
    last_real_run_goals_missing: int | None = Field(
        description="Goals that run created which are no longer in treatment_goals"
    )
    all_items_accounted: bool
    summary: str = Field(description="The verdict in one or more plain sentences")
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
