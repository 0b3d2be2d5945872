"""The migration script on a terminal and when it goes away: an SSH drop (SIGHUP) ends a run
like Ctrl-C does, and a real run asks on a real terminal before it writes."""

import asyncio
import os
import pty
import select
import signal
import sys
import time

from sqlalchemy import text

from app import demo
from tests import helpers
from tests.conftest import BACKEND
from tests.e2e.test_cli import MIGRATE, Run, _env, _slow_batches, _until_progress, start


async def _read_until(fd: int, marker: bytes, seconds: float = 30) -> bytes:
    """Read a pty's master side until `marker` shows, polling against a deadline."""
    seen = b""
    deadline = time.monotonic() + seconds
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in {seen!r}"
        if select.select([fd], [], [], 0)[0]:
            seen += os.read(fd, 4096)
        else:
            await asyncio.sleep(0.05)
    return seen


async def test_sighup_ends_a_run_like_ctrl_c(database_url, db):
    await demo.write(database_url, sessions=300)
    await _slow_batches(db)
    process = await start(database_url, "--batch-size", "10")
    async with asyncio.timeout(30):
        seen = await _until_progress(process)
        process.send_signal(signal.SIGHUP)
        out, err = await process.communicate()
    run = Run(process.returncode, "".join(seen) + out.decode(), err.decode())
    assert run.code == 130, run.err  # as for Ctrl-C, not the shell's 129
    assert "Hang-up (SIGHUP): Stopping after the current batch" in run.err
    job_id = run.job_id()
    assert "⚠️  Migration interrupted: stopped after the last committed batch." in run.lines
    assert f"Resume with: python {MIGRATE} --resume {job_id}" in run.lines
    job = await helpers.get(db, job_id)
    assert job["status"] == "interrupted"
    assert 0 < job["sessions_processed"] < job["sessions_total"]
    assert run.summary() == helpers.stats(job)

    resumed = await _run_to_end(database_url, "--resume", str(job_id)[:8])
    assert resumed.code == 0, resumed.err
    assert (await helpers.get(db, job_id))["status"] == "succeeded"


async def _run_to_end(database_url: str, *args: str) -> Run:
    process = await start(database_url, *args)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return Run(process.returncode, out.decode(), err.decode())


async def test_a_hang_up_that_takes_the_terminal_along(database_url, db):
    """The SSH drop itself: the terminal is gone (writes fail with EIO), then SIGHUP."""
    await demo.write(database_url, sessions=300)
    await _slow_batches(db)
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, MIGRATE, "--batch-size", "10", "--yes",
        cwd=BACKEND, env=_env(database_url), stdin=slave, stdout=slave,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    try:
        await _read_until(master, b"Progress")
    finally:
        os.close(master)
    process.send_signal(signal.SIGHUP)
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 130, err.decode()
    assert b"Traceback" not in err
    async with db.connect() as conn:
        job_id = (await conn.execute(text("SELECT id FROM migration_jobs"))).scalar_one()
    job = await helpers.get(db, job_id)
    assert job["status"] == "interrupted"
    assert len(await helpers.migrated_goals(db)) == job["goals_created"] > 0


async def test_a_real_run_asks_on_a_terminal_first(database_url, db):
    await demo.write(database_url, sessions=50)
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable, MIGRATE,
        cwd=BACKEND, env=_env(database_url), stdin=slave,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(slave)
    try:
        async with asyncio.timeout(30):
            question = await process.stderr.readuntil(b"[y/N] ")
            os.write(master, b"n\n")
            out, err = await process.communicate()
    finally:
        os.close(master)
    assert b"Create treatment_goals for real in database " in question
    assert process.returncode == 1
    assert err.decode().strip() == "Not confirmed; nothing was changed."
    assert out == b""
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one() == 0
