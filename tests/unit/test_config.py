"""Settings: the URL forms we accept, and clear refusals for what we cannot use."""

import pytest

from app.config import ConfigError, load_settings, normalize_database_url

GOOD = "x" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DATABASE_URL", "JWT_SECRET", "JOB_PARTITIONS"):
        monkeypatch.delenv(name, raising=False)


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
