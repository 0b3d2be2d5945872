"""Request dependencies as Annotated aliases: settings, database connection, runner, admin."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection

from app import security
from app.config import Settings
from app.jobs.runner import JobRunner


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for this request; writers open their own transaction on it."""
    async with request.app.state.db.connect() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[AsyncConnection, Depends(get_conn)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]

# auto_error=False: we answer 401 with WWW-Authenticate ourselves, for every failure alike.
_bearer = HTTPBearer(auto_error=False, description="HS256 JWT with sub, role and exp")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def current_principal(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> security.Principal:
    """The caller, from the Authorization header only (never query strings or cookies)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token")
    try:
        return security.verify(credentials.credentials, secret=settings.require_jwt_secret())
    except security.InvalidToken:
        raise _unauthorized("invalid or expired token") from None


def require_admin(
    principal: Annotated[security.Principal, Depends(current_principal)],
) -> security.Principal:
    """Only role 'admin' passes."""
    if principal.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admin role required")
    return principal


AdminUser = Annotated[security.Principal, Depends(require_admin)]
