"""Real PostgreSQL for every test: TEST_DATABASE_URL's server, or an embedded one per run.

The schema is built once into a template database, the way `make run` builds it (the platform
tables where absent, then the service's Alembic migrations); each test gets its own database
cloned from it (about 0.1 s), so tests never see each other's rows and run in any order.
"""

import asyncio
import logging
import os
import tempfile
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic.config import Config
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import make_url

from app import db as db_module
from app import embedded
from app.config import load_settings
from app.db import create_engine
from app.schema import bootstrap

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "backend"
SECRET = "test-secret-" + "x" * 40

# Property tests draw the same examples on every run (make test, CI, the 20x loop) and never
# replay a failure from a stale .hypothesis/ directory: a red run always means a changed input.
# HYPOTHESIS_PROFILE=explore draws fresh random examples, more of them, to hunt for new bugs.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, max_examples=25)
hypothesis_settings.register_profile("explore", database=None, max_examples=200)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(server_url: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(_with_database(server_url, "postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def alembic_config(url: str) -> Config:
    return db_module.alembic_config(url, configure_logging=False)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> str:
    """A postgresql:// URL of a server where tests may create databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)
    pgdata = Path(tempfile.mkdtemp(prefix="gm-test-")) / "pg"
    return embedded.start(pgdata, durable=False, cleanup="delete")


@pytest.fixture(scope="session")
def template_db(server_url) -> str:
    """The platform tables as a new install creates them, then the service's migrations at head."""
    name = f"gm_template_{os.getpid()}"
    _admin(server_url, f"DROP DATABASE IF EXISTS {name}")
    _admin(server_url, f"CREATE DATABASE {name}")
    bootstrap.install(_with_database(server_url, name), configure_logging=False)
    yield name
    _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def new_database(server_url: str, template: str | None = None) -> str:
    """Create a fresh database (from `template` or empty) and return its URL."""
    name = f"gm_test_{uuid.uuid4().hex[:12]}"
    _admin(server_url, f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return _with_database(server_url, name)


def drop_database(url: str) -> None:
    _admin(url, f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")


@pytest.fixture
def database_url(server_url, template_db) -> str:
    """This test's own database, migrated to head, as a postgresql:// URL."""
    url = new_database(server_url, template_db)
    yield url
    drop_database(url)


@pytest.fixture
def settings(database_url):
    """Settings pointing at this test's database, with quick heartbeats for the job tests."""
    return load_settings(
        database_url=database_url,
        jwt_secret=SECRET,
        heartbeat_seconds=0.1,
        stale_after_seconds=30,
        _env_file=None,
    )


@pytest.fixture
async def db(settings):
    """An async engine on this test's database."""
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


class Lines(logging.Handler):
    """The job log's lines, whatever the logger's propagation."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def job_log():
    """The job runner's warning lines while the test runs (retries, failed sessions)."""
    handler = Lines()
    logger = logging.getLogger("app.jobs")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
