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


BAD_HEADERS = {
    "missing": {},
    "malformed": {"Authorization": "Bearer not.a.jwt"},
    "empty": {"Authorization": "Bearer "},
    "wrong-signature": {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "x", "role": "admin", "exp": _exp(60)}, "z" * 40)
    },
    "expired": {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "x", "role": "admin", "exp": _exp(-10)}, SECRET)
    },
    "no-exp": {"Authorization": "Bearer " + jwt.encode({"sub": "x", "role": "admin"}, SECRET)},
    "alg-none": {
        "Authorization": "Bearer "
        + _b64({"alg": "none", "typ": "JWT"})
        + "."
        + _b64({"sub": "x", "role": "admin", "exp": _exp(60)})
        + "."
    },
    "basic-scheme": {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode()},
    "token-scheme": {"Authorization": "Token " + token()},
}


@pytest.mark.parametrize("case", BAD_HEADERS)
async def test_unauthenticated_gets_401_and_no_job(client, db, case):
    client.headers.pop("Authorization")
    for method, path in [("POST", BASE), ("GET", BASE), ("GET", f"{BASE}/verify")]:
        response = await client.request(method, path, headers=BAD_HEADERS[case])
        assert response.status_code == 401, (case, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one() == 0


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
