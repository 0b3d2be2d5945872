"""The migration script as a real process told to stop: SIGTERM, and a reader that goes away.

Each run holds its batches at a test gate (tests/helpers.gate_closed) while the test acts, so
the job is always stopped with work left, whatever the machine's load; the end state is then
judged against the model of the rules, after a resume.
"""

import asyncio
import os
import signal
import sys
import uuid

from sqlalchemy import text

from app import demo
from app.jobs import runner
from tests import helpers
from tests.conftest import BACKEND
from tests.expected import model_outcome

MIGRATE = "scripts/migrate_goals_from_jsonb.py"


def _env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    return {**env, "DATABASE_URL": database_url, "PYTHONIOENCODING": "utf-8"}


async def _start(database_url: str, *args: str, stdout=asyncio.subprocess.PIPE):
    return await asyncio.create_subprocess_exec(
        sys.executable, MIGRATE, *args, cwd=BACKEND, env=_env(database_url),
        stdout=stdout, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _resume_to_the_end(db, settings, job_id: uuid.UUID) -> dict:
    token = await runner.resume_job(db, settings, job_id=job_id, actor="test")
    assert await runner.run_job(db, settings, job_id=job_id, token=token) == "succeeded"
    return await helpers.get(db, job_id)


async def _latest_job_id(db) -> uuid.UUID:
    async def newest():
        async with db.connect() as conn:
            row = await conn.execute(
                text("SELECT id FROM migration_jobs ORDER BY created_at DESC LIMIT 1")
            )
            return row.scalar_one_or_none()

    return await helpers.until(newest, what="the script's job")


async def test_sigterm_stops_at_the_batch_boundary_and_exits_130(database_url, db, settings):
    await demo.write(database_url, sessions=600, seed=21)
    expected = await model_outcome(db)
    async with asyncio.timeout(60):
        async with helpers.gate_closed(db):
            process = await _start(database_url, "--batch-size", "10")
            await helpers.at_gate(db, 2)  # a batch in flight in each partition
            process.send_signal(signal.SIGTERM)
            heard = b""
            while b"Stopping after the current batch" not in heard:  # the script took it in
                line = await process.stderr.readline()
                assert line, heard.decode()
                heard += line
        out, err = await process.communicate()
    out, err = out.decode(), heard.decode() + err.decode()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    job_id = await _latest_job_id(db)
    assert "⚠️  Migration interrupted: stopped after the last committed batch." in out
    assert f"Resume with: python {MIGRATE} --resume {job_id}" in out
    job = await helpers.get(db, job_id)
    assert job["status"] == "interrupted"
    assert 0 < job["sessions_processed"] < job["sessions_total"]
    assert f"Sessions Processed: {job['sessions_processed']}" in out
    assert len(await helpers.migrated_goals(db)) == job["goals_created"]

    done = await _resume_to_the_end(db, settings, job_id)
    assert helpers.stats(done) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)


async def test_a_closed_stdout_stops_the_job_and_exits_130(database_url, db, settings):
    await demo.write(database_url, sessions=600, seed=22)
    expected = await model_outcome(db)
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", 0)
    )
    async with asyncio.timeout(60):
        async with helpers.gate_closed(db):
            try:
                process = await _start(database_url, "--batch-size", "10", stdout=write_end)
            finally:
                os.close(write_end)
            banner = b""
            while b"\nFound " not in banner:  # the banner is out; no progress line can be yet
                line = await reader.readline()
                assert line, banner.decode()
                banner += line
            await helpers.at_gate(db, 2)
            transport.close()  # `... | head` has read what it wanted and gone
        # The first committed batch's progress line meets a closed pipe.
        _, err = await process.communicate()
    err = err.decode()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    job = await helpers.get(db, await _latest_job_id(db))
    assert job["status"] == "interrupted"
    assert 0 < job["sessions_processed"] < job["sessions_total"]
    assert len(await helpers.migrated_goals(db)) == job["goals_created"]

    done = await _resume_to_the_end(db, settings, job["id"])
    assert helpers.stats(done) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
