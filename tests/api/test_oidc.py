"""AUTH_MODE=oidc: the identity provider's access tokens, checked with the keys it publishes.

The provider is real in every part that matters: keys made here, served as a JWKS by an HTTP
server on 127.0.0.1 that counts its requests; the app runs in-process with its lifespan and a
real database. Each refusal is checked for its own reason against a token that differs from an
accepted one in that one respect, and the answer names the reason and nothing the token holds.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import time
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import text

from app import oidc
from app.config import load_settings
from tests.api.conftest import BASE, open_client, wait_for
from tests.identity_provider import (
    AUDIENCE,
    ISSUER,
    Provider,
    claims,
    ec_key,
    rsa_key,
    sign,
)


@pytest.fixture(scope="module")
def keys():
    """Made once: RSA keys take a moment."""
    return {
        "rsa": rsa_key("rsa-1"),
        "ec": ec_key("ec-1"),
        "next": rsa_key("rsa-2"),  # published only when a test rotates to it
        "impostor": rsa_key("rsa-1"),  # the published kid, another private key
    }


@pytest.fixture
def provider(keys):
    provider = Provider(keys["rsa"], keys["ec"])
    provider.start()
    yield provider
    provider.stop()


def oidc_settings(database_url, provider, **overrides):
    return load_settings(
        database_url=database_url,
        auth_mode="oidc",
        oidc_jwks_url=provider.url,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        heartbeat_seconds=0.1,
        _env_file=None,
        **overrides,
    )


@asynccontextmanager
async def serving(settings):
    """The app with these settings, started, and a client that sends no token by itself."""
    app, lifespan, client = await open_client(settings)
    client.headers.pop("Authorization")
    try:
        yield client
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(kid: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(claims()).encode())}."


def _hs256_with_public_key(key) -> str:
    """The algorithm-confusion forgery: HS256, with the provider's public key as the secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    signing_input = f"{header}.{_b64(json.dumps(claims()).encode())}"
    mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


async def _jobs(db) -> int:
    async with db.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one()


async def test_tokens_of_either_key_pass_and_jobs_record_the_configured_subject(
    database_url, provider, keys, db
):
    settings = oidc_settings(database_url, provider, oidc_subject_claim="preferred_username")
    async with serving(settings) as client:
        for key in (keys["rsa"], keys["ec"]):
            response = await client.get(BASE, headers=bearer(sign(key)))
            assert response.status_code == 200, response.text

        client.headers.update(bearer(sign(keys["ec"])))
        response = await client.post(BASE, params={"dry_run": "true"})
        assert response.status_code == 202, response.text
        job = await wait_for(client, response.json()["id"])
        assert job["requested_by"] == "dana"
        audit = (await client.get(f"{BASE}/{job['id']}/audit")).json()
        assert {entry["actor"] for entry in audit["items"]} == {"dana"}

        # The subject claim must name someone: empty, blank or absent is a 401.
        for username in ("", "  ", None):
            token = sign(keys["rsa"], preferred_username=username)
            response = await client.post(BASE, headers=bearer(token))
            assert response.status_code == 401
            assert response.json() == {
                "detail": "token's preferred_username claim does not name anyone"
            }
    assert await _jobs(db) == 1


NO_SUBJECT = "token's sub claim does not name anyone"

# case: (the token, differing from an accepted one in one respect; status; the detail)
REFUSED = {
    "malformed": (lambda k: "not.a.jwt", 401, "token is malformed"),
    "wrong-issuer": (
        lambda k: sign(k["rsa"], iss="https://elsewhere.example/realms/clinic"),
        401,
        "token issuer is not the configured one",
    ),
    "wrong-audience": (
        lambda k: sign(k["rsa"], aud="billing"),
        401,
        "token audience is not the configured one",
    ),
    "no-audience": (lambda k: sign(k["rsa"], aud=None), 401, 'token lacks the "aud" claim'),
    "expired": (lambda k: sign(k["rsa"], exp=int(time.time()) - 30), 401, "token has expired"),
    "no-expiry": (lambda k: sign(k["rsa"], exp=None), 401, 'token lacks the "exp" claim'),
    "alg-none": (
        lambda k: _unsigned(k["rsa"].kid),
        401,
        "token algorithm is not one this service accepts",
    ),
    "hs256-signed-with-the-public-key": (
        lambda k: _hs256_with_public_key(k["rsa"]),
        401,
        "token algorithm is not one this service accepts",
    ),
    "es256-under-an-rsa-kid": (
        lambda k: sign(k["ec"], kid=k["rsa"].kid),
        401,
        "token algorithm does not match its signing key",
    ),
    "forged-signature": (
        lambda k: sign(k["impostor"]),
        401,
        "token signature does not verify with the provider's key",
    ),
    "unknown-kid": (
        lambda k: sign(k["next"]),
        401,
        "token signing key is not in the provider's key set",
    ),
    "no-kid": (lambda k: sign(k["rsa"], kid=""), 401, "token names no signing key (kid)"),
    "empty-subject": (lambda k: sign(k["rsa"], sub=""), 401, NO_SUBJECT),
    "no-subject": (lambda k: sign(k["rsa"], sub=None), 401, NO_SUBJECT),
    "no-roles": (
        lambda k: sign(k["rsa"], roles=None),
        403,
        "admin role required: the token's roles claim does not hold 'admin'",
    ),
    "other-roles": (
        lambda k: sign(k["rsa"], roles=["therapist", "Admin"]),
        403,
        "admin role required: the token's roles claim does not hold 'admin'",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_refused_for_its_own_reason_and_nothing_starts(
    database_url, provider, keys, db, case
):
    make, status, detail = REFUSED[case]
    async with serving(oidc_settings(database_url, provider)) as client:
        assert (await client.get(BASE, headers=bearer(sign(keys["rsa"])))).status_code == 200
        for method in ("POST", "GET"):
            response = await client.request(method, BASE, headers=bearer(make(keys)))
            assert (response.status_code, response.json()) == (status, {"detail": detail})
            if status == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await _jobs(db) == 0


async def test_an_algorithm_left_out_of_the_settings_is_refused_before_any_key_is_fetched(
    database_url, provider, keys
):
    settings = oidc_settings(database_url, provider, oidc_algorithms="RS256")
    async with serving(settings) as client:
        fetched = provider.fetches
        response = await client.get(BASE, headers=bearer(sign(keys["ec"])))
        assert response.status_code == 401
        assert response.json()["detail"] == "token algorithm is not one this service accepts"
        assert provider.fetches == fetched
        assert (await client.get(BASE, headers=bearer(sign(keys["rsa"])))).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"realm_access": {"roles": ["offline_access", "goal-migration-admin"]}}, 200),
        ({"realm_access": {"roles": ["offline_access", "admin"]}}, 403),
        ({"realm_access": {"roles": "goal-migration-admin"}}, 200),  # one string of names
        ({"realm_access": "goal-migration-admin"}, 403),  # not an object: no path
        ({"roles": ["goal-migration-admin"]}, 403),  # right role, other claim
        ({}, 403),
    ],
    ids=["nested", "other-role", "string", "not-an-object", "top-level", "absent"],
)
async def test_roles_at_a_nested_path(database_url, provider, keys, payload, status):
    settings = oidc_settings(
        database_url,
        provider,
        oidc_roles_claim="realm_access.roles",
        oidc_admin_role="goal-migration-admin",
    )
    async with serving(settings) as client:
        token = sign(keys["rsa"], claims(**{"roles": None, **payload}))
        response = await client.get(BASE, headers=bearer(token))
        assert response.status_code == status, response.text
        if status == 403:
            assert response.json()["detail"] == (
                "admin role required: the token's realm_access.roles claim "
                "does not hold 'goal-migration-admin'"
            )


async def test_keys_are_fetched_once_and_then_cached(database_url, provider, keys):
    async with serving(oidc_settings(database_url, provider)) as client:
        assert provider.fetches == 1  # at start-up
        for _ in range(10):
            for key in (keys["rsa"], keys["ec"]):
                assert (await client.get(BASE, headers=bearer(sign(key)))).status_code == 200
        for _ in range(5):
            assert (await client.get("/ready")).status_code == 200
        assert provider.fetches == 1


async def test_rotation_is_seen_without_a_restart_and_unknown_kids_cannot_flood_the_provider(
    database_url, provider, keys
):
    settings = oidc_settings(database_url, provider, oidc_jwks_refetch_seconds=60)
    async with serving(settings) as client:
        assert (await client.get(BASE, headers=bearer(sign(keys["rsa"])))).status_code == 200
        assert provider.fetches == 1

        provider.publish(keys["next"])
        provider.withdraw(keys["rsa"].kid)
        # The new kid is unknown to the cached set: one fetch, and it passes.
        assert (await client.get(BASE, headers=bearer(sign(keys["next"])))).status_code == 200
        assert provider.fetches == 2
        for _ in range(3):
            assert (await client.get(BASE, headers=bearer(sign(keys["next"])))).status_code == 200
        # The withdrawn key went with that fetch.
        response = await client.get(BASE, headers=bearer(sign(keys["rsa"])))
        assert response.status_code == 401
        assert response.json()["detail"] == "token signing key is not in the provider's key set"

        # Made-up kids, however many, fetch nothing more within the refetch interval.
        for n in range(25):
            token = sign(keys["next"], kid=f"made-up-{n}")
            assert (await client.get(BASE, headers=bearer(token))).status_code == 401
        assert provider.fetches == 2


async def test_after_the_refetch_interval_an_unknown_kid_fetches_again(
    database_url, provider, keys
):
    settings = oidc_settings(database_url, provider, oidc_jwks_refetch_seconds=0.3)
    async with serving(settings) as client:
        response = await client.get(BASE, headers=bearer(sign(keys["next"])))
        assert response.status_code == 401 and provider.fetches == 2
        provider.publish(keys["next"])
        await asyncio.sleep(0.4)
        assert (await client.get(BASE, headers=bearer(sign(keys["next"])))).status_code == 200
        assert provider.fetches == 3


async def test_provider_down_answers_503_with_retry_after_and_ready_says_so(
    database_url, provider, keys, db
):
    settings = oidc_settings(
        database_url, provider, oidc_jwks_cache_seconds=0.5, oidc_jwks_refetch_seconds=0.3
    )
    token = sign(keys["rsa"])
    async with serving(settings) as client:
        client.headers.update(bearer(token))
        assert (await client.get(BASE)).status_code == 200
        provider.stop()
        await asyncio.sleep(0.6)  # the cached key set is now too old to use

        for method in ("GET", "POST"):
            response = await client.request(method, BASE)
            assert response.status_code == 503, response.text
            assert response.json() == {"detail": oidc.UNAVAILABLE}
            assert int(response.headers["Retry-After"]) >= 1
            assert "WWW-Authenticate" not in response.headers
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert ready.json() == {"status": "unavailable", "detail": oidc.UNAVAILABLE}
        assert "sign-in key set" in ready.json()["detail"]

        provider.start()  # the same port
        await asyncio.sleep(0.4)  # past the wait after a failed fetch
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get(BASE)).status_code == 200
    assert await _jobs(db) == 0


async def test_a_failing_provider_is_asked_once_per_interval_not_once_per_request(
    database_url, provider, keys
):
    settings = oidc_settings(
        database_url, provider, oidc_jwks_cache_seconds=0.3, oidc_jwks_refetch_seconds=60
    )
    async with serving(settings) as client:
        provider.failing = True
        await asyncio.sleep(0.4)
        fetched = provider.fetches
        for _ in range(10):
            response = await client.get(BASE, headers=bearer(sign(keys["rsa"])))
            assert response.status_code == 503
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert (await client.get("/ready")).status_code == 503
        assert provider.fetches == fetched + 1


async def test_cached_keys_carry_known_kids_through_an_outage_and_unknown_ones_get_503(
    database_url, provider, keys
):
    async with serving(oidc_settings(database_url, provider)) as client:
        provider.stop()
        assert (await client.get(BASE, headers=bearer(sign(keys["ec"])))).status_code == 200
        response = await client.get(BASE, headers=bearer(sign(keys["next"])))
        assert response.status_code == 503 and response.headers["Retry-After"]


async def test_started_while_the_provider_is_down(database_url, provider, keys):
    provider.stop()
    async with serving(oidc_settings(database_url, provider)) as client:
        assert (await client.get("/ready")).status_code == 503
        response = await client.get(BASE, headers=bearer(sign(keys["rsa"])))
        assert response.status_code == 503
        assert response.json()["detail"] == oidc.UNAVAILABLE
