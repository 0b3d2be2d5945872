"""Settings: the URL forms we accept, and clear refusals for what we cannot use."""

import os

import pytest

from app.auth import main as auth_main
from app.config import ConfigError, Settings, load_settings, normalize_database_url

GOOD = "x" * 32


OIDC = {
    "database_url": "postgresql://u@db/goals",
    "auth_mode": "oidc",
    "oidc_jwks_url": "https://sso.example.com/realms/clinic/protocol/openid-connect/certs",
    "oidc_issuer": "https://sso.example.com/realms/clinic",
    "oidc_audience": "goal-migration",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DATABASE_URL", "JWT_SECRET", "JOB_PARTITIONS", "JWT_AUDIENCE", "JWT_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("OIDC_") or name == "AUTH_MODE":
            monkeypatch.delenv(name)


def load(**kw):
    return load_settings(_env_file=None, **kw)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/goals", "postgresql+asyncpg://u:p@db:5432/goals"),
        ("postgres://u@db/goals", "postgresql+asyncpg://u@db/goals"),
        ("postgresql+asyncpg://u@db/goals", "postgresql+asyncpg://u@db/goals"),
        (
            "postgresql://u@/goals?host=/var/run/postgresql",
            "postgresql+asyncpg://u@/goals?host=/var/run/postgresql",
        ),
    ],
)
def test_accepted_url_forms(given, expected):
    assert normalize_database_url(given) == expected
    assert load(database_url=given).database_url == expected


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u@db/goals", "must start with postgresql://"),
        ("db.example.org/goals", "must start with postgresql://"),
        ("postgresql://u@db", "names no database"),
        ("postgresql://u@db/", "names no database"),
        ("postgresql:///goals", "names no host"),
    ],
)
def test_bad_urls_are_refused_clearly(url, says):
    with pytest.raises(ConfigError) as err:
        load(database_url=url)
    assert str(err.value).startswith("DATABASE_URL: ")
    assert says in str(err.value)


def test_missing_database_url_uses_the_guides_message():
    with pytest.raises(ConfigError) as err:
        load()
    first, hint = str(err.value).splitlines()
    assert first == "DATABASE_URL not found in environment"
    assert "DATABASE_URL" in hint and ".env" in hint


def test_database_url_from_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db/goals")
    assert load().database_url == "postgresql+asyncpg://u@db/goals"


def test_env_file_is_read(tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"DATABASE_URL=postgresql://u@db/goals\nJWT_SECRET={GOOD}\n")
    settings = load_settings(_env_file=env)
    assert settings.database_url.endswith("@db/goals") and settings.jwt_secret == GOOD


@pytest.mark.parametrize("secret", ["", "short", "y" * 31])
def test_short_jwt_secret_is_refused(secret):
    if not secret:
        settings = load(database_url="postgresql://u@db/goals", jwt_secret=None)
        with pytest.raises(ConfigError, match="JWT_SECRET not found"):
            settings.require_jwt_secret()
        return
    with pytest.raises(ConfigError, match="JWT_SECRET: must be at least 32 characters"):
        load(database_url="postgresql://u@db/goals", jwt_secret=secret)


def test_app_refuses_to_start_without_a_secret():
    from app.main import create_app

    with pytest.raises(ConfigError, match="JWT_SECRET"):
        create_app(load(database_url="postgresql://u@db/goals"))


def test_secret_mode_is_the_default_and_oidc_settings_have_defaults():
    settings = load(database_url="postgresql://u@db/goals", jwt_secret=GOOD)
    assert settings.auth_mode == "secret"
    oidc = load(**OIDC)
    assert oidc.oidc_algorithms == ("RS256", "ES256")
    assert (oidc.oidc_roles_claim, oidc.oidc_admin_role, oidc.oidc_subject_claim) == (
        "roles",
        "admin",
        "sub",
    )


def test_oidc_settings_from_the_environment(monkeypatch):
    for name, value in OIDC.items():
        monkeypatch.setenv(name.upper(), value)
    monkeypatch.setenv("OIDC_ALGORITHMS", " RS256 , PS256,RS256")
    monkeypatch.setenv("OIDC_ROLES_CLAIM", "realm_access.roles")
    monkeypatch.setenv("OIDC_SUBJECT_CLAIM", "preferred_username")
    settings = load_settings(require_database=False, _env_file=None)
    assert settings.auth_mode == "oidc"
    assert settings.oidc_algorithms == ("RS256", "PS256")
    assert settings.oidc_roles_claim == "realm_access.roles"
    assert settings.oidc_subject_claim == "preferred_username"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({**OIDC, "jwt_secret": GOOD}, "AUTH_MODE=oidc, but JWT_SECRET is set"),
        ({**OIDC, "jwt_audience": "x", "jwt_issuer": "y"}, "but JWT_AUDIENCE, JWT_ISSUER are set"),
        ({"auth_mode": "oidc"}, "AUTH_MODE=oidc needs OIDC_JWKS_URL, OIDC_ISSUER, OIDC_AUDIENCE"),
        ({**OIDC, "oidc_audience": " "}, "AUTH_MODE=oidc needs OIDC_AUDIENCE\n"),
        ({"oidc_issuer": OIDC["oidc_issuer"]}, "OIDC_ISSUER is set, but AUTH_MODE is secret"),
        (
            {"jwt_secret": GOOD, "oidc_roles_claim": "roles", "oidc_algorithms": "RS256"},
            "OIDC_ALGORITHMS, OIDC_ROLES_CLAIM are set, but AUTH_MODE is secret",
        ),
        ({"auth_mode": "sso"}, "AUTH_MODE: Input should be 'secret' or 'oidc'"),
    ],
    ids=[
        "oidc-with-secret",
        "oidc-with-jwt-claims",
        "oidc-without-provider",
        "oidc-blank-audience",
        "secret-with-oidc",
        "secret-with-defaults-restated",
        "unknown-mode",
    ],
)
def test_one_way_of_signing_in_or_a_clear_refusal(given, says):
    with pytest.raises(ConfigError) as err:
        load(**{"database_url": "postgresql://u@db/goals", **given})
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("algorithms", "says"),
    [
        ("HS256", "'HS256' is refused"),
        ("RS256,HS512", "'HS512' is refused"),
        ("none", "'none' is refused"),
        ("RS257", "'RS257' is refused"),
        (" , ", "names no algorithm (e.g. RS256,ES256)"),
    ],
)
def test_shared_secret_and_unknown_algorithms_are_refused(algorithms, says):
    with pytest.raises(ConfigError) as err:
        load(**OIDC, oidc_algorithms=algorithms)
    assert str(err.value).startswith("OIDC_ALGORITHMS: ")
    assert says in str(err.value)
    assert "never HS* or none" in str(err.value) or "names no" in says


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://sso.example.com/certs", True),
        ("http://127.0.0.1:8080/certs", True),
        ("http://localhost/certs", True),
        ("http://sso.example.com/certs", False),
        ("file:///etc/passwd", False),
        ("sso.example.com/certs", False),
    ],
)
def test_the_key_set_comes_over_https_unless_from_this_machine(url, ok):
    if ok:
        assert load(**{**OIDC, "oidc_jwks_url": url}).oidc_jwks_url == url
        return
    with pytest.raises(ConfigError, match="^OIDC_JWKS_URL: must be"):
        load(**{**OIDC, "oidc_jwks_url": url})


@pytest.mark.parametrize("path", ["", "realm_access.", ".roles", "realm_access..roles"])
def test_claim_paths_must_name_a_claim(path):
    with pytest.raises(ConfigError, match="^OIDC_ROLES_CLAIM: must be a claim name"):
        load(**OIDC, oidc_roles_claim=path)


def test_app_in_oidc_mode_starts_without_a_secret_and_refuses_one_slipped_in():
    from app.main import create_app

    settings = load(**OIDC)
    assert create_app(settings) is not None  # nothing fetched or connected yet
    with pytest.raises(ConfigError, match="AUTH_MODE=oidc, but JWT_SECRET is set"):
        create_app(settings.model_copy(update={"jwt_secret": GOOD}))


def test_token_command_refuses_in_oidc_mode(monkeypatch, capsys):
    for name, value in OIDC.items():
        monkeypatch.setenv(name.upper(), value)
    monkeypatch.setitem(Settings.model_config, "env_file", None)  # make run's JWT_SECRET
    assert auth_main(["token", "--sub", "ops-1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("AUTH_MODE=oidc: admin tokens come from the identity provider")


def test_metrics_and_log_format_from_the_environment(monkeypatch):
    defaults = load(database_url="postgresql://u@db/goals")
    assert defaults.metrics is True and defaults.metrics_port is None
    assert defaults.log_format == "text"
    monkeypatch.setenv("METRICS", "off")
    monkeypatch.setenv("METRICS_PORT", "")  # empty: no port of their own
    monkeypatch.setenv("LOG_FORMAT", " JSON ")
    given = load(database_url="postgresql://u@db/goals")
    assert given.metrics is False and given.metrics_port is None and given.log_format == "json"
    monkeypatch.setenv("METRICS_PORT", "9464")
    assert load(database_url="postgresql://u@db/goals").metrics_port == 9464


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT: Input should be 'text' or 'json'"),
        ("METRICS", "maybe", "METRICS:"),
        ("METRICS_PORT", "70000", "METRICS_PORT:"),
    ],
)
def test_unusable_observability_settings_are_refused(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=says):
        load(database_url="postgresql://u@db/goals")


def test_a_new_jobs_limits_are_the_settings_with_the_starters_over_them():
    settings = load(
        database_url="postgresql://u@db/goals",
        throttle_max_archive_backlog=0,  # 0: off
        throttle_max_lock_wait_seconds=0.5,
    )
    assert settings.limits().max_archive_backlog is None
    chosen = settings.limits({"max_lock_wait_seconds": 0.05, "max_replay_lag_seconds": None})
    assert chosen.max_lock_wait_seconds == 0.05 and chosen.max_replay_lag_seconds is None
    assert chosen.max_archive_backlog is None and chosen.max_batch_slowdown == 4.0
