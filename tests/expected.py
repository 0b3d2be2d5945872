"""Expected results from the independent model (tests/model.py), fed the rows the database holds.

Read the database before the run under test: its sessions and the goals that were there before
any migration. Nothing here runs or imports the engine.
"""

import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import model


@dataclass
class Rows:
    """What the database holds, as the model takes it."""

    sessions: list[dict]
    existing: list[tuple]  # (patient_id, description) of goals no migration made


async def read_rows(db: AsyncEngine) -> Rows:
    """Every session, and the goals no migration made, read back with plain SQL.

    Goals with a source_job_id are left out, so the rows may also be read after a run.
    """
    async with db.connect() as conn:
        sessions = [
            {
                "id": r.id,
                "patient_id": r.patient_id,
                "therapist_id": r.therapist_id,
                "session_date": r.session_date,
                "notes": json.loads(r.notes) if r.notes is not None else None,
            }
            for r in await conn.execute(
                text(
                    "SELECT id, patient_id, therapist_id, session_date, "
                    "extracted_notes::text AS notes FROM therapy_sessions"
                )
            )
        ]
        existing = [
            tuple(r)
            for r in await conn.execute(
                text(
                    "SELECT patient_id, description FROM treatment_goals "
                    "WHERE source_job_id IS NULL"
                )
            )
        ]
    return Rows(sessions, existing)


def from_rows(rows: Rows, fail_sessions=frozenset()) -> model.Outcome:
    """What the rules say a real run over these rows must produce: .stats, .goals, .findings."""
    return model.migrate(rows.sessions, rows.existing, frozenset(fail_sessions))


async def model_outcome(db: AsyncEngine, fail_sessions=frozenset()) -> model.Outcome:
    """What the rules say a real run over this database's current rows must produce."""
    return from_rows(await read_rows(db), fail_sessions)


async def doubled_pairs(db: AsyncEngine) -> int:
    """(patient, description) pairs that occur more than once among migrated goals."""
    async with db.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM treatment_goals "
                    "WHERE source_job_id IS NOT NULL "
                    "GROUP BY patient_id, description HAVING count(*) > 1) AS d"
                )
            )
        ).scalar_one()
