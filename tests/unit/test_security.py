"""Admin tokens: only HS256 with our secret, unexpired, with sub, role and exp.

Every token is minted inside its test, with a long expiry, and each refusal is checked for its
own reason against an otherwise identical token that is accepted: a token refused as "expired"
never passes for one refused for its algorithm or a missing claim.
"""

import base64
import json
import re
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


def _claims() -> dict:
    return {"sub": "u1", "role": "admin", "exp": int(time.time()) + 600}


def _without(claims: dict, name: str) -> dict:
    return {k: v for k, v in claims.items() if k != name}


def _unsigned(claims: dict) -> str:
    return _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + "."


# case: (the one thing that differs from a valid token, the reason it must be refused for)
REFUSED = {
    "garbage": (lambda c: "not-a-token", "Not enough segments"),
    "wrong-secret": (lambda c: jwt.encode(c, "o" * 40), "Signature verification failed"),
    "expired": (
        lambda c: jwt.encode({**c, "exp": int(time.time()) - 5}, SECRET),
        "Signature has expired",
    ),
    "no-exp": (lambda c: jwt.encode(_without(c, "exp"), SECRET), 'missing the "exp" claim'),
    "no-sub": (lambda c: jwt.encode(_without(c, "sub"), SECRET), 'missing the "sub" claim'),
    "no-role": (lambda c: jwt.encode(_without(c, "role"), SECRET), 'missing the "role" claim'),
    "sub-not-a-string": (lambda c: jwt.encode({**c, "sub": 5}, SECRET), "must be a string"),
    "hs512": (lambda c: jwt.encode(c, SECRET, "HS512"), "alg value is not allowed"),
    "alg-none": (_unsigned, "alg value is not allowed"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_for_its_own_reason(case):
    claims = _claims()
    # The same claims, signed as they should be, pass: only the case's difference is refused.
    assert security.verify(jwt.encode(claims, SECRET), secret=SECRET).sub == "u1"
    make, reason = REFUSED[case]
    with pytest.raises(security.InvalidToken, match=re.escape(reason)):
        security.verify(make(claims), secret=SECRET)


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
