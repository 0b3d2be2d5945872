"""Sign-in with the identity provider (AUTH_MODE=oidc): its access tokens, checked with its keys.

    header   alg one of OIDC_ALGORITHMS, and a kid         else TokenRefused        (401)
    key      the kid in the provider's key set (JWKS)      unknown: TokenRefused    (401)
                                                           unreachable: KeysUnavailable (503)
    claims   signature, exp, iss, aud as configured        else TokenRefused        (401)
    person   OIDC_SUBJECT_CLAIM, a non-empty string        else TokenRefused        (401)
    role     OIDC_ROLES_CLAIM holds OIDC_ADMIN_ROLE        else role "" (require_admin: 403)

The key set is PyJWKClient's, cached for OIDC_JWKS_CACHE_SECONDS. A kid missing from it (the
provider rotated its keys) makes it fetch again, at most once per OIDC_JWKS_REFETCH_SECONDS, so
a flood of made-up kids costs the provider one request per interval; after a failed fetch the
next one waits as long, and meanwhile requests get 503 at once instead of queueing on a dead
provider. Fetching blocks (urllib): call these from a worker thread, never the event loop.
"""

import logging
import math
import threading
import time

import jwt
from jwt import PyJWK, PyJWKClient

from app import logs
from app.config import Settings
from app.security import InvalidToken, Principal

log = logging.getLogger("app")

FETCH_TIMEOUT_SECONDS = 5.0
UNAVAILABLE = (
    "sign-in key set unreachable: the service cannot fetch the identity provider's keys "
    "(OIDC_JWKS_URL); retry in a few seconds"
)

# PyJWT's refusals as reasons for the caller: none repeats anything the token holds. Subclasses
# come before their bases (InvalidSignatureError is a DecodeError).
_REASONS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidIssuerError, "token issuer is not the configured one"),
    (jwt.InvalidAudienceError, "token audience is not the configured one"),
    (jwt.InvalidAlgorithmError, "token algorithm does not match its signing key"),
    (jwt.InvalidSignatureError, "token signature does not verify with the provider's key"),
    (jwt.DecodeError, "token is malformed"),
]


class TokenRefused(InvalidToken):
    """The token is not good; the message names why, for the caller, and none of its contents."""


class KeysUnavailable(Exception):
    """The provider's key set cannot be fetched or read now; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"sign-in key set unavailable; retry in {retry_after} s")
        self.retry_after = retry_after


class KeySet:
    """The provider's signing keys by kid: cached; fetched again, rate-limited, for a new kid."""

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float,
        refetch_seconds: float,
        timeout: float = FETCH_TIMEOUT_SECONDS,
    ):
        # No network here: the first fetch happens on first use (or warm(), at start-up).
        self._client = PyJWKClient(url, lifespan=cache_seconds, timeout=timeout)
        self._url = url
        self._refetch_seconds = refetch_seconds
        self._lock = threading.Lock()  # one fetch at a time; waiters then find it cached
        self._last_refetch = -math.inf
        self._failed_until = -math.inf

    def key(self, kid: str) -> PyJWK | None:
        """The key named `kid`, or None when the provider does not publish it."""
        with self._lock:
            found = PyJWKClient.match_kid(self._keys(), kid)
            now = time.monotonic()
            if found is None and now - self._last_refetch >= self._refetch_seconds:
                self._last_refetch = now
                found = PyJWKClient.match_kid(self._keys(refresh=True), kid)
            return found

    def check(self) -> int:
        """How many keys the provider publishes (cached, or fetched now); else KeysUnavailable."""
        with self._lock:
            return len(self._keys())

    def _keys(self, *, refresh: bool = False) -> list[PyJWK]:
        if not refresh and self._client.jwk_set_cache.get() is not None:
            return self._signing_keys(refresh=False)
        now = time.monotonic()
        if now < self._failed_until:
            raise KeysUnavailable(max(1, math.ceil(self._failed_until - now)))
        try:
            return self._signing_keys(refresh=True)
        except KeysUnavailable:
            self._failed_until = now + self._refetch_seconds
            raise

    def _signing_keys(self, *, refresh: bool) -> list[PyJWK]:
        try:
            return self._client.get_signing_keys(refresh=refresh)
        # Unreachable, an error status, not JSON, or no usable signing key in it: the
        # provider's fault (or its address's), not the caller's.
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:
            log.warning(
                "sign-in key set %s: %s: %s",
                self._url,
                type(exc).__name__,
                exc,
                extra=logs.event(
                    "auth.keys_unavailable", url=self._url, error_class=type(exc).__name__
                ),
            )
            raise KeysUnavailable(max(1, math.ceil(self._refetch_seconds))) from None


def build_keys(settings: Settings) -> KeySet:
    """The key set of the provider the settings name."""
    return KeySet(
        settings.oidc_jwks_url,
        cache_seconds=settings.oidc_jwks_cache_seconds,
        refetch_seconds=settings.oidc_jwks_refetch_seconds,
    )


def claim(claims: dict, path: str):
    """The claim named `path`, else the value at its dot path (realm_access.roles), else None.

    The whole name is tried first, so namespaced claims such as https://example.org/roles work.
    """
    if path in claims:
        return claims[path]
    value = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def roles(value) -> set[str]:
    """Roles from a claim: a list of names, or one string of names separated by spaces."""
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def verify(token: str, *, keys: KeySet, settings: Settings) -> Principal:
    """The caller an access token names, or TokenRefused saying why; KeysUnavailable may pass."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRefused("token is malformed") from None
    # Before any key look-up: none, HS256 (say, signed with our public key as the secret) and
    # algorithms not configured never reach a key, nor make us fetch one.
    if header.get("alg") not in settings.oidc_algorithms:
        raise TokenRefused("token algorithm is not one this service accepts")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRefused("token names no signing key (kid)")
    key = keys.key(kid)
    if key is None:
        raise TokenRefused("token signing key is not in the provider's key set")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(settings.oidc_algorithms),
            audience=settings.oidc_audience,
            issuer=settings.oidc_issuer,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused(f'token lacks the "{exc.claim}" claim') from None
    except jwt.PyJWTError as exc:
        reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), None)
        raise TokenRefused(reason or "token is not valid") from None
    subject = claim(claims, settings.oidc_subject_claim)
    if not isinstance(subject, str) or not subject.strip():
        # jobs and the audit record who started them
        raise TokenRefused(f"token's {settings.oidc_subject_claim} claim does not name anyone")
    is_admin = settings.oidc_admin_role in roles(claim(claims, settings.oidc_roles_claim))
    return Principal(sub=subject, role="admin" if is_admin else "")
