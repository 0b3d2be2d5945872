"""Every /admin route wants a valid admin bearer token; a refused request changes nothing."""

import base64
import json
import time

import jwt
import pytest
from sqlalchemy import text

from tests.api.conftest import BASE, auth, token
from tests.conftest import SECRET


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _exp(seconds: int) -> int:
    return int(time.time()) + seconds


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _claims(**changes) -> dict:
    claims = {"sub": "x", "role": "admin", "exp": _exp(600), **changes}
    return {k: v for k, v in claims.items() if v is not None}


# Built when the test runs, never at import: a token minted at collection could have expired
# by the time its test runs, and would then be refused for the wrong reason.
BAD_HEADERS = {
    "missing": lambda: {},
    "malformed": lambda: {"Authorization": "Bearer not.a.jwt"},
    "empty": lambda: {"Authorization": "Bearer "},
    "wrong-signature": lambda: _bearer(jwt.encode(_claims(), "z" * 40)),
    "expired": lambda: _bearer(jwt.encode(_claims(exp=_exp(-10)), SECRET)),
    "no-exp": lambda: _bearer(jwt.encode(_claims(exp=None), SECRET)),
    "no-sub": lambda: _bearer(jwt.encode(_claims(sub=None), SECRET)),
    "hs512": lambda: _bearer(jwt.encode(_claims(), SECRET, "HS512")),
    "alg-none": lambda: {
        "Authorization": "Bearer "
        + _b64({"alg": "none", "typ": "JWT"})
        + "."
        + _b64(_claims())
        + "."
    },
    "basic-scheme": lambda: {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()},
    "token-scheme": lambda: {"Authorization": "Token " + token()},
}


@pytest.mark.parametrize("case", BAD_HEADERS)
async def test_unauthenticated_gets_401_and_no_job(client, db, case):
    client.headers.pop("Authorization")
    headers = BAD_HEADERS[case]()
    for method, path in [("POST", BASE), ("GET", BASE), ("GET", f"{BASE}/verify")]:
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401, (case, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one() == 0
    # The same claims, properly signed, are let in: the 401 was for this case's difference.
    assert (
        await client.get(BASE, headers=_bearer(jwt.encode(_claims(), SECRET)))
    ).status_code == 200


async def test_token_in_query_or_cookie_is_not_accepted(client):
    client.headers.pop("Authorization")
    assert (await client.get(BASE, params={"token": token()})).status_code == 401
    assert (await client.get(BASE, params={"access_token": token()})).status_code == 401
    client.cookies.set("Authorization", f"Bearer {token()}")
    client.cookies.set("access_token", token())
    assert (await client.get(BASE)).status_code == 401


@pytest.mark.parametrize("role", ["therapist", "patient", "Admin"])
async def test_other_roles_get_403_and_no_job(client, db, role):
    response = await client.post(BASE, headers=auth(role))
    assert response.status_code == 403
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one() == 0


async def test_admin_passes_and_is_recorded_as_requester(client):
    response = await client.post(BASE, headers=auth(sub="ops-42"))
    assert response.status_code == 202
    assert response.json()["requested_by"] == "ops-42"
