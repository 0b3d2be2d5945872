"""Treatment goals: the relational home of action items.

The platform's table (app.schema.platform); source_job_id and the md5 and source-job indexes
are this service's additions (migrations 0003 and 0004).
"""

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

GOAL_STATUSES = ("assigned", "in_progress", "completed", "discontinued")


class TreatmentGoal(Base):
    __tablename__ = "treatment_goals"
    __table_args__ = (
        CheckConstraint(f"status IN {GOAL_STATUSES}", name="status"),
        # Duplicate look-up by patient and exact description. Descriptions may be tens of
        # kilobytes, beyond a b-tree entry's limit, so the index holds md5 of the text and
        # the query rechecks the text itself.
        Index(
            "ix_treatment_goals_patient_id_description_md5", "patient_id", text("md5(description)")
        ),
        Index(
            "ix_treatment_goals_source_job_id",
            "source_job_id",
            "id",
            postgresql_where=text("source_job_id IS NOT NULL"),
        ),
        Index("ix_treatment_goals_session_id", "session_id"),
        Index("ix_treatment_goals_therapist_id", "therapist_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    therapist_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("therapy_sessions.id", ondelete="SET NULL")
    )
    description: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'assigned'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    source_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("migration_jobs.id"))
