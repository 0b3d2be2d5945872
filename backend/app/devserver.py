"""`make run`: the service on a database of its own, ready to try, in one command.

Steps, in this order: take the port (a busy one is reported before anything starts), make sure
backend/.env has a JWT_SECRET, find the database, create the platform tables where absent
(app.schema.bootstrap) and apply the service's migrations, load demo data into an
empty database, then print the URLs, the database and an admin token, write them to
DATA_DIR/env for a second terminal (`source .data/env`), and serve until Ctrl-C.

The database: without DATABASE_URL, the embedded PostgreSQL under DATA_DIR/postgres (kept
between runs). With DATABASE_URL (environment or backend/.env) that database, and the embedded
one is never touched, unless the URL names the embedded server's own socket directory (the URL
an earlier `make run` printed), which is then started as if DATABASE_URL were unset.
"""

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import asyncpg
import uvicorn
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app import demo, embedded, logs, security
from app.cli import common
from app.config import BACKEND_DIR, ENV_FILE, ConfigError, Settings, load_settings
from app.db import create_engine
from app.schema import bootstrap

ROOT = BACKEND_DIR.parent
DATA_DIR = ROOT / ".data"
HOST, PORT = "127.0.0.1", 8000
DEMO_SESSIONS = 5000
DATABASE = "goals"
TOKEN_TTL_SECONDS = 8 * 3600


class Refused(Exception):
    """make run cannot start; the message says why and what to do, exit code 2."""


def listen(port: int) -> socket.socket:
    """The server's listening socket, taken first so a busy port stops everything at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after Ctrl-C
    try:
        sock.bind((HOST, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise Refused(
                f"port {port} on {HOST} is already in use (another make run?); "
                f"start on another port: make run PORT={port + 1}"
            ) from None
        raise Refused(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
    return sock


def _ensure_jwt_secret() -> None:
    settings = load_settings(require_database=False)
    if settings.auth_mode == "oidc":
        # It would write a JWT_SECRET beside the OIDC settings, which the app then refuses.
        raise Refused(
            "make run signs in with its own JWT_SECRET tokens, but AUTH_MODE=oidc is set; "
            "unset AUTH_MODE for make run (deployments behind the sign-in: see docs/API.md)"
        )
    if settings.jwt_secret:
        return
    with ENV_FILE.open("a") as env:
        env.write(f"JWT_SECRET={secrets.token_urlsafe(48)}\n")
    print(f"wrote a new random JWT_SECRET to {ENV_FILE}")


async def _ensure_database(server_url: str, name: str) -> None:
    url = make_url(server_url)
    conn = await asyncpg.connect(url.set(database="postgres").render_as_string(False))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def _socket_dir(database_url: str) -> Path | None:
    url = make_url(database_url)
    host = url.host or url.query.get("host")
    return Path(host).resolve() if isinstance(host, str) and host.startswith("/") else None


def embedded_url(server_url: str, name: str) -> str:
    """The embedded server's URL for database `name`, in the short form people copy."""
    url = make_url(server_url)
    return f"postgresql://{url.username}@/{name}?host={quote(str(_socket_dir(server_url)))}"


def start_embedded(pgdata: Path, name: str) -> str:
    """Start the embedded PostgreSQL on `pgdata` with database `name`; return its URL."""
    print(f"starting embedded PostgreSQL in {pgdata} ...")
    try:
        server_url = embedded.start(pgdata, durable=True, cleanup="stop")
    except (subprocess.SubprocessError, OSError) as exc:
        raise Refused(
            f"the embedded PostgreSQL in {pgdata} did not start ({type(exc).__name__}); "
            f"its log: {pgdata / 'log'}"
        ) from None
    asyncio.run(_ensure_database(server_url, name))
    return embedded_url(server_url, name)


def origin_of_database_url() -> str:
    """Where the DATABASE_URL in the settings came from (the environment wins over .env)."""
    return "the environment" if os.environ.get("DATABASE_URL", "").strip() else str(ENV_FILE)


async def _check_reachable(settings: Settings, origin: str) -> None:
    db = create_engine(settings)
    try:
        conn = await common.connect(db, settings)
        await conn.close()
    except common.CliError as exc:
        hint = (
            f"fix DATABASE_URL in {ENV_FILE}, or remove it there to use the embedded PostgreSQL"
            if origin == str(ENV_FILE)
            else "fix DATABASE_URL, or unset it (DATABASE_URL= make run) to use the embedded one"
        )
        reason = str(exc).splitlines()[0]
        raise Refused(f"{reason} (DATABASE_URL from {origin})\n{hint}") from None
    finally:
        await db.dispose()


def find_database(data_dir: Path) -> tuple[Settings, str]:
    """Settings on the database to serve, and where its URL came from ('embedded' or origin)."""
    pgdata = data_dir / "postgres"
    given = load_settings(require_database=False).database_url
    if not given:
        os.environ["DATABASE_URL"] = start_embedded(pgdata, DATABASE)
        return load_settings(), "embedded"
    origin = origin_of_database_url()
    socket_dir = _socket_dir(given)
    if socket_dir is not None and (
        socket_dir == pgdata.resolve() or socket_dir.parent == embedded.runtime_dir()
    ):
        print(f"DATABASE_URL (from {origin}) names the embedded PostgreSQL")
        start_embedded(pgdata, make_url(given).database)
    settings = load_settings()
    asyncio.run(_check_reachable(settings, origin))
    return settings, origin


def upgrade(settings: Settings) -> None:
    """The platform tables where absent, then alembic upgrade head; or Refused, in one line."""
    try:
        print(bootstrap.install(settings.database_url).describe())
    except bootstrap.BootstrapError as exc:
        raise Refused(str(exc)) from None
    except (CommandError, DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise Refused(
            f"alembic upgrade head failed on {common.describe_database(settings.database_url)}: "
            f"{reason}"
        ) from None


async def _admin_id(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval("SELECT id FROM users WHERE role = 'admin' ORDER BY created_at")
        return str(found) if found else "make-run-admin"
    finally:
        await conn.close()


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def env_file_text(*, database_url: str | None, origin: str, token: str, path: Path) -> str:
    """The snippet a second terminal sources: TOKEN, and DATABASE_URL unless one is set."""
    lines = [
        f"# Written by make run (pid {os.getpid()}); removed when it stops.",
        f"# In a second terminal, from the repository root: source {_shown(path)}",
    ]
    if database_url is None:
        lines.append(f"# DATABASE_URL: the one you set ({origin}); the scripts read it there too.")
    else:
        url, env_file = shlex.quote(database_url), shlex.quote(str(ENV_FILE))
        said = f"{_shown(path)}: DATABASE_URL"
        lines += [
            'if [ -n "${DATABASE_URL:-}" ]; then',
            f'    [ "$DATABASE_URL" = {url} ] || echo "{said} is already set in this shell, to '
            "another database; left as it is (unset DATABASE_URL to use make run's)\" >&2",
            "elif grep -Eqs '^[[:space:]]*(export[[:space:]]+)?DATABASE_URL[[:space:]]*="
            f"[[:space:]]*[^[:space:]]' {env_file}; then",
            f'    echo "{said} is set in {ENV_FILE}; the scripts use that one" >&2',
            "else",
            f"    export DATABASE_URL={url}",
            "fi",
        ]
    lines.append(f"export TOKEN={shlex.quote(token)}")
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str) -> None:
    """Write atomically, readable by its owner only: it holds an admin token."""
    partial = path.with_name(path.name + ".partial")
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    partial.replace(path)


def remove_env_file(path: Path, text: str) -> None:
    """Remove the file if it is still ours (another make run on this DATA_DIR may own it now)."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            path.unlink()


def banner(
    *, base: str, settings: Settings, origin: str, token: str, env_path: Path, exported: str | None
) -> str:
    """What make run prints before serving: URLs, the database, and lines to copy."""
    source = f"source {_shown(env_path)}"
    where = common.describe_database(settings.database_url)
    lines = [
        "",
        f"  API docs:    {base}/docs",
        f"  Admin page:  {base}/admin/",
        f"  Database:    {where}"
        + (" (embedded)" if origin == "embedded" else f" (DATABASE_URL from {origin})"),
        "",
        f"  For the scripts, alembic and curl in a second terminal ({source}, or copy):",
    ]
    if exported:
        lines.append(f"    export DATABASE_URL={shlex.quote(exported)}")
    else:
        lines.append(f"    # DATABASE_URL: the one you set ({origin})")
    lines += [
        f"    export TOKEN={shlex.quote(token)}",
        f"  (an admin token, valid {TOKEN_TTL_SECONDS // 3600} h)",
        "",
        f'  try: curl -X POST -H "Authorization: Bearer $TOKEN" '
        f'"{base}/admin/migrations/goals?dry_run=true"',
        "",
    ]
    return "\n".join(lines)


class _Server(uvicorn.Server):
    """uvicorn on the socket taken at the start; it says where it listens, as `uvicorn` does."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            base = f"http://{self.config.host}:{self.config.port}"
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on %s (Press CTRL+C to quit)", base
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.devserver", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--port", type=int, default=PORT, help=f"0 picks a free one (default {PORT})"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="embedded PostgreSQL in DIR/postgres, the second terminal's DIR/env (default .data)",
    )
    parser.add_argument(
        "--demo-sessions",
        type=int,
        default=DEMO_SESSIONS,
        help="demo sessions loaded into an empty database (default %(default)s)",
    )
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir.expanduser().resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sock = listen(args.port)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return serve(args, sock)
    except (Refused, ConfigError) as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        sock.close()


def serve(args: argparse.Namespace, sock: socket.socket) -> int:
    """Everything after the port is ours: database, migrations, demo data, token, serving."""
    _ensure_jwt_secret()
    args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings, origin = find_database(args.data_dir)
    upgrade(settings)
    dsn = demo.asyncpg_dsn(settings.database_url)
    try:
        counts = asyncio.run(demo.write(dsn, sessions=args.demo_sessions, if_empty=True))
    except (asyncpg.PostgresError, OSError) as exc:
        raise Refused(f"could not load demo data: {exc}") from None
    if counts.sessions:
        print(f"loaded demo data: {counts.sessions} sessions, {counts.users} users")
    token = security.mint(
        secret=settings.require_jwt_secret(),
        sub=asyncio.run(_admin_id(dsn)),
        role="admin",
        ttl_seconds=TOKEN_TTL_SECONDS,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    port = sock.getsockname()[1]
    base = f"http://{HOST}:{port}"
    env_path = args.data_dir / "env"
    # Only the embedded database's URL is handed on; one the user set stays where they set it.
    exported = os.environ["DATABASE_URL"] if origin == "embedded" else None
    text = env_file_text(database_url=exported, origin=origin, token=token, path=env_path)
    write_env_file(env_path, text)
    print(
        banner(
            base=base,
            settings=settings,
            origin=origin,
            token=token,
            env_path=env_path,
            exported=exported,
        )
    )
    from app.main import create_app

    config = uvicorn.Config(create_app(settings), host=HOST, port=port, log_level="info")
    logs.configure(settings.log_format)  # again: uvicorn.Config has just set up its own loggers
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shut down cleanly, then passed the Ctrl-C on
    finally:
        remove_env_file(env_path, text)
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main())
