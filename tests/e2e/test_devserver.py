"""What `make run` does, as a real process: embedded PostgreSQL, migrations, demo data, token."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import BACKEND, SECRET


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path, env_extra):
    port = _free_port()
    env = {**os.environ, "JWT_SECRET": SECRET, "DATABASE_URL": "", **env_extra}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.devserver", "--port", str(port),
         "--data-dir", str(tmp_path / "pg"), "--demo-sessions", "300"],
        cwd=BACKEND, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return port, process


@pytest.mark.parametrize("database", ["embedded", "given"])
def test_make_run_serves_docs_and_a_working_admin_token(tmp_path, database_url, database):
    env = {} if database == "embedded" else {"DATABASE_URL": database_url}
    port, process = _serve(tmp_path, env)
    output = []
    try:
        deadline = time.monotonic() + 90
        while not any("Uvicorn running" in line for line in output):
            assert process.poll() is None and time.monotonic() < deadline, "".join(output)
            output.append(process.stdout.readline())
        text = "".join(output)
        token = re.search(r"Admin token \(8 h\):\s+(\S+)", text).group(1)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/docs").status_code == 200
        jobs = httpx.get(
            f"{base}/admin/migrations/goals", headers={"Authorization": f"Bearer {token}"}
        )
        assert jobs.status_code == 200 and jobs.json() == {"items": []}
        assert "loaded demo data: 300 sessions" in text
        assert ("embedded PostgreSQL" in text) == (database == "embedded")
        assert (tmp_path / "pg" / "PG_VERSION").exists() == (database == "embedded")
    finally:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0, rest
    assert "Application shutdown complete" in rest
