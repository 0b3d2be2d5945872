"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 12:58:02.278546
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

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
        "users",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("full_name", sa.Text(), nullable=True),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("role IN ('admin', 'therapist', 'patient')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
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
    op.create_table(
        "therapy_sessions",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("session_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("extracted_notes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["users.id"], name=op.f("fk_therapy_sessions_patient_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["users.id"], name=op.f("fk_therapy_sessions_therapist_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_therapy_sessions")),
    )
    op.create_index(
        "ix_therapy_sessions_candidates",
        "therapy_sessions",
        ["patient_id", "session_date", "id"],
        unique=False,
        postgresql_where=sa.text("jsonb_typeof(extracted_notes -> 'action_items') <> 'null'"),
    )
    op.create_index(
        "ix_therapy_sessions_therapist_id", "therapy_sessions", ["therapist_id"], unique=False
    )
    op.create_table(
        "treatment_goals",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("patient_id", sa.Uuid(), nullable=False),
        sa.Column("therapist_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'assigned'"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("source_job_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "status IN ('assigned', 'in_progress', 'completed', 'discontinued')",
            name=op.f("ck_treatment_goals_status"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["users.id"], name=op.f("fk_treatment_goals_patient_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["therapy_sessions.id"],
            name=op.f("fk_treatment_goals_session_id_therapy_sessions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["source_job_id"],
            ["migration_jobs.id"],
            name=op.f("fk_treatment_goals_source_job_id_migration_jobs"),
        ),
        sa.ForeignKeyConstraint(
            ["therapist_id"], ["users.id"], name=op.f("fk_treatment_goals_therapist_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_treatment_goals")),
    )
    op.create_index(
        "ix_treatment_goals_patient_id_description_md5",
        "treatment_goals",
        ["patient_id", sa.literal_column("md5(description)")],
        unique=False,
    )
    op.create_index(
        "ix_treatment_goals_session_id", "treatment_goals", ["session_id"], unique=False
    )
    op.create_index(
        "ix_treatment_goals_source_job_id",
        "treatment_goals",
        ["source_job_id", "id"],
        unique=False,
        postgresql_where=sa.text("source_job_id IS NOT NULL"),
    )
    op.create_index(
        "ix_treatment_goals_therapist_id", "treatment_goals", ["therapist_id"], unique=False
    )


def downgrade() -> None:

    op.drop_index("ix_treatment_goals_therapist_id", table_name="treatment_goals")
    op.drop_index(
        "ix_treatment_goals_source_job_id",
        table_name="treatment_goals",
        postgresql_where=sa.text("source_job_id IS NOT NULL"),
    )
    op.drop_index("ix_treatment_goals_session_id", table_name="treatment_goals")
    op.drop_index("ix_treatment_goals_patient_id_description_md5", table_name="treatment_goals")
    op.drop_table("treatment_goals")
    op.drop_index("ix_therapy_sessions_therapist_id", table_name="therapy_sessions")
    op.drop_index(
        "ix_therapy_sessions_candidates",
        table_name="therapy_sessions",
        postgresql_where=sa.text("jsonb_typeof(extracted_notes -> 'action_items') <> 'null'"),
    )
    op.drop_table("therapy_sessions")
    op.drop_table("migration_previews")
    op.drop_table("migration_job_partitions")
    op.drop_index("ix_migration_findings_job_id_kind", table_name="migration_findings")
    op.drop_table("migration_findings")
    op.drop_index("ix_migration_batches_job_id_inserted_at", table_name="migration_batches")
    op.drop_table("migration_batches")
    op.drop_index("ix_migration_audit_job_id_id", table_name="migration_audit")
    op.drop_table("migration_audit")
    op.drop_table("users")
    op.drop_index(
        "uq_migration_jobs_one_active",
        table_name="migration_jobs",
        postgresql_where=sa.text("status IN ('queued', 'running', 'cancelling')"),
    )
    op.drop_index("ix_migration_jobs_created_at", table_name="migration_jobs")
    op.drop_table("migration_jobs")
