"""job safety and operator needs: items of failed sessions, patients given goals, rollbacks of
several jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults and nullable columns: PostgreSQL adds them without rewriting the table.
    # IF NOT EXISTS: job tables adopted from an earlier install (see 0001) may have them.
    op.execute(
        "ALTER TABLE migration_job_partitions "
        "ADD COLUMN IF NOT EXISTS items_in_failed_sessions bigint DEFAULT 0 NOT NULL"
    )
    op.execute(
        "ALTER TABLE migration_job_partitions "
        "ADD COLUMN IF NOT EXISTS patients_with_goals_created bigint DEFAULT 0 NOT NULL"
    )
    op.execute("ALTER TABLE migration_jobs ADD COLUMN IF NOT EXISTS target_job_ids uuid[]")
    op.execute(
        "UPDATE migration_jobs SET target_job_ids = ARRAY[target_job_id] "
        "WHERE target_job_id IS NOT NULL AND target_job_ids IS NULL"
    )


def downgrade() -> None:
    op.drop_column("migration_jobs", "target_job_ids")
    op.drop_column("migration_job_partitions", "patients_with_goals_created")
    op.drop_column("migration_job_partitions", "items_in_failed_sessions")
