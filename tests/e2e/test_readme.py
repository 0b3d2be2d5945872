"""The README's second-terminal commands, run as written against a running `make run`.

`make run` runs for real (through the Makefile, on its own embedded PostgreSQL in a temporary
DATA_DIR, on a free port). The README's command-line block then runs in bash, line by line as
a newcomer pastes it, from a directory laid out like the repository: `.venv` and `backend/`
are the real ones, `.data/` is that make run's DATA_DIR. Each command has to work, and has to
have worked on the database make run serves.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.config import ENV_FILE, load_settings
from tests.conftest import ROOT, SECRET
from tests.e2e.test_devserver import data_dir  # noqa: F401 (a fixture)

README = ROOT / "README.md"
DEMO_SESSIONS = 200


def readme_block(section: str) -> str:
    """The first ```bash block under the README's `## <section>` heading."""
    text = README.read_text()
    body = text[text.index(f"\n## {section}\n") :]
    return re.search(r"```bash\n(.*?)```", body, re.S).group(1)


def _wait_for(path: Path, pattern: str, process: subprocess.Popen, seconds: float) -> re.Match:
    """Poll make run's output file until `pattern` shows; fail if make run ends or time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        match = re.search(pattern, path.read_text())
        if match:
            return match
        assert process.poll() is None, f"make run ended early:\n{path.read_text()}"
        assert time.monotonic() < deadline, f"make run not ready:\n{path.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def make_run(tmp_path, data_dir):  # noqa: F811
    """`make run PORT=0 DATA_DIR=... DEMO_SESSIONS=...` in its own process group, until Ctrl-C."""
    if ENV_FILE.exists() and load_settings(require_database=False).database_url:
        pytest.skip(f"{ENV_FILE} names a DATABASE_URL, which the README's commands rightly use")
    root = data_dir.parent / "checkout"
    root.mkdir()
    (root / "backend").symlink_to(ROOT / "backend")
    (root / ".venv").symlink_to(Path(sys.prefix))  # the virtualenv running these tests
    log = tmp_path / "make-run.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    command = [
        "make", "--no-print-directory", "-o", ".venv/.installed", "run", f"PY={sys.executable}",
        "PORT=0", f"DATA_DIR={root / '.data'}", f"DEMO_SESSIONS={DEMO_SESSIONS}",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, "JWT_SECRET": SECRET},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches make and the server alike
        )
    try:
        base = _wait_for(log, r"Uvicorn running on (http://127\.0\.0\.1:\d+)", process, 120)[1]
        yield root, base, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # make passes the Ctrl-C on and dies of it, as in a terminal; the server shut down cleanly.
    assert process.returncode in (0, -signal.SIGINT), log.read_text()
    assert "Application shutdown complete" in log.read_text()
    assert not (root / ".data" / "env").exists()  # the second terminal's file went with it


def test_the_readmes_command_line_works_as_written_next_to_make_run(make_run):
    root, base, log = make_run
    started = log.read_text()
    assert f"loaded demo data: {DEMO_SESSIONS} sessions" in started
    assert f"API docs:    {base}/docs" in started and f"Admin page:  {base}/admin/" in started
    exported = r"^    export DATABASE_URL='postgresql://postgres@/goals\?host=/"
    assert re.search(exported, started, re.M)
    token = re.search(r"^    export TOKEN=(\S+)$", started, re.M)[1]

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "TEST_DATABASE_URL", "TOKEN", "VIRTUAL_ENV")
    }
    block = readme_block("Command line")
    run = subprocess.run(
        ["bash", "-e", "-x", "-c", block],  # -e: stop at the first command that fails
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    backups = re.findall(r"✅ Backup written: (\S+)", run.stdout)
    try:
        assert run.returncode == 0, f"{run.stderr[-3000:]}\n{run.stdout[-3000:]}"
        assert "Traceback" not in run.stderr
        out = run.stdout
        assert len(backups) == 1 and Path(backups[0]).stat().st_size > 0
        assert "🔍 DRY RUN MODE - No database changes will be made" in out
        assert out.count("✅ Migration completed successfully!") == 2
        assert "All Action Items Accounted For: Yes" in out
    finally:
        for path in backups:
            Path(path).unlink(missing_ok=True)  # the README's backup lands in the real backups/

    # The scripts worked on the database make run serves: the API there sees their two jobs.
    jobs = httpx.get(
        f"{base}/admin/migrations/goals", headers={"Authorization": f"Bearer {token}"}
    ).json()["items"]
    assert [(j["requested_by"], j["dry_run"], j["status"]) for j in jobs] == [
        ("cli", False, "succeeded"),
        ("cli", True, "succeeded"),
    ]
    listed = out.split("JOB ID", 1)[1]
    assert all(j["id"] in listed for j in jobs)

    # "Using it": the token from .data/env works against the port make run printed.
    using = "\n".join(
        line.replace("http://127.0.0.1:8000", base)
        for line in readme_block("Using it").splitlines()
        if "<job_id>" not in line
    )
    curl = subprocess.run(
        ["bash", "-e", "-c", using.replace("curl ", "curl -sSf ")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert curl.returncode == 0, curl.stderr
    assert '"status":"queued"' in curl.stdout or '"dry_run":true' in curl.stdout
