"""The real service in a subprocess, as an operator runs it, and its memory as the kernel sees."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BACKEND = Path(__file__).resolve().parent.parent / "backend"


class ServerFailed(Exception):
    """The service did not start or died; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb(pid: int) -> dict[str, float]:
    """The process's current (VmRSS) and peak (VmHWM) resident memory, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB
    return values


class Server:
    """`uvicorn app.main:app` on a free port, with DATABASE_URL and JWT_SECRET of our choosing.

    JOB_PARTITIONS is left unset, so the service runs with its default.
    """

    def __init__(self, *, database_url: str, jwt_secret: str, log_path: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k != "JOB_PARTITIONS"}
        env.update(DATABASE_URL=database_url, JWT_SECRET=jwt_secret)
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
            ],
            cwd=BACKEND,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until /health answers, or raise ServerFailed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise ServerFailed(f"the server did not answer within {timeout:.0f} s" + self.tail())

    def check_alive(self) -> None:
        """Raise ServerFailed if the process has exited."""
        if self.process.poll() is not None:
            raise ServerFailed(f"the server exited with {self.process.returncode}" + self.tail())

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- server log ---\n" + "\n".join(text)

    def stop(self) -> None:
        """SIGTERM, as uvicorn expects, then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> "Server":
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
