"""Settings, read from the environment and ``backend/.env`` by ``load_settings()``.

The app reads them once, when create_app() runs, and hands them on through app.state.
"""

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.jobs.throttle import Limits, off_if_zero

BACKEND_DIR = Path(__file__).resolve().parent.parent
ENV_FILE = BACKEND_DIR / ".env"

_DRIVER_PREFIXES = ("postgresql+asyncpg://", "postgresql://", "postgres://")

# Public-key algorithms only: an HS* token would be checked against a shared secret, and with
# the provider's public key taken as that secret anyone could sign one (algorithm confusion).
PUBLIC_KEY_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
)  # fmt: skip
_OIDC_REQUIRED = ("oidc_jwks_url", "oidc_issuer", "oidc_audience")


class ConfigError(Exception):
    """A setting is missing or unusable; the message is meant for the operator, as is."""


def normalize_database_url(url: str) -> str:
    """Return the URL in SQLAlchemy's asyncpg form, or raise ValueError saying what is wrong."""
    url = url.strip()
    for prefix in _DRIVER_PREFIXES:
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            break
    else:
        scheme = url.split("://", 1)[0] if "://" in url else url[:20]
        raise ValueError(
            f"must start with postgresql://, postgres:// or postgresql+asyncpg:// (got {scheme!r})"
        )
    parts = urlsplit("postgresql://" + rest)
    if not parts.path.strip("/"):
        raise ValueError("names no database (expected .../<database>)")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("names no host (use @host/db or ?host=/socket/dir)")
    return "postgresql+asyncpg://" + rest


class Settings(BaseSettings):
    """Everything the service and its scripts read from the environment."""

    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore")

    database_url: str | None = None
    jwt_secret: str | None = None
    job_partitions: int = 2
    heartbeat_seconds: float = 2.0
    stale_after_seconds: float = 30.0
    # A batch that meets a transient database error (lock or statement timeout, deadlock,
    # serialization failure, lost connection, restart) is retried this many times, waiting
    # retry_backoff_seconds, doubling up to retry_backoff_max_seconds (about 45 s in all).
    retry_attempts: int = 8
    retry_backoff_seconds: float = 0.5
    retry_backoff_max_seconds: float = 10.0
    # Dry-run previews hold clinical text: deleted this many days after their job ended.
    preview_retention_days: int = Field(default=7, ge=0)
    retention_check_seconds: float = Field(default=3600.0, gt=0)
    # When set, tokens must carry this aud / iss claim, and minted tokens do.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # How admins sign in: "secret" (HS256 tokens signed with JWT_SECRET, minted by
    # `python -m app.auth token`) or "oidc" (the identity provider's access tokens, checked
    # against its published keys). One or the other: check_auth_mode() refuses a mix.
    auth_mode: Literal["secret", "oidc"] = "secret"
    oidc_jwks_url: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256", "ES256")
    # A claim name, or a dot path into nested claims (Keycloak: realm_access.roles).
    oidc_roles_claim: str = "roles"
    oidc_admin_role: str = "admin"
    oidc_subject_claim: str = "sub"
    # The key set is fetched again once this old; a token naming a key it lacks makes it
    # fetch again at most once per oidc_jwks_refetch_seconds, as does a retry after a failure.
    oidc_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    oidc_jwks_refetch_seconds: float = Field(default=10.0, ge=0)
    # Prometheus metrics (METRICS=on|off) at /metrics on the app, or, with METRICS_PORT, on a
    # server of their own on METRICS_HOST:METRICS_PORT (0: any free port) and not on the app.
    metrics: bool = True
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    # text: the lines make run prints; json: one JSON object per line (app/logs.py).
    log_format: Literal["text", "json"] = "text"
    # Adaptive batches (jobs/pacing.py) aim at this duration, within these sizes, changing by at
    # most this factor from one batch to the next.
    batch_target_seconds: float = Field(default=0.3, gt=0)
    batch_size_min: int = Field(default=50, ge=1, le=10000)
    batch_size_max: int = Field(default=10000, ge=1, le=10000)
    batch_size_step: float = Field(default=1.5, gt=1)
    # The health thresholds a new job yields to (jobs/throttle.py; 0 turns a signal off), how
    # often the views are read between batches, how often a waiting job rechecks, and how often
    # the job's lock holders are looked at while batches run.
    throttle_max_replay_lag_seconds: float = Field(default=5.0, ge=0)
    throttle_max_replay_lag_bytes: int = Field(default=256 * 2**20, ge=0)
    throttle_max_archive_backlog: int = Field(default=32, ge=0)
    throttle_yield_to_autovacuum: bool = True
    throttle_max_lock_wait_seconds: float = Field(default=0.2, ge=0)
    throttle_max_batch_slowdown: float = Field(default=4.0, ge=0)
    throttle_share_above_sessions: int = Field(default=2, ge=0)
    # While clinicians work: the share of the time the job's batches may take (the rest of it
    # the job rests), and the duration its adaptive batches aim at meanwhile (docs/BENCHMARKS.md
    # measures what clinicians feel at each share).
    throttle_share_duty: float = Field(default=0.03, gt=0, le=1)
    throttle_share_batch_seconds: float = Field(default=0.05, gt=0)
    throttle_check_seconds: float = Field(default=1.0, gt=0)
    throttle_recheck_seconds: float = Field(default=2.0, gt=0)
    lock_watch_seconds: float = Field(default=0.2, gt=0)

    def limits(self, given: dict[str, Any] | None = None) -> "Limits":
        """A new job's thresholds: these settings, with the ones its starter gave over them.

        `given`: the limits a request or a command line named (throttle.given), or the ones a
        job stored; None in it turns that limit off.
        """
        defaults = Limits(
            **{name: off_if_zero(getattr(self, f"throttle_{name}")) for name in Limits.names()}
        )
        return Limits.from_dict(given, defaults)

    @property
    def idle_in_transaction_seconds(self) -> float:
        """How long PostgreSQL lets our transactions sit idle before ending them.

        A process frozen mid-batch (SIGSTOP, a paused VM) keeps its transaction and locks open;
        this ends them soon after the job is seen as stale, so the frozen batch rolls back and
        nobody waits on its locks for long.
        """
        return max(1.0, self.stale_after_seconds / 2)

    @field_validator("jwt_audience", "jwt_issuer")
    @classmethod
    def _optional_claim(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("oidc_issuer", "oidc_audience", "oidc_jwks_url")
    @classmethod
    def _optional_oidc(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("oidc_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an https:// URL (got {value[:40]!r})")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            # Whoever can change the key set in transit can sign admin tokens.
            raise ValueError("must be https:// (plain http only to this machine, for tests)")
        return value

    @field_validator("oidc_algorithms", mode="before")
    @classmethod
    def _algorithms(cls, value) -> tuple[str, ...]:
        names = value.split(",") if isinstance(value, str) else list(value)
        names = [name.strip() for name in names if name.strip()]
        if not names:
            raise ValueError("names no algorithm (e.g. RS256,ES256)")
        for name in names:
            if name not in PUBLIC_KEY_ALGORITHMS:
                raise ValueError(
                    f"{name!r} is refused: only the provider's public-key algorithms are "
                    f"accepted ({', '.join(PUBLIC_KEY_ALGORITHMS)}), never HS* or none"
                )
        return tuple(dict.fromkeys(names))

    @field_validator("oidc_roles_claim", "oidc_subject_claim")
    @classmethod
    def _claim_path(cls, value: str) -> str:
        value = value.strip()
        if not value or value != value.strip(".") or ".." in value:
            raise ValueError("must be a claim name or a dot path such as realm_access.roles")
        return value

    @field_validator("oidc_admin_role")
    @classmethod
    def _admin_role(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the role that makes an admin (default admin)")
        return value.strip()

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _metrics_port(cls, value: object) -> object:
        # METRICS_PORT= (empty) means none: metrics stay on the app.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        # An empty DATABASE_URL (e.g. `DATABASE_URL= cmd`) means none, also over backend/.env.
        return None if value is None or not value.strip() else normalize_database_url(value)

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 32:
            raise ValueError(
                "must be at least 32 characters "
                '(generate one: python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        return value

    def require_jwt_secret(self) -> str:
        """The signing secret, or ConfigError when the app cannot run without it."""
        if not self.jwt_secret:
            raise ConfigError(
                "JWT_SECRET not found in environment\n"
                "Set JWT_SECRET (32+ characters) in the environment or in backend/.env"
            )
        return self.jwt_secret

    def check_auth_mode(self) -> None:
        """ConfigError unless the settings describe exactly one way of signing in."""
        oidc_set = sorted(
            name.upper()
            for name in self.model_fields_set
            if name.startswith("oidc_") and getattr(self, name) is not None
        )
        if self.auth_mode == "secret":
            if oidc_set:
                raise ConfigError(
                    f"{_are_set(oidc_set)}, but AUTH_MODE is secret (the default)\n"
                    "Set AUTH_MODE=oidc to sign in with the identity provider, "
                    "or remove the OIDC_* settings to use JWT_SECRET tokens"
                )
            return
        secret_set = [
            name
            for name, value in (
                ("JWT_SECRET", self.jwt_secret),
                ("JWT_AUDIENCE", self.jwt_audience),
                ("JWT_ISSUER", self.jwt_issuer),
            )
            if value
        ]
        if secret_set:
            raise ConfigError(
                f"AUTH_MODE=oidc, but {_are_set(secret_set)}: a deployment signs in one way\n"
                f"Remove {', '.join(secret_set)} from the environment and {ENV_FILE} "
                "(make run writes JWT_SECRET there), or unset AUTH_MODE to use JWT_SECRET tokens"
            )
        missing = [name.upper() for name in _OIDC_REQUIRED if not getattr(self, name)]
        if missing:
            raise ConfigError(
                f"AUTH_MODE=oidc needs {', '.join(missing)}\n"
                "Set OIDC_JWKS_URL (the provider's key set), OIDC_ISSUER (its tokens' iss) and "
                "OIDC_AUDIENCE (the aud its tokens carry for this service); see docs/API.md"
            )


def _are_set(names: list[str]) -> str:
    return f"{names[0]} is set" if len(names) == 1 else f"{', '.join(names)} are set"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(*, require_database: bool = True, **overrides) -> Settings:
    """Build Settings, turning validation failures into one ConfigError for the operator."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]).upper() if first["loc"] else "settings"
        message = str(first.get("ctx", {}).get("error") or first["msg"])
        raise ConfigError(f"{field}: {message}") from None
    settings.check_auth_mode()
    if require_database and not settings.database_url:
        raise ConfigError(
            "DATABASE_URL not found in environment\n"
            f"Set DATABASE_URL in the environment or in {ENV_FILE} "
            "(e.g. DATABASE_URL=postgresql://user:password@localhost:5432/dbname)"
        )
    return settings
