"""Shared-buffer hits and misses of one measurement's database, from PostgreSQL's statistics.

A clone starts with empty statistics, so what is read after a measurement is that measurement's
own I/O: blocks found in shared_buffers (hits) and blocks PostgreSQL had to read (misses, from
the OS cache or the disk), for the tables the migration reads and writes and their indexes.
"""

import asyncio

import asyncpg

_SQL = """
SELECT relname,
       coalesce(heap_blks_hit, 0) AS heap_hit, coalesce(heap_blks_read, 0) AS heap_read,
       coalesce(idx_blks_hit, 0) AS index_hit, coalesce(idx_blks_read, 0) AS index_read
FROM pg_statio_user_tables
WHERE relname IN ('therapy_sessions', 'treatment_goals', 'users')
ORDER BY relname
"""


_COUNTS = ("heap_hit", "heap_read", "index_hit", "index_read")


async def read(url: str) -> dict[str, dict[str, int]]:
    """Blocks hit and read per table (heap and indexes) since the database was created."""
    # Backends flush their statistics as they exit; give the ones just closed a moment.
    await asyncio.sleep(1.0)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(_SQL)
    finally:
        await conn.close()
    return {row["relname"]: {k: row[k] for k in _COUNTS} for row in rows}


def misses(stats: dict[str, dict[str, int]]) -> int:
    """Blocks read from outside shared_buffers, over all tables and indexes."""
    return sum(s["heap_read"] + s["index_read"] for s in stats.values())


def hits(stats: dict[str, dict[str, int]]) -> int:
    """Blocks found in shared_buffers, over all tables and indexes."""
    return sum(s["heap_hit"] + s["index_hit"] for s in stats.values())
