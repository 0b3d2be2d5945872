"""What both scripts share: exit codes, errors meant for the operator, and the database preflight.

A CliError carries one or two lines an operator can act on and the exit code to leave with;
the scripts print it as is, never with a traceback.
"""

import asyncio
import contextlib
import getpass
import logging
import os
import sys

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import logs
from app.config import BACKEND_DIR, ConfigError, Settings, load_settings
from app.models import Base
from app.schema import version
from app.schema.platform import PLATFORM_TABLES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_ACTIVE_JOB = 3
EXIT_INTERRUPTED = 130

# What `make run` writes for a second terminal while it serves (app.devserver).
MAKE_RUN_ENV = BACKEND_DIR.parent / ".data" / "env"

CONNECT_TIMEOUT_SECONDS = 15.0
UPGRADE_HINT = "run: alembic upgrade head"

# The guide names treatment_goals; the tables the migration reads and writes come first.
_FIRST_TABLES = ("treatment_goals", "therapy_sessions", "users")
REQUIRED_TABLES = _FIRST_TABLES + tuple(sorted(set(Base.metadata.tables) - set(_FIRST_TABLES)))

_MISSING_TABLES_SQL = """
SELECT name
FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS required(name, position)
WHERE to_regclass(name) IS NULL
ORDER BY position
"""


class CliError(Exception):
    """A problem the operator can fix; its message is printed as is."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG):
        super().__init__(message)
        self.exit_code = exit_code


def say(message: str) -> None:
    """A line on stderr that never raises: after a hang-up the terminal may be gone (EIO)."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            # Nothing more can reach the operator; keep the interpreter's final flush quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())


def prepare_streams() -> None:
    """Flush each line (progress must show while piped) and never crash on emoji."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, errors="replace")


class _JobEndsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # The scripts report how a job ended from its row; the runner's own error line would
        # say it twice.
        return record.levelno < logging.ERROR


def configure_logging() -> None:
    """Warnings to stderr; the runner's log lines carry ids and counts, never clinical text.

    With LOG_FORMAT=json they are JSON lines (app/logs.py); the report stays text.
    """
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a caller's own set-up wins
        handler = logging.StreamHandler()
        json_lines = _log_format() == "json"
        handler.setFormatter(
            logs.JsonFormatter() if json_lines else logging.Formatter("%(levelname)s: %(message)s")
        )
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("app.jobs").addFilter(_JobEndsFilter())


def _log_format() -> str:
    # A setting that does not parse is reported when the command loads its settings.
    try:
        return load_settings(require_database=False, jwt_secret=None).log_format
    except ConfigError:
        return "text"


def load() -> Settings:
    """The scripts' settings: DATABASE_URL is required, JWT_SECRET is not read at all."""
    try:
        return load_settings(jwt_secret=None)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("DATABASE_URL not found") and MAKE_RUN_ENV.exists():
            message = (
                "DATABASE_URL not found in environment\n"
                f"make run is serving a database: source {MAKE_RUN_ENV} (or set DATABASE_URL "
                "in the environment or in backend/.env)"
            )
        raise CliError(message) from None


def where(database_url: str) -> str:
    """'host H, port P' of a settings URL (a socket directory counts as the host)."""
    url = make_url(database_url)
    host = url.host or url.query.get("host") or "localhost"
    port = url.port or url.query.get("port") or 5432
    if isinstance(host, tuple):
        host = ",".join(host)
    if isinstance(port, tuple):
        port = ",".join(port)
    return f"host {host}, port {port}"


def _one(value: str | tuple[str, ...] | None) -> str | None:
    return ",".join(value) if isinstance(value, tuple) else value


def _login() -> str:
    try:
        return getpass.getuser()  # what libpq and asyncpg use when the URL names no user
    except (KeyError, OSError):
        return "(your login name)"


def describe_database(database_url: str) -> str:
    """The database, host (or socket directory), port and user of a URL; never the password."""
    url = make_url(database_url)
    host = url.host or _one(url.query.get("host")) or "localhost"
    port = url.port or _one(url.query.get("port")) or 5432
    user = url.username or os.environ.get("PGUSER") or _login()
    place = f"the unix socket in {host}" if host.startswith("/") else f"host {host}"
    return f"{url.database} on {place}, port {port}, user {user}"


def confirm(question: str) -> bool:
    """Ask on a terminal (stderr, so --json stays clean); without one, proceed as asked."""
    stdin = sys.stdin
    if stdin is None or stdin.closed or not stdin.isatty():
        return True
    try:
        print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
        answer = stdin.readline()
    except EOFError:
        answer = ""
    if not answer:
        print(file=sys.stderr)  # Ctrl-D: end the prompt's line
    return answer.strip().lower() in ("y", "yes")


def _driver_reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        exc = getattr(orig, "__cause__", None) or orig or exc
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


async def connect(db: AsyncEngine, settings: Settings) -> AsyncConnection:
    """Open a connection, or raise CliError naming host, port and the driver's reason."""
    unreachable = f"cannot connect to the database at {where(settings.database_url)}"
    hint = "check DATABASE_URL and that PostgreSQL is running and accepts connections there"
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            return await db.connect()
    except TimeoutError:
        raise CliError(
            f"{unreachable}: no answer within {CONNECT_TIMEOUT_SECONDS:g} s\n{hint}"
        ) from None
    except (OSError, DBAPIError) as exc:
        raise CliError(f"{unreachable}: {_driver_reason(exc)}\n{hint}") from None


def _missing_table_hint(table: str) -> str:
    if table in PLATFORM_TABLES:
        return (
            "is DATABASE_URL the platform's database? On an empty one run: "
            "python -m app.schema.bootstrap && alembic upgrade head"
        )
    return UPGRADE_HINT


async def check_schema(conn: AsyncConnection) -> None:
    """Refuse to start on a database the service's migrations have not brought to head."""
    missing = (
        (await conn.execute(text(_MISSING_TABLES_SQL), {"names": list(REQUIRED_TABLES)}))
        .scalars()
        .all()
    )
    if missing:
        raise CliError(f"relation '{missing[0]}' does not exist\n{_missing_table_hint(missing[0])}")
    current, head = await version.current(conn), version.head()
    if current != head:
        raise CliError(
            f"the database schema is at revision {current or 'none'}, "
            f"this code expects {head}\n{UPGRADE_HINT}"
        )


async def preflight(db: AsyncEngine, settings: Settings) -> None:
    """Connect and check the schema before any job is created."""
    conn = await connect(db, settings)
    try:
        await check_schema(conn)
    finally:
        await conn.close()
