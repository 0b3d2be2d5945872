"""Alembic environment: runs migrations over asyncpg with the URL from app.config."""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from app import config as app_config
from app.models import Base

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


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
