"""The engine factory and Alembic's config; built in the lifespan or a script's start."""

from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.config import BACKEND_DIR, Settings

# How this service's connections name themselves in pg_stat_activity; the throttle leaves them
# out when it counts the sessions at work beside a job.
APPLICATION_NAME = "goal-migration"


def create_engine(settings: Settings, **kwargs) -> AsyncEngine:
    """An asyncpg engine that plans every statement for its actual parameters.

    With a statement cache, asyncpg reuses prepared statements, and after five runs PostgreSQL
    may switch a batch statement to a generic plan that cannot see the batch's key range. With
    the cache off each execution is planned afresh. We do not set plan_cache_mode instead: it
    would also force re-planning of the foreign-key checks PostgreSQL runs for every inserted
    goal, which tripled a real run's time (docs/ENGINE.md).

    JIT is off: a batch's estimate (a hundred items per session, PostgreSQL's guess for
    jsonb_array_elements) passes jit_above_cost, and compiling took 27 ms of every 170 ms
    batch on a server built with LLVM, for statements too short to earn it back.
    """
    idle_ms = int(settings.idle_in_transaction_seconds * 1000)
    connect_args = {
        "prepared_statement_cache_size": 0,
        "server_settings": {
            "application_name": APPLICATION_NAME,
            "idle_in_transaction_session_timeout": str(idle_ms),
            "jit": "off",
        },
    }
    return create_async_engine(
        settings.database_url, connect_args=connect_args, pool_pre_ping=True, **kwargs
    )


def alembic_config(database_url: str | None = None, *, configure_logging: bool = True) -> Config:
    """Alembic's config for this project, from any working directory, on `database_url`."""
    config = Config(str(BACKEND_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(BACKEND_DIR / "migrations"))
    if database_url:
        config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = configure_logging
    return config
