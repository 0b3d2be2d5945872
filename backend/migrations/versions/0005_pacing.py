"""pacing: adaptive batch sizes, health thresholds and the throttle a job waits on; batch timings

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 12:30:00

Only the service's own job tables change. Each column is nullable or has a constant default, so
PostgreSQL adds it without rewriting the table. Jobs from before keep fixed batch sizes
(adaptive false) and no limits (the service's defaults apply when they are resumed). Batch rows
from before have no size or timing: charts start where the timings start.
"""

from collections.abc import Sequence

from alembic import op

from app.schema import online

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE migration_jobs ADD COLUMN IF NOT EXISTS adaptive boolean DEFAULT false NOT NULL"
    )
    op.execute("ALTER TABLE migration_jobs ADD COLUMN IF NOT EXISTS limits jsonb")
    op.execute("ALTER TABLE migration_jobs ADD COLUMN IF NOT EXISTS throttle jsonb")
    for column, kind in (("batch_size", "integer"), ("processed", "integer"), ("seconds", "real")):
        op.execute(f"ALTER TABLE migration_batches ADD COLUMN IF NOT EXISTS {column} {kind}")


def downgrade() -> None:
    # The downgrade after this one (0004) may refuse: ask first, so a refusal undoes nothing.
    online.refuse_losing_provenance(op.get_bind())
    for column in ("seconds", "processed", "batch_size"):
        op.drop_column("migration_batches", column)
    for column in ("throttle", "limits", "adaptive"):
        op.drop_column("migration_jobs", column)
