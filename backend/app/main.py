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
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.concurrency import run_in_threadpool

from app import admin_page, http_errors, logs, metrics, oidc
from app import db as database
from app.config import ConfigError, Settings, load_settings
from app.jobs import retention, store
from app.jobs.runner import JobRunner, recover_stale
from app.routers import health, migrations
from app.schema import preflight

log = logging.getLogger("app")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; settings are read now unless given (tests pass their own)."""
    if settings is None:
        settings = load_settings()
    settings.check_auth_mode()
    if settings.auth_mode == "secret":
        settings.require_jwt_secret()
    # Our lines carry ids and counts, never clinical text (app/logs.py).
    logs.configure(settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = database.create_engine(settings)
        # Jobs get a pool of their own: a run holds a connection per partition and one for its
        # watcher, and takes more for heartbeats and health reads; in one shared pool a status
        # poll then found it full and waited for a new connection to be opened.
        jobs_engine = database.create_engine(settings)
        app.state.settings = settings
        app.state.db = engine
        app.state.metrics = metrics.Metrics() if settings.metrics else None
        observe = app.state.metrics.observe_batch if app.state.metrics else None
        app.state.runner = JobRunner(jobs_engine, settings, on_batch=observe)
        app.state.metrics_exporter = _export_metrics(app.state.metrics, engine, settings)
        app.state.oidc_keys = None
        if settings.auth_mode == "oidc":
            app.state.oidc_keys = oidc.build_keys(settings)
            await _warm(app.state.oidc_keys, settings)
        try:
            async with engine.begin() as conn:
                await recover_stale(conn, settings)
        except (OSError, DBAPIError) as exc:
            log.error(
                "database not usable at start-up: %s",
                http_errors.classify(exc) or exc,
                extra=logs.event("app.database_unavailable_at_startup", **logs.failure(exc)),
            )
        await retention.purge(engine, settings)  # before the first request can read a preview
        purger = asyncio.create_task(retention.purge_periodically(engine, settings))
        yield
        purger.cancel()
        with suppress(asyncio.CancelledError):
            await purger
        await app.state.runner.shutdown()
        if app.state.metrics_exporter:
            await asyncio.to_thread(app.state.metrics_exporter.close)
        await jobs_engine.dispose()
        await engine.dispose()

    app = FastAPI(
        title="Goal migration service",
        description="Moves action items from therapy_sessions.extracted_notes into "
        "treatment_goals as an admin-run, resumable background job.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    if settings.metrics and settings.metrics_port is None:
        app.add_api_route("/metrics", metrics.endpoint, methods=["GET"], include_in_schema=False)
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
        log.error(
            "sign-in key set unreachable at start-up; /ready says so until it is fetched",
            extra=logs.event("auth.keys_unavailable_at_startup"),
        )
        return
    log.info(
        "sign-in with %s: %d signing keys",
        settings.oidc_issuer,
        count,
        extra=logs.event("auth.keys_fetched", issuer=settings.oidc_issuer, keys=count),
    )


def _export_metrics(
    recorder: metrics.Metrics | None, engine: AsyncEngine, settings: Settings
) -> metrics.Exporter | None:
    """With METRICS_PORT, serve the metrics there; a port that cannot be had is logged."""
    if recorder is None or settings.metrics_port is None:
        return None
    try:
        exporter = metrics.Exporter(
            recorder, engine, host=settings.metrics_host, port=settings.metrics_port
        )
    except OSError as exc:
        log.error(
            "metrics not served: cannot listen on %s:%s (%s)",
            settings.metrics_host,
            settings.metrics_port,
            exc.strerror or type(exc).__name__,
            extra=logs.event(
                "metrics.port_unavailable",
                host=settings.metrics_host,
                port=settings.metrics_port,
                error_class=type(exc).__name__,
            ),
        )
        return None
    log.info(
        "metrics served at http://%s:%d/metrics",
        settings.metrics_host,
        exporter.port,
        extra=logs.event("metrics.serving", host=settings.metrics_host, port=exporter.port),
    )
    return exporter


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
