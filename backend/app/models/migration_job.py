"""The job table: one row per migration or rollback run, its state and its lease."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

JOB_KINDS = ("migrate", "rollback")
JOB_STATUSES = (
    "queued",
    "running",
    "cancelling",
    "cancelled",
    "succeeded",
    "failed",
    "interrupted",
)
# A job holds the one-active-job guard while queued or running; a running one holds a lease.
ACTIVE_STATUSES = ("queued", "running", "cancelling")
RUNNING_STATUSES = ("running", "cancelling")
TERMINAL_STATUSES = ("cancelled", "succeeded", "failed", "interrupted")
RESUMABLE_STATUSES = ("cancelled", "interrupted", "failed")


class MigrationJob(Base):
    __tablename__ = "migration_jobs"
    __table_args__ = (
        CheckConstraint(f"kind IN {JOB_KINDS}", name="kind"),
        CheckConstraint(f"status IN {JOB_STATUSES}", name="status"),
        CheckConstraint("batch_size BETWEEN 1 AND 10000", name="batch_size"),
        CheckConstraint("(kind = 'rollback') = (target_job_id IS NOT NULL)", name="target"),
        # At most one active job per database, whatever process or replica started it.
        Index(
            "uq_migration_jobs_one_active",
            text("(true)"),
            unique=True,
            postgresql_where=text(f"status IN {ACTIVE_STATUSES}"),
        ),
        Index("ix_migration_jobs_created_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    kind: Mapped[str] = mapped_column(Text)
    dry_run: Mapped[bool]
    force: Mapped[bool] = mapped_column(server_default=text("false"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'queued'"))
    batch_size: Mapped[int]
    pause_ms: Mapped[int] = mapped_column(server_default=text("0"))
    max_errors: Mapped[int] = mapped_column(server_default=text("1000"))
    requested_by: Mapped[str] = mapped_column(Text)
    target_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("migration_jobs.id"))
    # Every job a rollback takes back (target_job_id is the first): one migration may have
    # taken several jobs, e.g. a failed one and the new job that finished it.
    target_job_ids: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(Uuid))
    rolled_back_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("migration_jobs.id"))
    # A fresh token per run: batches of a process that lost its lease no longer match it.
    run_token: Mapped[uuid.UUID | None]
    sessions_total: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where the current run began, so rate and ETA measure this run only after a resume.
    run_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    run_start_processed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # batch_size is where an adaptive job starts; its batches then aim at a duration (pacing.py).
    adaptive: Mapped[bool] = mapped_column(server_default=text("false"))
    # The health thresholds this job yields to (throttle.Limits), changeable while it runs, and
    # what it waits on right now (throttle.Trip), NULL while it is not waiting.
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    throttle: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
