"""The benchmark's embedded PostgreSQL: a migrated, filled template and throwaway clones of it."""

import asyncio
import atexit
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app import demo, embedded
from app.models.therapy_session import CANDIDATE_PREDICATE
from app.schema import bootstrap

TEMPLATE = "bench_template"

# What a migration has to go through, counted the way the engine counts (a non-array
# action_items is one invalid item).
_FACTS_SQL = f"""
SELECT count(*) AS candidate_sessions,
       coalesce(sum(CASE WHEN jsonb_typeof(extracted_notes -> 'action_items') = 'array'
                         THEN jsonb_array_length(extracted_notes -> 'action_items')
                         ELSE 1 END), 0) AS items,
       (SELECT count(*) FROM therapy_sessions) AS sessions,
       (SELECT count(*) FROM treatment_goals) AS existing_goals,
       current_setting('server_version') AS server_version,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('work_mem') AS work_mem,
       current_setting('max_wal_size') AS max_wal_size,
       current_setting('fsync') AS fsync,
       current_setting('synchronous_commit') AS synchronous_commit,
       pg_database_size(current_database()) AS database_bytes
FROM therapy_sessions
WHERE {CANDIDATE_PREDICATE}
"""


@dataclass(frozen=True)
class Facts:
    """The template's data, as every measurement sees it."""

    sessions: int
    candidate_sessions: int
    items: int
    existing_goals: int
    server_version: str
    shared_buffers: str
    max_wal_size: str
    work_mem: str
    fsync: str
    synchronous_commit: str
    database_mb: float
    mix: str


class Cluster:
    """An embedded PostgreSQL in a temporary directory, deleted when the process exits.

    Or, with `server_url`, a server someone else runs (another PostgreSQL version, say), where
    the bench may create and drop databases; its settings are then that server's own.
    """

    def __init__(
        self,
        *,
        durable: bool = True,
        settings: dict[str, str] | None = None,
        server_url: str | None = None,
    ) -> None:
        if server_url:
            self.server_url = server_url.replace("postgresql+asyncpg://", "postgresql://", 1)
            return
        root = Path(tempfile.mkdtemp(prefix="gm-bench-"))
        # atexit runs last-registered first: the server's own cleanup (stop, delete its data)
        # runs before this removes the directory around it.
        atexit.register(shutil.rmtree, root, True)
        # Durable is PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes on): the
        # server users run. durable=False is the fsync-off server tests use, for comparison.
        self.server_url = embedded.start(
            root / "pg", durable=durable, cleanup="delete", settings=settings
        )

    def url(self, database: str) -> str:
        """A postgresql:// URL for one database of this server."""
        return make_url(self.server_url).set(database=database).render_as_string(False)

    async def admin(self, sql: str) -> None:
        """Run a statement that must not be inside a transaction (CREATE/DROP DATABASE)."""
        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def build_template(self, *, sessions: int, seed: int, mix: str) -> Facts:
        """Create the template: the schema as `make run` builds it, demo data, VACUUM ANALYZE."""
        await self.admin(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await self.admin(f"CREATE DATABASE {TEMPLATE}")
        url = self.url(TEMPLATE)
        # Alembic's env.py runs its own event loop, so it gets a thread of its own.
        await asyncio.to_thread(bootstrap.install, url, configure_logging=False)
        await demo.write(url, sessions=sessions, seed=seed, mix=mix)
        conn = await asyncpg.connect(url)
        try:
            # Hint bits, visibility map and statistics settled once, so no clone pays for them.
            await conn.execute("VACUUM ANALYZE")
            row = await conn.fetchrow(_FACTS_SQL)
        finally:
            await conn.close()
        return Facts(
            sessions=row["sessions"],
            candidate_sessions=row["candidate_sessions"],
            items=row["items"],
            existing_goals=row["existing_goals"],
            server_version=row["server_version"],
            shared_buffers=row["shared_buffers"],
            max_wal_size=row["max_wal_size"],
            work_mem=row["work_mem"],
            fsync=row["fsync"],
            synchronous_commit=row["synchronous_commit"],
            database_mb=round(row["database_bytes"] / 2**20, 1),
            mix=mix,
        )

    @asynccontextmanager
    async def clone(self, label: str, source: str | None = None) -> AsyncIterator[str]:
        """A fresh copy of the template (or of the database at URL `source`); dropped afterwards.

        Nothing may be connected to the database copied.
        """
        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        template = make_url(source).database if source else TEMPLATE
        await self.admin(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        try:
            yield self.url(name)
        finally:
            await self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
