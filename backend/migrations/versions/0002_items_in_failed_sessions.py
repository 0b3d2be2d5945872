"""count the items of failed sessions, so verification can reconcile every item

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: PostgreSQL adds the column without rewriting the table.
    op.add_column(
        "migration_job_partitions",
        sa.Column(
            "items_in_failed_sessions", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("migration_job_partitions", "items_in_failed_sessions")
