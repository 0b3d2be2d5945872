"""Admin tokens: HS256 JWTs with sub, role, exp (aud, iss if configured), signed with JWT_SECRET."""

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is missing, malformed, wrongly signed, expired or lacks a required claim."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and role."""

    sub: str
    role: str


def mint(
    *,
    secret: str,
    sub: str,
    role: str,
    ttl_seconds: int,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A signed token for `sub` with `role`, valid for `ttl_seconds`; aud and iss if given."""
    now = int(time.time())
    claims = {"sub": sub, "role": role, "iat": now, "exp": now + ttl_seconds}
    claims.update({k: v for k, v in (("aud", audience), ("iss", issuer)) if v})
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(
    token: str, *, secret: str, audience: str | None = None, issuer: str | None = None
) -> Principal:
    """Check signature, algorithm and expiry; only HS256 is accepted, never 'none'.

    With `audience` or `issuer` the token must carry that aud or iss claim, so a token minted
    with the same secret for another service does not pass.
    """
    required = ["exp", "sub", "role"] + ["aud"] * bool(audience) + ["iss"] * bool(issuer)
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            options={"require": required},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if not isinstance(claims["sub"], str) or not isinstance(claims["role"], str):
        raise InvalidToken("sub and role must be strings")
    if not claims["sub"].strip():
        raise InvalidToken("sub must name someone")  # jobs and the audit record it
    return Principal(sub=claims["sub"], role=claims["role"])
