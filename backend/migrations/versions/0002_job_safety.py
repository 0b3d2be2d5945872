"""job safety and operator needs: items of failed sessions, rollbacks of several jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Constant defaults and nullable columns: PostgreSQL adds them without rewriting the table.
    op.add_column(
        "migration_job_partitions",
        sa.Column(
            "items_in_failed_sessions", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )
    op.add_column(
        "migration_jobs",
        sa.Column("target_job_ids", postgresql.ARRAY(sa.Uuid()), nullable=True),
    )
    op.execute(
        "UPDATE migration_jobs SET target_job_ids = ARRAY[target_job_id] "
        "WHERE target_job_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_column("migration_jobs", "target_job_ids")
    op.drop_column("migration_job_partitions", "items_in_failed_sessions")
