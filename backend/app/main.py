"""The FastAPI application: `create_app()` wires routers and a lifespan that builds the engine.

Nothing is read or connected at import. `app.main:app` is built on first access, which is when
uvicorn starts; a missing or bad setting then ends the start with one clear message.
"""

import asyncio
import logging
import sys
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from app import admin_page, http_errors, oidc
from app import db as database
from app.config import ConfigError, Settings, load_settings
from app.jobs import retention, store
from app.jobs.runner import JobRunner, recover_stale
from app.routers import health, migrations
from app.schema import preflight

log = logging.getLogger("app")


def _configure_logging() -> None:
    """Our loggers print beside uvicorn's; they carry ids and counts, never clinical text."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; settings are read now unless given (tests pass their own)."""
    if settings is None:
        settings = load_settings()
    settings.check_auth_mode()
    if settings.auth_mode == "secret":
        settings.require_jwt_secret()
    _configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = database.create_engine(settings)
        app.state.settings = settings
        app.state.db = engine
        app.state.runner = JobRunner(engine, settings)
        app.state.oidc_keys = None
        if settings.auth_mode == "oidc":
            app.state.oidc_keys = oidc.build_keys(settings)
            await _warm(app.state.oidc_keys, settings)
        try:
            async with engine.begin() as conn:
                await recover_stale(conn, settings)
        except (OSError, DBAPIError) as exc:
            log.error("database not usable at start-up: %s", http_errors.classify(exc) or exc)
        await retention.purge(engine, settings)  # before the first request can read a preview
        purger = asyncio.create_task(retention.purge_periodically(engine, settings))
        yield
        purger.cancel()
        with suppress(asyncio.CancelledError):
            await purger
        await app.state.runner.shutdown()
        await engine.dispose()

    app = FastAPI(
        title="Goal migration service",
        description="Moves action items from therapy_sessions.extracted_notes into "
        "treatment_goals as an admin-run, resumable background job.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(migrations.router)
    app.add_exception_handler(store.ActiveJobExists, migrations.active_job_conflict)
    app.add_exception_handler(store.JobStateError, migrations.job_state_conflict)
    app.add_exception_handler(store.JobNotFound, migrations.job_not_found)
    app.add_exception_handler(preflight.SchemaNotReady, migrations.schema_not_ready)
    http_errors.install(app)
    admin_page.mount(app)
    return app


async def _warm(keys: oidc.KeySet, settings: Settings) -> None:
    """Fetch the provider's keys now, so the first request need not; a failure is only logged."""
    try:
        count = await run_in_threadpool(keys.check)
    except oidc.KeysUnavailable:
        log.error("sign-in key set unreachable at start-up; /ready says so until it is fetched")
        return
    log.info("sign-in with %s: %d signing keys", settings.oidc_issuer, count)


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` lands here: build the app now, or exit with the operator's message.
    if name != "app":
        raise AttributeError(name)
    try:
        application = create_app()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    globals()["app"] = application
    return application
