"""One row per committed batch of a real migration: the time its goals were inserted.

A goal is unmodified exactly while its updated_at still equals its batch's insertion time and
its status is still 'assigned'; rollback relies on this to spare clinicians' later work.
"""

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class MigrationBatch(Base):
    __tablename__ = "migration_batches"
    __table_args__ = (Index("ix_migration_batches_job_id_inserted_at", "job_id", "inserted_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("migration_jobs.id", ondelete="CASCADE"))
    partition: Mapped[int]
    inserted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
