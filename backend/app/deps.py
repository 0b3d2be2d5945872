"""Request dependencies as Annotated aliases: settings, database connection, runner, admin."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import oidc, security
from app.config import Settings
from app.jobs.runner import JobRunner


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> AsyncEngine:
    """The app's engine, for work that runs on several connections at once (verify)."""
    return request.app.state.db


def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


async def get_conn(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection for this request; writers open their own transaction on it."""
    async with request.app.state.db.connect() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings)]
ConnDep = Annotated[AsyncConnection, Depends(get_conn)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]

# auto_error=False: we answer 401 with WWW-Authenticate ourselves, for every failure alike.
_bearer = HTTPBearer(
    auto_error=False,
    description="AUTH_MODE=secret: an HS256 JWT with sub, role and exp, signed with JWT_SECRET. "
    "AUTH_MODE=oidc: the identity provider's access token (RS256/ES256, checked with its JWKS).",
)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def current_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> security.Principal:
    """The caller, from the Authorization header only (never query strings or cookies).

    A plain `def`: FastAPI runs it in a worker thread, where fetching the provider's keys
    (blocking urllib, up to oidc.FETCH_TIMEOUT_SECONDS) holds up no other request.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token")
    try:
        if settings.auth_mode == "oidc":
            return oidc.verify(
                credentials.credentials, keys=request.app.state.oidc_keys, settings=settings
            )
        return security.verify(
            credentials.credentials,
            secret=settings.require_jwt_secret(),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
    except oidc.TokenRefused as exc:
        raise _unauthorized(str(exc)) from None
    except security.InvalidToken:
        raise _unauthorized("invalid or expired token") from None
    except oidc.KeysUnavailable as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=oidc.UNAVAILABLE,
            headers={"Retry-After": str(exc.retry_after)},
        ) from None


def require_admin(
    settings: SettingsDep,
    principal: Annotated[security.Principal, Depends(current_principal)],
) -> security.Principal:
    """Only role 'admin' passes (with AUTH_MODE=oidc: OIDC_ADMIN_ROLE in OIDC_ROLES_CLAIM)."""
    if principal.role != "admin":
        detail = "admin role required"
        if settings.auth_mode == "oidc":
            detail += (
                f": the token's {settings.oidc_roles_claim} claim "
                f"does not hold {settings.oidc_admin_role!r}"
            )
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=detail)
    return principal


AdminUser = Annotated[security.Principal, Depends(require_admin)]


def _query_names(dependant) -> set[str]:
    """The query parameters a route declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def reject_unknown_input(request: Request) -> None:
    """422 for query parameters a route does not take, and for any request body.

    A typo such as `?dryrun=false`, or `{"dry_run": false}` sent as JSON, would otherwise be
    ignored and quietly run a dry run; every admin route takes its input in the query string.
    """
    route = request.scope.get("route")
    known = _query_names(route.dependant) if route else set()
    problems = [
        {
            "type": "extra_forbidden",
            "loc": ["query", name],
            "msg": f"unknown parameter {name!r}; this endpoint takes: "
            + (", ".join(sorted(known)) or "no parameters"),
            "input": None,
        }
        for name in request.query_params
        if name not in known
    ]
    if await request.body():
        problems.append(
            {
                "type": "extra_forbidden",
                "loc": ["body"],
                "msg": "this endpoint takes no request body; send parameters in the query string",
                "input": None,
            }
        )
    if problems:
        raise RequestValidationError(problems)
