"""make run's start, in-process: a busy port or an unreachable DATABASE_URL stops it in one
clear message before anything starts, and the file it writes for a second terminal never
overrides a DATABASE_URL the user has set."""

import socket
import subprocess

import pytest

from app import devserver
from app.config import Settings
from tests.conftest import SECRET

URL = "postgresql://postgres@/goals?host=/srv/make-run/.data/postgres"


@pytest.fixture
def env_file(tmp_path, monkeypatch):
    """backend/.env, moved to a temporary file for this test."""
    path = tmp_path / "backend.env"
    path.write_text("")
    monkeypatch.setitem(Settings.model_config, "env_file", path)
    monkeypatch.setattr(devserver, "ENV_FILE", path)
    monkeypatch.setenv("JWT_SECRET", SECRET)
    # setenv first records the variable's state, so the undo also removes one main() sets.
    monkeypatch.setenv("DATABASE_URL", "recorded")
    monkeypatch.delenv("DATABASE_URL")
    return path


def test_a_busy_port_is_reported_before_anything_starts(tmp_path, env_file, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = devserver.main(["--port", str(port), "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == (
        f"port {port} on 127.0.0.1 is already in use (another make run?); "
        f"start on another port: make run PORT={port + 1}\n"
    )
    assert not (tmp_path / "data").exists()  # no PostgreSQL started, no token minted


def test_an_unreachable_database_url_in_backend_env_is_one_clear_message(
    tmp_path, env_file, capsys
):
    nowhere = tmp_path / "no-server-here"
    env_file.write_text(f"DATABASE_URL=postgresql://postgres@/goals?host={nowhere}\n")
    code = devserver.main(["--port", "0", "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in out + err and "Admin" not in out
    assert err.splitlines() == [
        f"cannot connect to the database at host {nowhere}, port 5432: [Errno 2] No such file "
        f"or directory (DATABASE_URL from {env_file})",
        f"fix DATABASE_URL in {env_file}, or remove it there to use the embedded PostgreSQL",
    ]
    assert not (tmp_path / "data" / "postgres").exists()  # the embedded one was left alone


def test_oidc_mode_is_refused_before_a_secret_is_written(tmp_path, env_file, monkeypatch, capsys):
    monkeypatch.delenv("JWT_SECRET")
    monkeypatch.setenv("AUTH_MODE", "oidc")
    monkeypatch.setenv("OIDC_JWKS_URL", "https://sso.example.com/certs")
    monkeypatch.setenv("OIDC_ISSUER", "https://sso.example.com")
    monkeypatch.setenv("OIDC_AUDIENCE", "goal-migration")
    code = devserver.main(["--port", "0", "--data-dir", str(tmp_path / "data")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("make run signs in with its own JWT_SECRET tokens, but AUTH_MODE=oidc")
    assert env_file.read_text() == ""  # no JWT_SECRET beside the OIDC settings
    assert not (tmp_path / "data").exists()


def _source(env_path, **environment) -> subprocess.CompletedProcess:
    script = f'. {env_path}; printf "%s|%s" "${{DATABASE_URL:-}}" "$TOKEN"'
    return subprocess.run(
        ["bash", "-c", script], env=environment, capture_output=True, text=True, check=True
    )


def test_the_second_terminals_file_sets_database_url_only_where_none_is_set(tmp_path, env_file):
    path = tmp_path / "env"
    devserver.write_env_file(
        path, devserver.env_file_text(database_url=URL, origin="embedded", token="t0k", path=path)
    )
    assert path.stat().st_mode & 0o077 == 0  # it holds an admin token

    fresh = _source(path)
    assert fresh.stdout == f"{URL}|t0k" and fresh.stderr == ""
    assert _source(path, DATABASE_URL="").stdout == f"{URL}|t0k"
    assert _source(path, DATABASE_URL=URL).stderr == ""

    mine = "postgresql://me@db.example.org/prod"
    kept = _source(path, DATABASE_URL=mine)
    assert kept.stdout == f"{mine}|t0k"
    assert "DATABASE_URL is already set in this shell, to another database" in kept.stderr

    env_file.write_text(f"JWT_SECRET=x\nDATABASE_URL={mine}\n")
    deferred = _source(path)
    assert deferred.stdout == "|t0k"  # backend/.env's DATABASE_URL stays the one scripts read
    assert f"DATABASE_URL is set in {env_file}" in deferred.stderr


def test_a_database_url_the_user_set_is_not_written_for_the_second_terminal(tmp_path):
    path = tmp_path / "env"
    text = devserver.env_file_text(
        database_url=None, origin="the environment", token="t0k", path=path
    )
    assert "DATABASE_URL=" not in text
    path.write_text(text)
    assert _source(path, DATABASE_URL="postgresql://me@h/d").stdout == "postgresql://me@h/d|t0k"
