"""DDL on a live platform table without holding clinicians up: used by the service's migrations.

Two rules. A statement that needs a table's strongest lock (ADD COLUMN, a foreign key) runs
with a short lock_timeout and is retried: while it waits, every later query on the table queues
behind it, so it must give up quickly and try again rather than wait out a long transaction.
Indexes are built with CREATE INDEX CONCURRENTLY, which never blocks writes but cannot run in a
transaction and, if interrupted, leaves an INVALID index behind; that leftover is dropped and
built again. Both take a connection in autocommit mode (alembic's autocommit_block()).
"""

import logging
import time

from alembic import context
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from app.schema.platform import PLATFORM_TABLES

log = logging.getLogger("alembic.goal_migration")

LOCK_TIMEOUT = "1s"
LOCK_ATTEMPTS = 30
LOCK_NOT_AVAILABLE = "55P03"

_INDEX_STATE_SQL = """
SELECT i.indisvalid AND i.indisready
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE c.relname = :name AND c.relnamespace = to_regnamespace(current_schema())
"""


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error wrapped by SQLAlchemy, if any."""
    orig = getattr(exc, "orig", exc)
    return getattr(getattr(orig, "__cause__", None), "sqlstate", None) or getattr(
        orig, "sqlstate", None
    )


def with_lock_retry(
    conn: Connection,
    sql: str,
    *,
    lock_timeout: str = LOCK_TIMEOUT,
    attempts: int = LOCK_ATTEMPTS,
) -> int:
    """Run `sql` with a short lock_timeout, retrying while the lock is busy; return attempts."""
    for attempt in range(1, attempts + 1):
        conn.execute(text(f"SET lock_timeout = '{lock_timeout}'"))
        try:
            conn.execute(text(sql))
            return attempt
        except DBAPIError as exc:
            if sqlstate(exc) != LOCK_NOT_AVAILABLE:
                raise
            if attempt == attempts:
                raise CommandError(
                    f"gave up after {attempts} tries of {lock_timeout} each to run: {sql}. A long "
                    "transaction holds the table; find it in pg_stat_activity, let it end, and "
                    "run the same command again (what was done so far stays done)"
                ) from None
        finally:
            conn.execute(text("RESET lock_timeout"))
        log.info("table busy, lock not granted within %s; trying again (%d)", lock_timeout, attempt)
        time.sleep(min(0.2 * attempt, 5.0))
    raise AssertionError("unreachable")


def index_state(conn: Connection, name: str) -> str:
    """'valid', 'invalid' (an interrupted concurrent build) or 'missing'."""
    valid = conn.execute(text(_INDEX_STATE_SQL), {"name": name}).scalar()
    return "missing" if valid is None else "valid" if valid else "invalid"


def create_index_concurrently(conn: Connection, name: str, definition: str) -> str:
    """Build `name` ("CREATE INDEX CONCURRENTLY {name} ON ...") unless a valid one exists.

    Returns what was done: 'kept', 'built' or 'rebuilt' (an invalid leftover was dropped).
    """
    state = index_state(conn, name)
    if state == "valid":
        log.info("index %s exists and is valid: kept", name)
        return "kept"
    if state == "invalid":
        log.info("dropping index %s left invalid by an interrupted build", name)
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
    log.info("building index %s concurrently (writes go on meanwhile)", name)
    # An index build may take far longer than a DBA's statement_timeout allows a query.
    conn.execute(text("SET statement_timeout = 0"))
    try:
        conn.execute(text(definition.format(name=name)))
    finally:
        conn.execute(text("RESET statement_timeout"))
    return "rebuilt" if state == "invalid" else "built"


def drop_index_concurrently(conn: Connection, name: str) -> None:
    """Drop `name` without blocking writes, saying so."""
    if index_state(conn, name) != "missing":
        log.info("dropping index %s", name)
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))


def require_platform_tables(conn: Connection) -> None:
    """Refuse, with what to do, when the platform's tables are not there to build on."""
    missing = [t for t in PLATFORM_TABLES if not table_exists(conn, t)]
    if missing:
        raise CommandError(
            f"table {missing[0]} does not exist: this is not the platform's database, or it is "
            "empty. Check DATABASE_URL; on an empty database create the platform tables first: "
            "python -m app.schema.bootstrap"
        )


def table_exists(conn: Connection, name: str) -> bool:
    return conn.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar()


def column_exists(conn: Connection, table: str, column: str) -> bool:
    return conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:table) "
            "AND attname = :column AND attnum > 0 AND NOT attisdropped)"
        ),
        {"table": table, "column": column},
    ).scalar()


def constraint_exists(conn: Connection, table: str, name: str) -> bool:
    return conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint "
            "WHERE conrelid = to_regclass(:table) AND conname = :name)"
        ),
        {"table": table, "name": name},
    ).scalar()


def refuse_losing_provenance(conn: Connection) -> int:
    """Refuse a downgrade that would drop treatment_goals.source_job_id while goals carry it.

    The column is the only record of which goals the service created (rollback needs it).
    Returns how many goals carry it; `-x force=true` on the downgrade overrides the refusal.
    Every downgrade from 0004 up asks this first, so a refused downgrade undoes nothing.
    """
    if not column_exists(conn, "treatment_goals", "source_job_id"):
        return 0
    migrated = conn.execute(
        text("SELECT count(*) FROM treatment_goals WHERE source_job_id IS NOT NULL")
    ).scalar()
    force = context.get_x_argument(as_dictionary=True).get("force", "").lower() == "true"
    if migrated and not force:
        raise CommandError(
            f"{migrated} goals were created by migration jobs, and treatment_goals.source_job_id "
            "is the only record of which: without it they can no longer be rolled back or told "
            "apart. Roll those jobs back first, or keep the column; to drop it anyway: "
            "add -x force=true to the downgrade, e.g. alembic -x force=true downgrade 0003 "
            "(no goal is deleted either way)"
        )
    return migrated
