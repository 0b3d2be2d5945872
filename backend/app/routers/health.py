"""Probes for load balancers and orchestrators: no auth, no data."""

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app import http_errors, oidc, schemas
from app.schema import preflight

router = APIRouter(tags=["operations"])

READY_TIMEOUT_SECONDS = 5.0


@router.get("/health", response_model=schemas.Health, summary="The process is alive")
async def health():
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=schemas.Readiness,
    responses={503: {"model": schemas.Readiness}},
    summary="The database is reachable and its schema at this code's head "
    "(and with AUTH_MODE=oidc, the sign-in key set can be fetched)",
)
async def ready(request: Request):
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with request.app.state.db.connect() as conn:
                problems = await preflight.schema_problems(conn, columns=False)
    except TimeoutError:
        return _unavailable(http_errors.UNREACHABLE)
    except (SQLAlchemyError, OSError) as exc:
        return _unavailable(http_errors.classify(exc) or http_errors.UNREACHABLE)
    if problems:
        return _unavailable(http_errors.NOT_MIGRATED)
    keys = request.app.state.oidc_keys
    if keys is not None:
        try:
            # Cached keys answer at once; else one fetch, in a thread, bounded by its timeout.
            await run_in_threadpool(keys.check)
        except oidc.KeysUnavailable:
            return _unavailable(oidc.UNAVAILABLE)
    return {"status": "ready", "detail": None}


def _unavailable(message: str) -> JSONResponse:
    return http_errors.unavailable({"status": "unavailable", "detail": message})
