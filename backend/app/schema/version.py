"""Where the service's migrations record their revision, and whether a database is at head."""

import functools

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import alembic_config

# Our own table, so the platform's alembic_version (and its history) is never read or written.
VERSION_TABLE = "goal_migration_alembic_version"


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The revision this code's migrations end at."""
    return _scripts().get_current_head()


def known() -> set[str]:
    """Every revision this code's migrations know."""
    return {script.revision for script in _scripts().walk_revisions()}


async def current(conn: AsyncConnection) -> str | None:
    """The revision the database is at, or None before the service's first migration."""
    if (await conn.execute(text(f"SELECT to_regclass('{VERSION_TABLE}')"))).scalar() is None:
        return None
    rows = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
    return ",".join(sorted(rows.scalars())) or None
