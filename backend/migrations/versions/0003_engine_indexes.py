"""the indexes the engine needs on the platform's tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00

Built CONCURRENTLY (outside a transaction), so clinicians' writes go on while they build. An
index left INVALID by an interrupted build is dropped and built again; a valid one is kept.
Downgrade drops them the same way and touches nothing else.
"""

from collections.abc import Sequence

from alembic import op

from app.schema import online

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    # The keyset scan of candidate sessions by patient: each batch walks this index.
    "ix_therapy_sessions_candidates": (
        "CREATE INDEX CONCURRENTLY {name} ON therapy_sessions (patient_id, session_date, id) "
        "WHERE jsonb_typeof(extracted_notes -> 'action_items') <> 'null'"
    ),
    # Duplicate look-up by patient and description; md5 because a description may be larger
    # than a b-tree entry can hold (the query rechecks the text itself).
    "ix_treatment_goals_patient_id_description_md5": (
        "CREATE INDEX CONCURRENTLY {name} ON treatment_goals (patient_id, md5(description))"
    ),
}


def upgrade() -> None:
    conn = op.get_bind()
    online.require_platform_tables(conn)
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            online.create_index_concurrently(conn, name, definition)


def downgrade() -> None:
    online.log.info("dropping indexes %s; no data is touched", ", ".join(INDEXES))
    with op.get_context().autocommit_block():
        for name in INDEXES:
            online.drop_index_concurrently(op.get_bind(), name)
