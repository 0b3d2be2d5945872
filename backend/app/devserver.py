"""`make run`: the service on a database of its own, ready to try, in one command.

Without DATABASE_URL it starts the embedded PostgreSQL under .data/postgres (kept between runs);
with it, it uses that database and never touches the embedded one. Either way it applies the
migrations, loads demo data into an empty database, makes sure backend/.env has a JWT_SECRET,
prints an admin token and the URLs, and serves on 127.0.0.1:8000.
"""

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

import asyncpg
import uvicorn
from alembic import command
from sqlalchemy.engine import make_url

from app import admin_page, demo, embedded, security
from app.config import BACKEND_DIR, ENV_FILE, ConfigError, load_settings
from app.db import alembic_config

DATA_DIR = BACKEND_DIR.parent / ".data" / "postgres"
HOST, PORT = "127.0.0.1", 8000


def _ensure_jwt_secret() -> None:
    settings = load_settings(require_database=False)
    if settings.jwt_secret:
        return
    with ENV_FILE.open("a") as env:
        env.write(f"JWT_SECRET={secrets.token_urlsafe(48)}\n")
    print(f"wrote a new random JWT_SECRET to {ENV_FILE}")


async def _ensure_database(server_url: str, name: str) -> str:
    url = make_url(server_url)
    conn = await asyncpg.connect(url.set(database="postgres").render_as_string(False))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(False)


async def _admin_id(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval("SELECT id FROM users WHERE role = 'admin' ORDER BY created_at")
        return str(found) if found else "make-run-admin"
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.devserver", description=__doc__)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="embedded PostgreSQL data")
    parser.add_argument("--demo-sessions", type=int, default=5000)
    args = parser.parse_args(argv)
    try:
        _ensure_jwt_secret()
        if not load_settings(require_database=False).database_url:
            print(f"starting embedded PostgreSQL in {args.data_dir} ...")
            server_url = embedded.start(args.data_dir, durable=True, cleanup="stop")
            os.environ["DATABASE_URL"] = asyncio.run(_ensure_database(server_url, "goals"))
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2

    command.upgrade(alembic_config(settings.database_url), "head")

    dsn = demo.asyncpg_dsn(settings.database_url)
    counts = asyncio.run(demo.write(dsn, sessions=args.demo_sessions, if_empty=True))
    if counts.sessions:
        print(f"loaded demo data: {counts.sessions} sessions, {counts.users} users")
    token = security.mint(
        secret=settings.require_jwt_secret(),
        sub=asyncio.run(_admin_id(dsn)),
        role="admin",
        ttl_seconds=8 * 3600,
    )
    base = f"http://{HOST}:{args.port}"
    from app.main import create_app

    print(
        "\n"
        f"  Admin page:  {base}{admin_page.PAGE_PATH}\n"
        f"  API docs:    {base}/docs\n"
        f"  Admin token (8 h):\n    {token}\n\n"
        f'  try: curl -X POST -H "Authorization: Bearer $TOKEN" '
        f'"{base}/admin/migrations/goals?dry_run=true"\n'
    )
    uvicorn.run(create_app(settings), host=HOST, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    os.chdir(BACKEND_DIR)
    sys.exit(main())
