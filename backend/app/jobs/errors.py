"""What a failure during a job means, and how to say it without quoting clinical text.

Every error a batch can meet falls in one of three kinds:

    SESSION    the data of one session is at fault (a data exception, a constraint, a trigger
               raising): replay the batch per session and isolate the failing ones
    TRANSIENT  the database was busy, full or briefly gone (serialization failure, deadlock,
               lock or statement timeout, lost connection, server restarting or refusing
               connections, out of connections, memory or disk, our pool exhausted): retry
               the whole batch with backoff
    FATAL      nothing a retry or a replay can fix (schema missing, permissions, a bug): end the
               job with a message that says what to do; it can be resumed once that is done

PostgreSQL's messages and DETAIL quote row values, so only the SQLSTATE, the driver's error
class and object names (constraint, table, routine) are ever kept or logged.
"""

import enum
import re
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class Kind(enum.Enum):
    SESSION = "session"
    TRANSIENT = "transient"
    FATAL = "fatal"


# Data exceptions, integrity violations, errors raised by triggers and routines, and limits a
# value exceeds: the session's own data is at fault.
_SESSION_CLASSES = ("22", "23", "P0", "2F", "38", "39", "54")
# Serialization failure and deadlock (40), lock not available (55P03), statement timeout or
# cancel (57014), server shutting down or restarting (57P01-57P03), connection (08), and the
# idle-in-transaction timeout that ends a frozen client's transaction (25P03), and the server
# out of a resource: connection slots (53300: two replicas' pools can fill max_connections),
# memory (53200), disk (53100).
_TRANSIENT = (
    *("40", "08", "55P03", "57014", "57P01", "57P02", "57P03", "25P03"),
    *("53300", "53200", "53100"),
)
# SQLSTATE 55000 is also raised by statements that are simply wrong for an object's state; at
# connect it means the database does not allow connections right now (ALLOW_CONNECTIONS false).
_REFUSING = "not currently accepting connections"


@dataclass(frozen=True)
class DatabaseErrorInfo:
    """A database error reduced to what is safe to keep: no DETAIL, no row values."""

    sqlstate: str | None
    error_class: str
    constraint: str | None = None
    table: str | None = None
    routine: str | None = None

    def __str__(self) -> str:
        parts = [f"{self.error_class} (SQLSTATE {self.sqlstate or 'unknown'})"]
        if self.constraint:
            parts.append(f'constraint "{self.constraint}"')
        if self.table:
            parts.append(f'table "{self.table}"')
        if self.routine:
            parts.append(f"raised in {self.routine}")
        return ", ".join(parts)


def _driver_error(exc: BaseException) -> BaseException:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "__cause__", None) or orig


def error_info(exc: BaseException) -> DatabaseErrorInfo:
    """Describe a driver error by its SQLSTATE, class and object names only."""
    pg = _driver_error(exc)
    sqlstate = getattr(pg, "sqlstate", None) or getattr(getattr(exc, "orig", exc), "sqlstate", None)
    routine = None
    context = getattr(pg, "context", None) or ""
    if "function " in context:
        routine = context.split("function ", 1)[1].split("(", 1)[0].strip() + "()"
    return DatabaseErrorInfo(
        sqlstate=sqlstate,
        error_class=type(pg).__name__,
        constraint=getattr(pg, "constraint_name", None),
        table=getattr(pg, "table_name", None),
        routine=routine,
    )


def refusing_connections(exc: BaseException) -> bool:
    """The database exists but does not accept connections now (55000 at connect)."""
    pg = _driver_error(exc)
    return error_info(exc).sqlstate == "55000" and _REFUSING in str(getattr(pg, "message", ""))


def classify(exc: BaseException) -> Kind:
    """Which of the three kinds a failure during a batch is."""
    if isinstance(exc, OSError | ConnectionError | TimeoutError | PoolTimeout):
        # connect refused or reset while the server restarts; every pooled connection busy
        return Kind.TRANSIENT
    if not isinstance(exc, DBAPIError):
        return Kind.FATAL
    if exc.connection_invalidated:
        return Kind.TRANSIENT
    sqlstate = error_info(exc).sqlstate
    if sqlstate is None:
        # The driver lost the connection without a server error (closed, reset, timed out).
        name = type(_driver_error(exc)).__name__
        connection_lost = ("Connection", "Interface", "Closed", "Timeout")
        return Kind.TRANSIENT if any(w in name for w in connection_lost) else Kind.FATAL
    if sqlstate.startswith(_TRANSIENT) or refusing_connections(exc):
        return Kind.TRANSIENT
    if sqlstate.startswith(_SESSION_CLASSES):
        return Kind.SESSION
    return Kind.FATAL


# A statement or lock timeout (57014 also covers a cancel): the batch asked too much at once.
_TIMEOUTS = ("57014", "55P03")


def timed_out(exc: BaseException) -> bool:
    """A statement or lock timeout ended the statement."""
    return isinstance(exc, DBAPIError) and error_info(exc).sqlstate in _TIMEOUTS


def missing_relation(exc: BaseException) -> str | None:
    """The table named by an undefined-table error (a schema name, never data)."""
    pg = _driver_error(exc)
    match = re.search(r'relation "([^"]+)"', str(getattr(pg, "message", "") or ""))
    return match.group(1) if match else None


def describe(exc: BaseException) -> str:
    """A job-level error in words an operator can act on, without any clinical text."""
    if isinstance(exc, DBAPIError):
        info = error_info(exc)
        if info.sqlstate == "42P01":
            relation = missing_relation(exc) or "treatment_goals"
            return (
                f"relation '{relation}' does not exist; run: alembic upgrade head "
                "(on an empty database, first: python -m app.schema.bootstrap)"
            )
        if exc.connection_invalidated or info.sqlstate is None:
            return f"database connection lost: {info.error_class}"
        if info.sqlstate == "53300":
            return f"database full: no connection slot free ({info})"
        if refusing_connections(exc):
            return f"database refusing connections ({info})"
        return f"database error: {info}"
    if isinstance(exc, OSError):
        return f"database unreachable: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, PoolTimeout):
        return "no database connection free: every connection of this process's pool is busy"
    return f"internal error: {type(exc).__name__}"
