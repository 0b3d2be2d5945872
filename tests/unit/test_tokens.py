"""`python -m app.auth token`: a subject that names someone, a capped TTL, the expiry shown."""

import time

import jwt
import pytest

from app import security
from app.auth import main

SECRET = "s" * 40


@pytest.fixture(autouse=True)
def _secret(monkeypatch):
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.mark.parametrize("sub", ["", "   ", "\t"])
def test_an_empty_subject_is_refused_in_one_line(sub, capsys):
    assert main(["token", "--sub", sub]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == '--sub is empty: give who the token is for, e.g. --sub "$(whoami)"\n'


def test_the_token_alone_on_stdout_and_its_expiry_on_stderr(capsys):
    assert main(["token", "--sub", " ops-1 ", "--ttl", "90m"]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert out == token + "\n"  # TOKEN=$(...) captures just the token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "ops-1" and claims["exp"] - claims["iat"] == 90 * 60
    expires = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(claims["exp"]))
    assert err == f"token for ops-1 (admin) expires {expires} UTC (in 90m)\n"


def test_ttl_is_capped_at_24_hours_unless_explicitly_allowed(capsys):
    assert main(["token", "--sub", "ops-1", "--ttl", "24h"]) == 0
    capsys.readouterr()
    assert main(["token", "--sub", "ops-1", "--ttl", "25h"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "--ttl 25h is over the 24 h cap: mint a shorter one, or add --allow-long-ttl\n"

    assert main(["token", "--sub", "ops-1", "--ttl", "2d", "--allow-long-ttl"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 2 * 86400


@pytest.mark.parametrize("sub", ["", "  "])
def test_verification_refuses_a_token_without_a_real_subject(sub):
    token = jwt.encode({"sub": sub, "role": "admin", "exp": int(time.time()) + 600}, SECRET)
    with pytest.raises(security.InvalidToken):
        security.verify(token, secret=SECRET)
