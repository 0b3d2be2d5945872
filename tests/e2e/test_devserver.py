"""What `make run` does, as a real process: embedded PostgreSQL, migrations, demo data, token."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND, ROOT, SECRET


@pytest.fixture
def data_dir():
    """A DATA_DIR outside pytest's private base directory, which the embedded server's own
    system user (when the tests run as root) could not enter."""
    path = Path(tempfile.mkdtemp(prefix="gm-make-run-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


def _serve(data_dir, tmp_path, env_extra):
    env = {**os.environ, "JWT_SECRET": SECRET, "DATABASE_URL": "", **env_extra}
    with (tmp_path / "out.log").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.devserver", "--port", "0",
             "--data-dir", str(data_dir), "--demo-sessions", "300"],
            cwd=BACKEND, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.parametrize("database", ["embedded", "given", "names-embedded"])
def test_make_run_serves_docs_and_a_working_admin_token(tmp_path, data_dir, database_url, database):
    env = {
        "embedded": {},
        "given": {"DATABASE_URL": database_url},
        # The URL an earlier make run printed, now in DATABASE_URL: make run starts that server.
        "names-embedded": {
            "DATABASE_URL": f"postgresql://postgres@/goals?host={data_dir / 'postgres'}"
        },
    }[database]
    process = _serve(data_dir, tmp_path, env)
    log = tmp_path / "out.log"
    try:
        deadline = time.monotonic() + 90
        while "Uvicorn running" not in (text := log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.1)
        base = re.search(r"API docs:    (http://127\.0\.0\.1:\d+)/docs", text).group(1)
        token = re.search(r"^    export TOKEN=(\S+)$", text, re.M).group(1)
        assert httpx.get(f"{base}/docs").status_code == 200
        jobs = httpx.get(
            f"{base}/admin/migrations/goals", headers={"Authorization": f"Bearer {token}"}
        )
        assert jobs.status_code == 200 and jobs.json()["items"] == []
        assert "loaded demo data: 300 sessions" in text
        assert ("starting embedded PostgreSQL" in text) == (database != "given")
        assert (data_dir / "postgres" / "PG_VERSION").exists() == (database != "given")
        exported = re.search(r"^    export DATABASE_URL='(\S+)'$", text, re.M)
        assert (exported is not None) == (database == "embedded")
        written = (data_dir / "env").read_text()
        assert f"export TOKEN={token}" in written
        assert ("export DATABASE_URL=" in written) == (database == "embedded")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0, log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert not (data_dir / "env").exists()


def test_make_run_takes_port_and_reports_a_busy_one_before_starting_anything(tmp_path):
    env = {**os.environ, "JWT_SECRET": SECRET, "DATABASE_URL": ""}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.installed", "run",
             f"PY={sys.executable}", f"PORT={port}", f"DATA_DIR={tmp_path / 'data'}",
             "DEMO_SESSIONS=10"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # so that a make run that did start can be stopped whole
        )  # fmt: skip
        try:
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert process.returncode != 0
    assert (
        f"port {port} on 127.0.0.1 is already in use (another make run?); "
        f"start on another port: make run PORT={port + 1}"
    ) in err
    assert "TOKEN" not in out and "startup complete" not in out + err
    assert not (tmp_path / "data").exists()
