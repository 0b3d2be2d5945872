"""Database failures as HTTP answers: 503 with a clear message, never a traceback.

    unreachable   the server is down, restarting, refusing or out of connections (also a
                  database with ALLOW_CONNECTIONS false: 55000 at connect), or a connection
                  broke mid-request (what app.jobs.errors calls transient, plus SQLSTATE
                  classes 53, 28 and 3D: out of resources, login, no database)
    busy          a lock or statement timeout, deadlock or serialization failure: try again
    not migrated  a table or column the service needs is missing (42P01, 42703)

Each answers 503 with Retry-After, and the next request tries afresh: the pool's pre-ping
replaces dead connections, so the API recovers by itself once the database is back. Any other
database error is a fault of ours: a 500 saying what failed by SQLSTATE and class only (the
statement's parameters may hold clinical text).
"""

import logging

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app import logs
from app.jobs import errors

log = logging.getLogger("app")

RETRY_AFTER_SECONDS = 5
UNREACHABLE = "database unavailable: the service cannot reach PostgreSQL; retry in a few seconds"
BUSY = "database busy: a lock or time limit stopped this request; retry in a few seconds"
NOT_MIGRATED = (
    "database schema not ready: run the service's migrations "
    "(see GET /admin/migrations/goals/preflight)"
)

_BUSY_STATES = ("40", "55P03", "57014")
_NOT_MIGRATED_STATES = ("42P01", "42703")
_UNREACHABLE_STATES = ("53", "28", "3D")
# The 503's kind, as log lines name it.
_PROBLEMS = {UNREACHABLE: "unreachable", BUSY: "busy", NOT_MIGRATED: "schema_not_ready"}


def classify(exc: BaseException) -> str | None:
    """The 503 message for a database failure, or None when it is not one we expect."""
    if isinstance(exc, PoolTimeout):
        return BUSY
    state = errors.error_info(exc).sqlstate or ""
    if state in _NOT_MIGRATED_STATES:
        return NOT_MIGRATED
    if state.startswith(_BUSY_STATES):
        return BUSY
    if (
        state.startswith(_UNREACHABLE_STATES)
        or errors.refusing_connections(exc)
        or errors.classify(exc) is errors.Kind.TRANSIENT
    ):
        return UNREACHABLE
    # asyncpg's own connection errors, should one reach us unwrapped; its client-side
    # DataError is also a ValueError: a value it could not encode, our bug, not an outage.
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError):
        return UNREACHABLE
    return None


def unavailable(content: dict) -> JSONResponse:
    """A 503 carrying `content`, with Retry-After."""
    return JSONResponse(
        status_code=503, content=content, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 for an unreachable, busy or unmigrated database; 500 for anything else."""
    message = classify(exc)
    if message is not None:
        log.warning(
            "%s %s: 503, %s",
            request.method,
            request.url.path,
            errors.describe(exc),
            extra=_fields(
                "http.database_unavailable",
                request,
                exc,
                503,
                _PROBLEMS.get(message, "unavailable"),
            ),
        )
        return unavailable({"detail": message})
    log.error(
        "%s %s failed: %s",
        request.method,
        request.url.path,
        errors.describe(exc),
        extra=_fields("http.database_error", request, exc, 500, "unexpected"),
    )
    return JSONResponse(status_code=500, content={"detail": errors.describe(exc)})


def _fields(event: str, request: Request, exc: Exception, status: int, problem: str) -> dict:
    return logs.event(
        event,
        method=request.method,
        path=request.url.path,
        status=status,
        problem=problem,
        **logs.failure(exc),
    )


def install(app: FastAPI) -> None:
    """Route every database and connection failure of a request through database_error."""
    for exc_class in (SQLAlchemyError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        app.add_exception_handler(exc_class, database_error)
