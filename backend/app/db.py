"""Engine and sessionmaker factories; the app builds them in its lifespan, scripts on start."""

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from app.config import Settings


def create_engine(settings: Settings, **kwargs) -> AsyncEngine:
    """An asyncpg engine whose connections always plan set-based statements for their parameters.

    asyncpg prepares every statement; after five runs PostgreSQL may switch to a generic plan
    that cannot see a batch's key range and picks sequential scans. force_custom_plan keeps
    the per-batch plans honest (docs/ENGINE.md).
    """
    connect_args = {
        "server_settings": {
            "plan_cache_mode": "force_custom_plan",
            "application_name": "goal-migration",
        }
    }
    return create_async_engine(
        settings.database_url, connect_args=connect_args, pool_pre_ping=True, **kwargs
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    """Sessions that keep attributes after commit, so responses can be built from them."""
    return async_sessionmaker(engine, expire_on_commit=False)
