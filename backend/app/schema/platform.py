"""The practice platform's tables: what the engine needs of them, and their shape on a new install.

The platform owns users, therapy_sessions and treatment_goals. On its real database they exist
long before this service, with the platform's own constraint names and maybe more columns; the
engine only relies on what NEEDS and FOREIGN_KEYS list. CREATE_SQL is the shape the models
describe, used only where the tables do not exist yet (bootstrap.py): `make run`, the tests, a
new install. The service's own additions (source_job_id, the engine's indexes) come from the
migrations, never from here.
"""

from dataclasses import dataclass

PLATFORM_TABLES = ("users", "therapy_sessions", "treatment_goals")

UUID = ("uuid",)
TEXT = ("text", "character varying")
TIMESTAMPTZ = ("timestamp with time zone",)
NAIVE = ("timestamp without time zone",)


@dataclass(frozen=True)
class Need:
    """A column the engine reads or writes; nullable None means either is fine."""

    table: str
    column: str
    types: tuple[str, ...]
    nullable: bool | None = None
    # Types that work with a caveat: a warning in the preflight, not a problem.
    tolerated: tuple[str, ...] = ()


NEEDS = (
    Need("users", "id", UUID, nullable=False),
    Need("therapy_sessions", "id", UUID, nullable=False),
    # Batches walk candidate sessions by patient_id range: a NULL patient would never be read.
    Need("therapy_sessions", "patient_id", UUID, nullable=False),
    Need("therapy_sessions", "therapist_id", UUID),
    Need("therapy_sessions", "session_date", TIMESTAMPTZ, tolerated=NAIVE),
    Need("therapy_sessions", "extracted_notes", ("jsonb",)),
    Need("treatment_goals", "id", UUID),
    Need("treatment_goals", "patient_id", UUID),
    Need("treatment_goals", "therapist_id", UUID),
    Need("treatment_goals", "session_id", UUID),
    Need("treatment_goals", "description", TEXT),
    # Items without a category become goals with a NULL category.
    Need("treatment_goals", "category", TEXT, nullable=True),
    Need("treatment_goals", "status", TEXT),
    Need("treatment_goals", "created_at", TIMESTAMPTZ, tolerated=NAIVE),
    # Rollback tells untouched goals by updated_at still equal to their batch's insert time.
    Need("treatment_goals", "updated_at", TIMESTAMPTZ, tolerated=NAIVE),
)

# Every column a migrated goal's INSERT names; any other NOT NULL column needs a default.
GOAL_COLUMNS_WRITTEN = frozenset(n.column for n in NEEDS if n.table == "treatment_goals") | {
    "source_job_id"
}

# (table, column, referenced table): where a foreign key exists it must point there, or the
# goals the engine copies from sessions would be refused.
FOREIGN_KEYS = (
    ("therapy_sessions", "patient_id", "users"),
    ("therapy_sessions", "therapist_id", "users"),
    ("treatment_goals", "patient_id", "users"),
    ("treatment_goals", "therapist_id", "users"),
    ("treatment_goals", "session_id", "therapy_sessions"),
)

CREATE_SQL = """
CREATE TABLE users (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    email text NOT NULL,
    full_name text,
    role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_users PRIMARY KEY (id),
    CONSTRAINT uq_users_email UNIQUE (email),
    CONSTRAINT ck_users_role CHECK (role IN ('admin', 'therapist', 'patient'))
);

CREATE TABLE therapy_sessions (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    patient_id uuid NOT NULL,
    therapist_id uuid NOT NULL,
    session_date timestamptz NOT NULL,
    extracted_notes jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_therapy_sessions PRIMARY KEY (id),
    CONSTRAINT fk_therapy_sessions_patient_id_users FOREIGN KEY (patient_id) REFERENCES users (id),
    CONSTRAINT fk_therapy_sessions_therapist_id_users
        FOREIGN KEY (therapist_id) REFERENCES users (id)
);
CREATE INDEX ix_therapy_sessions_therapist_id ON therapy_sessions (therapist_id);

CREATE TABLE treatment_goals (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    patient_id uuid NOT NULL,
    therapist_id uuid NOT NULL,
    session_id uuid,
    description text NOT NULL,
    category text,
    status text NOT NULL DEFAULT 'assigned',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_treatment_goals PRIMARY KEY (id),
    CONSTRAINT ck_treatment_goals_status
        CHECK (status IN ('assigned', 'in_progress', 'completed', 'discontinued')),
    CONSTRAINT fk_treatment_goals_patient_id_users FOREIGN KEY (patient_id) REFERENCES users (id),
    CONSTRAINT fk_treatment_goals_therapist_id_users
        FOREIGN KEY (therapist_id) REFERENCES users (id),
    CONSTRAINT fk_treatment_goals_session_id_therapy_sessions
        FOREIGN KEY (session_id) REFERENCES therapy_sessions (id) ON DELETE SET NULL
);
CREATE INDEX ix_treatment_goals_session_id ON treatment_goals (session_id);
CREATE INDEX ix_treatment_goals_therapist_id ON treatment_goals (therapist_id);
"""
