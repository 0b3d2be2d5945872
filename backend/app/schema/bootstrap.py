"""Create the platform's tables where they do not exist: a separate step from the migrations.

`python -m app.schema.bootstrap`, and install() for `make run`, the tests and the bench:

    none of users, therapy_sessions, treatment_goals   create all three (platform.CREATE_SQL)
    all three                                          check them as the preflight does,
                                                       create nothing
    some                                               refuse: a half-built platform schema
                                                       is not this service's to finish

On the platform's real database this step is not needed: the tables are there, and only the
service's migrations run (`alembic upgrade head`).
"""

import asyncio
import sys
from dataclasses import dataclass, field

from alembic import command
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.config import ConfigError, load_settings, normalize_database_url
from app.db import alembic_config
from app.schema import preflight
from app.schema.platform import CREATE_SQL, PLATFORM_TABLES

# Two processes bootstrapping one empty database at once (say, two replicas) take turns.
_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('goal-migration: platform bootstrap'))"


class BootstrapError(Exception):
    """The platform tables are there but not as the engine needs them, or only some are."""


@dataclass(frozen=True)
class Outcome:
    created: bool
    problems: list[preflight.Check] = field(default_factory=list)

    def describe(self) -> str:
        tables = ", ".join(PLATFORM_TABLES)
        if self.created:
            return f"platform tables: created {tables} (the database had none)"
        return f"platform tables: {tables} exist; checked them, created nothing"


async def create_platform_tables_if_absent(conn: AsyncConnection) -> Outcome:
    """Create the three platform tables on a database that has none; else check and keep them."""
    await conn.execute(text(_LOCK_SQL))
    present = [
        name
        for name in PLATFORM_TABLES
        if (await conn.execute(text("SELECT to_regclass(:n)"), {"n": name})).scalar()
    ]
    if not present:
        for statement in filter(str.strip, CREATE_SQL.split(";")):
            await conn.execute(text(statement))
        return Outcome(created=True)
    if len(present) < len(PLATFORM_TABLES):
        missing = [name for name in PLATFORM_TABLES if name not in present]
        raise BootstrapError(
            f"found {', '.join(present)} but not {', '.join(missing)}: this looks like part of "
            "the platform's schema, which only the platform should complete; check DATABASE_URL"
        )
    problems = []
    for table in PLATFORM_TABLES:
        checks = await preflight.check_table(conn, table)
        problems.extend(c for c in checks if c.status == "problem")
    return Outcome(created=False, problems=problems)


async def bootstrap(database_url: str) -> Outcome:
    """Run the step on `database_url` in its own transaction."""
    engine = create_async_engine(normalize_database_url(database_url), poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            return await create_platform_tables_if_absent(conn)
    finally:
        await engine.dispose()


def install(database_url: str, *, configure_logging: bool = True) -> Outcome:
    """An empty or existing database made ready: platform tables where absent, then migrations."""
    outcome = asyncio.run(bootstrap(database_url))
    if outcome.problems:
        raise BootstrapError(_problem_lines(outcome))
    command.upgrade(alembic_config(database_url, configure_logging=configure_logging), "head")
    return outcome


def _problem_lines(outcome: Outcome) -> str:
    lines = ["the platform tables exist but the engine cannot work with them:"]
    for check in outcome.problems:
        lines.append(f"  {check.name}: {check.detail}" + (f" ({check.fix})" if check.fix else ""))
    return "\n".join(lines)


def main() -> int:
    try:
        outcome = asyncio.run(bootstrap(load_settings(jwt_secret=None).database_url))
    except (ConfigError, BootstrapError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(outcome.describe())
    if outcome.problems:
        print(_problem_lines(outcome), file=sys.stderr)
        return 2
    print("next: cd backend && alembic upgrade head")
    return 0


if __name__ == "__main__":
    sys.exit(main())
