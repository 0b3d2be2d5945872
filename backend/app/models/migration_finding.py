"""What a job found wrong: invalid items and failed sessions, capped per job."""

import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class MigrationFinding(Base):
    __tablename__ = "migration_findings"
    __table_args__ = (
        CheckConstraint("kind IN ('invalid', 'error')", name="kind"),
        Index("ix_migration_findings_job_id_kind", "job_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("migration_jobs.id", ondelete="CASCADE"))
    session_id: Mapped[uuid.UUID]
    item_index: Mapped[int | None]
    kind: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
