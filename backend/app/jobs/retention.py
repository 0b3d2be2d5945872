"""How long clinical text stays in the job tables: dry-run previews go after a retention period.

A dry run keeps copies of the first goals it would create (descriptions and categories) in
migration_previews. Once its job has ended more than PREVIEW_RETENTION_DAYS ago they are
deleted; the job row, its counters, findings (ids and reasons only) and audit trail stay.
The app purges at start-up and then every RETENTION_CHECK_SECONDS; the command line before
each job.
"""

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import logs
from app.config import Settings

log = logging.getLogger("app.jobs")

# Previews of an active job are still being written and read: only ended jobs' go.
_PURGE_SQL = """
DELETE FROM migration_previews AS p
USING migration_jobs AS j
WHERE p.job_id = j.id
  AND j.status NOT IN ('queued', 'running', 'cancelling')
  AND coalesce(j.finished_at, j.created_at) < now() - make_interval(days => :days)
"""


async def purge_previews(conn: AsyncConnection, *, older_than_days: int) -> int:
    """Delete the previews of jobs that ended more than `older_than_days` ago; return how many."""
    result = await conn.execute(text(_PURGE_SQL), {"days": older_than_days})
    return result.rowcount


async def purge(db: AsyncEngine, settings: Settings) -> int:
    """One purge in its own transaction; a database that is away is tried again next time."""
    try:
        async with db.begin() as conn:
            purged = await purge_previews(conn, older_than_days=settings.preview_retention_days)
    except (SQLAlchemyError, OSError) as exc:
        log.warning(
            "preview purge skipped: %s",
            type(exc).__name__,
            extra=logs.event("retention.purge_skipped", **logs.failure(exc)),
        )
        return 0
    if purged:
        log.info(
            "purged %d preview rows of jobs ended over %d days ago",
            purged,
            settings.preview_retention_days,
            extra=logs.event(
                "retention.purged", rows=purged, older_than_days=settings.preview_retention_days
            ),
        )
    return purged


async def purge_periodically(db: AsyncEngine, settings: Settings) -> None:
    """Purge every retention_check_seconds, until cancelled (the lifespan purged at start)."""
    while True:
        await asyncio.sleep(settings.retention_check_seconds)
        await purge(db, settings)
