"""the service's job tables

Revision ID: 0001
Revises:
Create Date: 2026-11-25 12:58:02.278546

Only the service's own tables: migration jobs, their partitions, batches, findings, previews
and audit trail. The platform's tables are not created here (app.schema.bootstrap does that on
an empty database only). A database built before the service kept its own version table
already has these tables, exactly as below: they are adopted as they are.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql

from app.schema import online

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Dropped in this order on downgrade (children first).
JOB_TABLES = (
    "migration_previews",
    "migration_job_partitions",
    "migration_findings",
    "migration_batches",
    "migration_audit",
    "migration_jobs",
)


def upgrade() -> None:
    conn = op.get_bind()
    # Checked first so that an empty or wrong database gets the advice and nothing else.
    online.require_platform_tables(conn)
    present = [t for t in JOB_TABLES if online.table_exists(conn, t)]
    if not present:
        _create()
    elif len(present) == len(JOB_TABLES) and online.column_exists(
        conn, "migration_jobs", "run_token"
    ):
        # Built by this service before it kept its own version table: keep them, history and all.
        online.log.info("job tables found from an earlier install: kept as they are")
    else:
        raise CommandError(
            f"found tables this service did not build under its job tables' names "
            f"({', '.join(present)}); rename or drop them, then run the upgrade again"
        )


def _create() -> None:
    op.create_table(
        "migration_jobs",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("force", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("pause_ms", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_errors", sa.Integer(), server_default=sa.text("1000"), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("target_job_id", sa.Uuid(), nullable=True),
        sa.Column("rolled_back_by", sa.Uuid(), nullable=True),
        sa.Column("run_token", sa.Uuid(), nullable=True),
        sa.Column("sessions_total", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "run_start_processed", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.CheckConstraint(
            "(kind = 'rollback') = (target_job_id IS NOT NULL)",
            name=op.f("ck_migration_jobs_target"),
        ),
        sa.CheckConstraint("kind IN ('migrate', 'rollback')", name=op.f("ck_migration_jobs_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'cancelling', 'cancelled', 'succeeded', 'failed', 'interrupted')",
            name=op.f("ck_migration_jobs_status"),
        ),
        sa.CheckConstraint(
            "batch_size BETWEEN 1 AND 10000", name=op.f("ck_migration_jobs_batch_size")
        ),
        sa.ForeignKeyConstraint(
            ["rolled_back_by"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_jobs_rolled_back_by_migration_jobs"),
        ),
        sa.ForeignKeyConstraint(
            ["target_job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_jobs_target_job_id_migration_jobs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_jobs")),
    )
    op.create_index("ix_migration_jobs_created_at", "migration_jobs", ["created_at"], unique=False)
    op.create_index(
        "uq_migration_jobs_one_active",
        "migration_jobs",
        [sa.literal_column("(true)")],
        unique=True,
        postgresql_where=sa.text("status IN ('queued', 'running', 'cancelling')"),
    )
    op.create_table(
        "migration_audit",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_audit_job_id_migration_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_audit")),
    )
    op.create_index(
        "ix_migration_audit_job_id_id", "migration_audit", ["job_id", "id"], unique=False
    )
    op.create_table(
        "migration_batches",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("inserted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_batches_job_id_migration_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_batches")),
    )
    op.create_index(
        "ix_migration_batches_job_id_inserted_at",
        "migration_batches",
        ["job_id", "inserted_at"],
        unique=False,
    )
    op.create_table(
        "migration_findings",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint("kind IN ('invalid', 'error')", name=op.f("ck_migration_findings_kind")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_findings_job_id_migration_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_findings")),
    )
    op.create_index(
        "ix_migration_findings_job_id_kind",
        "migration_findings",
        ["job_id", "kind", "id"],
        unique=False,
    )
    op.create_table(
        "migration_job_partitions",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("partition", sa.SmallInteger(), nullable=False),
        sa.Column("range_start", sa.Uuid(), nullable=False),
        sa.Column("range_end", sa.Uuid(), nullable=False),
        sa.Column("cursor", sa.Uuid(), nullable=True),
        sa.Column("done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("run_token", sa.Uuid(), nullable=True),
        sa.Column(
            "sessions_processed", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "sessions_with_action_items",
            sa.BigInteger(),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("goals_created", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "goals_skipped_duplicate", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column(
            "goals_skipped_invalid", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("errors", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("goals_deleted", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "goals_kept_modified", sa.BigInteger(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("findings_stored", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("preview_stored", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_job_partitions_job_id_migration_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "partition", name=op.f("pk_migration_job_partitions")),
    )
    op.create_table(
        "migration_previews",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_migration_previews_job_id_migration_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_id", "session_id", "item_index", name=op.f("pk_migration_previews")
        ),
    )


def downgrade() -> None:
    conn = op.get_bind()
    jobs = conn.execute(sa.text("SELECT count(*) FROM migration_jobs")).scalar()
    online.log.info(
        "dropping the job tables %s with the history of %d jobs; no platform table or goal is touched",
        ", ".join(JOB_TABLES),
        jobs,
    )
    for table in JOB_TABLES:
        op.drop_table(table)
