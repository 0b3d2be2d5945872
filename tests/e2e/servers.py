"""`uvicorn app.main:app` in its own process, as operators run it, for tests that kill it."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx

from tests.api.conftest import BASE, TERMINAL, auth
from tests.conftest import BACKEND, SECRET
from tests.helpers import until


class Server:
    """One instance: its socket is bound here and handed over, so no other process can take
    the port between choosing and serving it; its output goes to a file, never a pipe that
    could fill and block it."""

    def __init__(self, database_url: str, **env: str):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        fd, self.log_path = tempfile.mkstemp(prefix="gm-server-", suffix=".log")
        self.log = os.fdopen(fd, "w")
        settings = {
            "DATABASE_URL": database_url,
            "JWT_SECRET": SECRET,
            "HEARTBEAT_SECONDS": "0.3",
            "STALE_AFTER_SECONDS": "30",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--fd", str(self.sock.fileno())],
            cwd=BACKEND,
            env={**os.environ, **settings},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=(self.sock.fileno(),),
        )
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers=auth(), timeout=30
        )

    async def ready(self, seconds: float = 30) -> "Server":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if (await self.client.get("/health")).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "server exited: " + self.output()
            await asyncio.sleep(0.05)
        raise AssertionError("server did not start: " + self.output())

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def exited(self, seconds: float) -> int:
        """Wait for the process to exit; its return code."""
        return await asyncio.to_thread(self.process.wait, seconds)

    async def close(self) -> None:
        await self.client.aclose()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.sock.close()
        self.log.close()
        os.unlink(self.log_path)


async def job_of(server: Server, job_id: str) -> dict:
    response = await server.client.get(f"{BASE}/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def ended(server: Server, job_id: str, seconds: float = 60) -> dict:
    async def check():
        job = await job_of(server, job_id)
        return job if job["status"] in TERMINAL else None

    return await until(check, seconds, f"job {job_id} to end")


async def created(server: Server, job_id: str) -> bool:
    return (await job_of(server, job_id))["stats"]["goals_created"] > 0


async def said(server: Server, text: str) -> bool:
    """The server's output has `text` in it (a log line is written after what it reports)."""
    return text in server.output()
