"""SQLAlchemy models, one per file; importing this package registers them all on Base.

They describe the whole schema as app.schema.bootstrap.install() builds it: the platform's
tables plus this service's objects (tests/integration/test_schema.py compares the two).
"""

from app.models.base import Base
from app.models.migration_audit import MigrationAudit
from app.models.migration_batch import MigrationBatch
from app.models.migration_finding import MigrationFinding
from app.models.migration_job import MigrationJob
from app.models.migration_job_partition import MigrationJobPartition
from app.models.migration_preview import MigrationPreview
from app.models.therapy_session import TherapySession
from app.models.treatment_goal import TreatmentGoal
from app.models.user import User

__all__ = [
    "Base",
    "MigrationAudit",
    "MigrationBatch",
    "MigrationFinding",
    "MigrationJob",
    "MigrationJobPartition",
    "MigrationPreview",
    "TherapySession",
    "TreatmentGoal",
    "User",
]
