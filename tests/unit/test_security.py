"""Admin tokens: only HS256 with our secret, unexpired, with sub, role and exp."""

import base64
import json
import time

import jwt
import pytest

from app import security
from app.auth import main as auth_main
from app.auth import parse_ttl

SECRET = "s" * 40


def test_round_trip():
    token = security.mint(secret=SECRET, sub="u1", role="admin", ttl_seconds=60)
    assert security.verify(token, secret=SECRET) == security.Principal("u1", "admin")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token",
        security.mint(secret="o" * 40, sub="u1", role="admin", ttl_seconds=60),
        jwt.encode({"sub": "u1", "role": "admin", "exp": int(time.time()) - 5}, SECRET),
        jwt.encode({"sub": "u1", "role": "admin"}, SECRET),
        jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, SECRET),
        jwt.encode({"sub": "u1", "role": "admin", "exp": int(time.time()) + 60}, SECRET, "HS512"),
        _b64({"alg": "none", "typ": "JWT"})
        + "."
        + _b64({"sub": "u1", "role": "admin", "exp": int(time.time()) + 60})
        + ".",
    ],
    ids=["garbage", "wrong-secret", "expired", "no-exp", "no-sub", "hs512", "alg-none"],
)
def test_refused(token):
    with pytest.raises(security.InvalidToken):
        security.verify(token, secret=SECRET)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("8h", 28800), ("2d", 172800)]
)
def test_ttl(text, seconds):
    assert parse_ttl(text) == seconds


def test_token_command(monkeypatch, capsys):
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert auth_main(["token", "--sub", "ops-1", "--role", "admin", "--ttl", "1h"]) == 0
    principal = security.verify(capsys.readouterr().out.strip(), secret=SECRET)
    assert principal == security.Principal("ops-1", "admin")
