"""JWT_AUDIENCE and JWT_ISSUER: when set, tokens must carry them, and minted tokens do."""

import time

import jwt
import pytest

from app import security
from app.auth import main as auth_main
from tests.api.conftest import BASE, open_client
from tests.conftest import SECRET

AUD, ISS = "goal-migration", "https://auth.practice.example"


def _token(**claims) -> str:
    base = {"sub": "ops-1", "role": "admin", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"aud": AUD, "iss": ISS}, 200),
        ({"aud": [AUD, "other"], "iss": ISS}, 200),
        ({}, 401),  # a token minted for anything with the same secret
        ({"aud": AUD}, 401),
        ({"iss": ISS}, 401),
        ({"aud": "billing", "iss": ISS}, 401),
        ({"aud": AUD, "iss": "https://elsewhere.example"}, 401),
    ],
    ids=["both", "aud-list", "neither", "no-iss", "no-aud", "other-aud", "other-iss"],
)
async def test_when_set_tokens_must_carry_audience_and_issuer(settings, claims, status):
    configured = settings.model_copy(update={"jwt_audience": AUD, "jwt_issuer": ISS})
    app, lifespan, client = await open_client(configured)
    try:
        response = await client.get(BASE, headers={"Authorization": f"Bearer {_token(**claims)}"})
        assert response.status_code == status, response.text
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


def test_unset_they_are_not_required_and_a_token_for_an_audience_is_refused():
    assert security.verify(_token(), secret=SECRET) == security.Principal("ops-1", "admin")
    with pytest.raises(security.InvalidToken):
        security.verify(_token(aud="billing"), secret=SECRET)


def test_minted_tokens_carry_them(monkeypatch, capsys):
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("JWT_AUDIENCE", AUD)
    monkeypatch.setenv("JWT_ISSUER", ISS)
    assert auth_main(["token", "--sub", "ops-1", "--ttl", "5m"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUD, issuer=ISS)
    assert (claims["aud"], claims["iss"]) == (AUD, ISS)
    assert security.verify(token, secret=SECRET, audience=AUD, issuer=ISS).sub == "ops-1"
