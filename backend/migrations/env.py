"""Alembic environment: the service's migrations, over asyncpg, with the URL from app.config.

They record their revision in their own table (VERSION_TABLE), so they sit beside the
platform's own Alembic history and never read or write its alembic_version. Each revision
commits on its own: some build indexes CONCURRENTLY, which cannot run inside a transaction.
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from app import config as app_config
from app.models import Base
from app.schema.version import VERSION_TABLE

alembic_config = context.config
if alembic_config.config_file_name is not None and alembic_config.attributes.get(
    "configure_logging", True
):
    fileConfig(alembic_config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    url = alembic_config.attributes.get("database_url")
    if url:
        return app_config.normalize_database_url(url)
    try:
        return app_config.load_settings().database_url
    except app_config.ConfigError as exc:
        raise SystemExit(str(exc)) from None


def _ours(name, type_, parent_names) -> bool:
    # Autogenerate compares only the tables our models describe: the platform's other tables
    # (and its alembic_version) are none of our business and must never show up as "removed".
    return type_ != "table" or name in target_metadata.tables


_OPTIONS = {
    "target_metadata": target_metadata,
    "version_table": VERSION_TABLE,
    "include_name": _ours,
    "transaction_per_migration": True,
}


def _run(connection) -> None:
    context.configure(connection=connection, **_OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise CommandError(
        "these migrations look at the database before changing it (they adopt objects that "
        "exist and rebuild invalid indexes), so they cannot be printed as SQL: run them online"
    )
asyncio.run(_run_async())
