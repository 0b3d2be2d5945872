"""Therapy sessions, whose extracted_notes JSONB holds the clinicians' action items.

The platform's table; the candidates index is this service's (migration 0003).
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

# The engine's definition of a candidate session (docs/ENGINE.md); the partial index below
# and app.jobs.engine both use this exact expression, so the planner can match them.
CANDIDATE_PREDICATE = "jsonb_typeof(extracted_notes -> 'action_items') <> 'null'"


class TherapySession(Base):
    __tablename__ = "therapy_sessions"
    __table_args__ = (
        # Keyset scan of candidates by patient: the migration walks this index in batches.
        Index(
            "ix_therapy_sessions_candidates",
            "patient_id",
            "session_date",
            "id",
            postgresql_where=text(CANDIDATE_PREDICATE),
        ),
        Index("ix_therapy_sessions_therapist_id", "therapist_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    therapist_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    session_date: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    extracted_notes: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
