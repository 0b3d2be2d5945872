"""The embedded server with settings of its own, as the bench starts it (BENCH_PG_SETTINGS)."""

import os
import subprocess
import sys
import textwrap
import time

_START = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    import asyncpg
    from app import embedded

    url = embedded.start(
        Path(sys.argv[1]), durable=False, cleanup="delete",
        settings={"shared_buffers": "48MB", "max_wal_size": "2GB"},
    )

    async def show():
        conn = await asyncpg.connect(url)
        try:
            for name in ("shared_buffers", "max_wal_size", "fsync"):
                print(name, await conn.fetchval(f"SELECT current_setting('{name}')"))
        finally:
            await conn.close()

    asyncio.run(show())
    print(Path(sys.argv[1], "postmaster.pid").read_text().split()[0])
    """
)


def test_settings_that_need_a_restart_apply_and_the_server_is_gone_at_exit(tmp_path):
    pgdata = tmp_path / "pg"
    done = subprocess.run(
        [sys.executable, "-c", _START, str(pgdata)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert "shared_buffers 48MB" in lines
    assert "max_wal_size 2GB" in lines
    assert "fsync off" in lines
    postmaster = int(lines[-2])
    # The restarted postmaster is stopped and its data deleted when the process exits, not
    # left running over a deleted directory.
    assert not pgdata.exists()
    for _ in range(50):
        try:
            os.kill(postmaster, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"postmaster {postmaster} still runs after its owner exited")
