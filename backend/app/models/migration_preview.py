"""The first goals a dry run would create, kept for the preview endpoint."""

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class MigrationPreview(Base):
    __tablename__ = "migration_previews"

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("migration_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    item_index: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[uuid.UUID]
    description: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
