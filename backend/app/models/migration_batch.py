"""One row per committed batch of a job: when it committed, its size and how long it took.

For a real migration, inserted_at is the time the batch's goals were inserted: a goal is
unmodified exactly while its updated_at still equals it and its status is still 'assigned';
rollback relies on this to spare clinicians' later work. The sizes and timings drive adaptive
batch sizing's record and the job page's chart (queries.timeline).
"""

import uuid
from datetime import datetime

from sqlalchemy import REAL, BigInteger, DateTime, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class MigrationBatch(Base):
    __tablename__ = "migration_batches"
    __table_args__ = (Index("ix_migration_batches_job_id_inserted_at", "job_id", "inserted_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("migration_jobs.id", ondelete="CASCADE"))
    partition: Mapped[int]
    inserted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The size the batch asked for (sessions, or goals for a rollback), what it went through, and
    # its duration from its first statement to its commit. NULL on batches from before 0005.
    batch_size: Mapped[int | None]
    processed: Mapped[int | None]
    seconds: Mapped[float | None] = mapped_column(REAL)
