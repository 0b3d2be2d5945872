"""Real server processes killed mid-job: nothing lost, nothing doubled, and the job resumes."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from app import demo
from tests import helpers
from tests.api.conftest import BASE, TERMINAL, auth, wait_for
from tests.api.test_jobs import _uninterrupted
from tests.conftest import BACKEND, SECRET


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`uvicorn app.main:app` in its own process, as operators run it."""

    def __init__(self, database_url: str):
        self.port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "JWT_SECRET": SECRET,
            "HEARTBEAT_SECONDS": "0.2",
            "STALE_AFTER_SECONDS": "2",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(self.port)],
            cwd=BACKEND,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", headers=auth())

    async def ready(self) -> "Server":
        for _ in range(200):
            try:
                if (await self.client.get("/health")).status_code == 200:
                    return self
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        raise AssertionError("server did not start: " + self.output())

    def output(self) -> str:
        if self.process.poll() is None:
            self.process.kill()
        return self.process.communicate(timeout=10)[0]

    async def close(self) -> None:
        await self.client.aclose()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
async def servers(database_url):
    started = []

    async def start():
        server = await Server(database_url).ready()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.close()


async def _start_slow_job(server):
    response = await server.client.post(
        BASE, params={"dry_run": "false", "batch_size": 10, "pause_ms": 40}
    )
    assert response.status_code == 202
    job = response.json()
    return await wait_for(server.client, job["id"], lambda j: j["stats"]["goals_created"] > 0)


async def test_kill_9_mid_job_then_resume_elsewhere(
    servers, db, database_url, server_url, template_db
):
    await demo.write(database_url, sessions=700, seed=12)
    first = await servers()
    job = await _start_slow_job(first)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)

    # What the dead process committed matches its counters exactly.
    after_crash = await helpers.get(db, job["id"])
    assert after_crash["status"] == "running"
    assert after_crash["goals_created"] == len(await helpers.migrated_goals(db)) > 0

    second = await servers()
    await asyncio.sleep(2.2)  # the dead job's heartbeat goes stale
    seen = (await second.client.get(f"{BASE}/{job['id']}")).json()
    assert seen["status"] == "interrupted" and "no heartbeat" in seen["error"]
    assert (await second.client.post(f"{BASE}/{job['id']}/resume")).status_code == 202
    done = await wait_for(second.client, job["id"], seconds=60)
    assert done["status"] == "succeeded"

    expected_stats, expected_goals = await _uninterrupted(server_url, template_db, 12, 700)
    assert {k: done["stats"][k] for k in expected_stats} == expected_stats
    assert await helpers.migrated_goals(db) == expected_goals


async def test_sigterm_saves_the_cursor_and_exits_promptly(servers, db, database_url):
    await demo.write(database_url, sessions=700, seed=13)
    server = await servers()
    job = await _start_slow_job(server)
    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    assert time.monotonic() - began < 10
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert server.process.returncode in (0, -signal.SIGTERM)

    stopped = await helpers.get(db, job["id"])
    assert stopped["status"] == "interrupted"
    assert stopped["goals_created"] == len(await helpers.migrated_goals(db))
    log = server.output()
    assert "Application shutdown complete" in log and f"job {job['id']} ended: interrupted" in log

    again = await servers()
    assert (await again.client.post(f"{BASE}/{job['id']}/resume")).status_code == 202
    done = await wait_for(again.client, job["id"], seconds=60)
    assert done["status"] == "succeeded" and done["status"] not in TERMINAL - {"succeeded"}
    assert done["stats"]["goals_created"] == len(await helpers.migrated_goals(db))
