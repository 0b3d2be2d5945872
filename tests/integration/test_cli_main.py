"""The migration command's main(argv), in-process on real PostgreSQL: --verify and error paths.

Only what needs a real process (signals, a closed stdout) runs the script as one
(tests/e2e/test_cli_signals.py); these call the same main() the script calls, in a second.
"""

import asyncio
import json
import uuid

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from app.cli import migrate
from app.db import alembic_config, create_engine
from app.schema.version import VERSION_TABLE
from tests import helpers, model


def _call(argv: list[str], capsys) -> tuple[int, str, str]:
    code = migrate.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _on(settings, work):
    """Run `work(engine)` on this test's database, outside the command's own event loop."""

    async def go():
        engine = create_engine(settings)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture
def cli_env(monkeypatch, database_url):
    """The command reads this test's database from DATABASE_URL, as an operator sets it."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("JWT_SECRET", raising=False)


def _session(patient, therapist, day, items):
    return {"id": uuid.uuid4(), "patient_id": patient, "therapist_id": therapist,
            "session_date": helpers.ts(day), "notes": {"action_items": items}}  # fmt: skip


def test_verify_exits_1_until_every_item_is_accounted_for(cli_env, settings, capsys):
    p, t = uuid.uuid4(), uuid.uuid4()
    users = [(p, "patient"), (t, "therapist")]
    sessions = [_session(p, t, 0, [{"task": "Walk"}, {"task": "Walk"}, 7]), _session(p, t, 1, [])]
    _on(settings, lambda db: helpers.load(db, users=users, sessions=sessions))
    items = model.item_count(sessions)

    code, out, _ = _call(["--verify"], capsys)
    assert code == 1  # no successful real run yet
    assert "All Action Items Accounted For: No" in out and f"(JSONB): {items}" in out
    code, out, _ = _call(["--verify", "--json"], capsys)
    document = json.loads(out)
    assert code == document["exit_code"] == 1 and document["command"] == "verify"
    assert document["verification"]["all_items_accounted"] is False
    assert document["verification"]["total_action_items"] == items

    job = _on(settings, lambda db: helpers.run(db, settings))
    code, out, _ = _call(["--verify", "--json"], capsys)
    document = json.loads(out)
    assert code == document["exit_code"] == 0
    assert document["verification"]["last_real_run_id"] == str(job["id"])

    later = [_session(p, t, 2, [{"task": "Read"}])]  # arrived after the run
    _on(settings, lambda db: helpers.load(db, users=[], sessions=later))
    code, out, _ = _call(["--verify"], capsys)
    assert code == 1 and "All Action Items Accounted For: No" in out
    assert f"(JSONB): {model.item_count(sessions + later)}" in out


@pytest.mark.parametrize(
    ("argv", "command"),
    [([], "migrate"), (["--verify"], "verify"), (["--resume", str(uuid.UUID(int=5))], "resume"),
     (["--rollback", str(uuid.UUID(int=5))], "rollback")],
)  # fmt: skip
def test_json_error_document_when_the_database_url_is_missing(monkeypatch, capsys, argv, command):
    monkeypatch.setenv("DATABASE_URL", "")  # empty counts as not set, also over backend/.env
    code, out, err = _call([*argv, "--json"], capsys)
    assert code == 2
    document = json.loads(out)  # exactly one document on stdout, nothing else
    assert document == {"command": command, "exit_code": 2, "error": err.strip()}
    assert err.startswith("DATABASE_URL not found in environment\n")


def test_json_error_document_for_a_job_that_does_not_exist(cli_env, settings, capsys):
    missing = uuid.UUID(int=5)
    code, out, err = _call(["--rollback", str(missing), "--json"], capsys)
    assert code == 2 and err.strip() == f"no job with id {missing}"
    assert json.loads(out) == {"command": "rollback", "exit_code": 2, "error": err.strip()}
    assert _on(settings, helpers.job_count) == 0


def test_json_error_document_while_another_job_is_active(cli_env, settings, capsys):
    active, _ = _on(settings, lambda db: helpers.start_job(db, settings, dry_run=True,
                                                           batch_size=10))  # fmt: skip
    code, out, err = _call(["--dry-run", "--json"], capsys)
    assert code == 3
    document = json.loads(out)
    assert document["exit_code"] == 3 and document["command"] == "migrate"
    assert document["error"] == err.strip()
    assert f"another migration or rollback job is active: {active}" in err
    assert _on(settings, helpers.job_count) == 1


def test_a_schema_at_another_revision_is_refused_before_any_job(cli_env, settings, capsys):
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()

    async def set_revision(db):
        async with db.begin() as conn:
            await conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0000_older'"))

    _on(settings, set_revision)
    code, out, err = _call(["--dry-run"], capsys)
    assert code == 2 and out == ""
    assert err == (
        f"the database schema is at revision 0000_older, this code expects {head}\n"
        "run: alembic upgrade head\n"
    )
    code, out, err = _call(["--json"], capsys)
    assert code == 2
    assert json.loads(out) == {"command": "migrate", "exit_code": 2, "error": err.strip()}
    assert _on(settings, helpers.job_count) == 0


def test_a_bad_option_is_refused_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "")
    with pytest.raises(SystemExit) as exit_:
        migrate.main(["--batch-size", "0", "--json"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert "--batch-size: must be a whole number from 1 to 10000" in err


def test_options_reach_the_job_and_limits_change_a_stopped_job(cli_env, settings, capsys):
    p, t = uuid.uuid4(), uuid.uuid4()
    users = [(p, "patient"), (t, "therapist")]
    sessions = [_session(p, t, day, [{"task": f"Walk {day}"}]) for day in range(5)]
    _on(settings, lambda db: helpers.load(db, users=users, sessions=sessions))

    argv = ["--dry-run", "--fixed-batches", "--max-replay-lag", "9", "--max-archive-backlog", "0"]
    code, out, _ = _call([*argv, "--json"], capsys)
    job = json.loads(out)["job"]
    assert code == 0 and job["adaptive"] is False
    assert (
        job["limits"]["max_replay_lag_seconds"] == 9
        and job["limits"]["max_archive_backlog"] is None
    )
    code, out, _ = _call(["--dry-run", "--json"], capsys)
    assert json.loads(out)["job"]["adaptive"] is True

    # A stopped job's limits change, audited; a finished one's are refused.
    async def stop_one(db):
        job_id, _ = await helpers.start_job(db, settings, dry_run=True, batch_size=10)
        async with db.begin() as conn:
            await conn.execute(
                text("UPDATE migration_jobs SET status = 'cancelled' WHERE id = :j"), {"j": job_id}
            )
        return job_id

    stopped = _on(settings, stop_one)
    code, out, _ = _call(["--limits", str(stopped)[:8], "--max-batch-slowdown", "2.5"], capsys)
    assert out == (
        f"Limits of job {stopped} changed: --max-batch-slowdown 2.5 (was 4); "
        "it applies them when it is resumed.\n"
    )
    assert code == 0
    audit = _on(
        settings,
        lambda db: _audit_of(db, stopped),
    )
    assert [(a.action, a.actor) for a in audit][-1] == ("limits", "cli")
    code, _, err = _call(["--limits", job["id"], "--max-lock-wait", "1"], capsys)
    assert code == 2 and "succeeded" in err


async def _audit_of(db, job_id):
    async with db.connect() as conn:
        return (
            await conn.execute(
                text("SELECT action, actor FROM migration_audit WHERE job_id = :j ORDER BY id"),
                {"j": job_id},
            )
        ).all()


def test_a_limit_the_job_row_lacks_shows_as_the_settings_give_it(
    cli_env, settings, capsys, monkeypatch
):
    # A job stored before a limit existed (or by hand) names only some limits; the runner
    # applies the settings' for the rest, and --status and --json say so, as the API does.
    job_id, _ = _on(settings, lambda db: helpers.start_job(
        db, settings, dry_run=True, batch_size=10, limits={"max_lock_wait_seconds": 0.5}
    ))  # fmt: skip
    monkeypatch.setenv("THROTTLE_SHARE_ABOVE_SESSIONS", "7")
    code, out, _ = _call(["--status", str(job_id), "--json"], capsys)
    shown = json.loads(out)["job"]["limits"]
    assert code == 0 and shown["max_lock_wait_seconds"] == 0.5
    assert shown["share_above_sessions"] == 7
    code, out, _ = _call(["--status", str(job_id)], capsys)
    assert code == 0
    assert "--max-lock-wait 0.5, --max-batch-slowdown 4, --share-above-sessions 7" in out
