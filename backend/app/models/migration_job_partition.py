"""A job's slices of work: each owns a patient-id range, a cursor and its own counters."""

import uuid

from sqlalchemy import BigInteger, ForeignKey, SmallInteger, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


def _counter() -> Mapped[int]:
    return mapped_column(BigInteger, server_default=text("0"))


class MigrationJobPartition(Base):
    __tablename__ = "migration_job_partitions"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("migration_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    partition: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    range_start: Mapped[uuid.UUID]
    range_end: Mapped[uuid.UUID]
    # Last patient (migrate) or goal (rollback) whose batch committed; null before the first.
    cursor: Mapped[uuid.UUID | None]
    done: Mapped[bool] = mapped_column(server_default=text("false"))
    run_token: Mapped[uuid.UUID | None]
    sessions_processed: Mapped[int] = _counter()
    sessions_with_action_items: Mapped[int] = _counter()
    goals_created: Mapped[int] = _counter()
    goals_skipped_duplicate: Mapped[int] = _counter()
    goals_skipped_invalid: Mapped[int] = _counter()
    errors: Mapped[int] = _counter()
    items_in_failed_sessions: Mapped[int] = _counter()
    patients_with_goals_created: Mapped[int] = _counter()
    goals_deleted: Mapped[int] = _counter()
    goals_kept_modified: Mapped[int] = _counter()
    findings_stored: Mapped[int] = _counter()
    preview_stored: Mapped[int] = _counter()
