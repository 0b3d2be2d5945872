"""The command line's operator side, in-process through main(argv) on a real database.

Job ids by unique prefix, --list/--status/--cancel, and the question before anything real is
written: asked on a terminal only, skipped with --yes, and naming the database.
"""

import asyncio
import io
import json
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import demo
from app.cli import migrate
from app.config import load_settings
from app.db import create_engine
from app.jobs import runner
from tests import helpers


class Terminal(io.StringIO):
    """stdin as a terminal where the operator types `answer` (or must not be asked at all)."""

    def __init__(self, answer: str | None):
        super().__init__(answer or "")
        self.asked = 0
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self, *args) -> str:
        self.asked += 1
        assert self.answer is not None, "the command asked, but should not have"
        return super().readline(*args)


class Pipe(io.StringIO):
    """stdin that is not a terminal (a script, cron, CI): nobody to ask."""

    def readline(self, *args) -> str:
        raise AssertionError("read stdin although it is not a terminal")


@pytest.fixture
def cli(database_url, monkeypatch, capsys):
    """Run the migration script's main(argv) here; return (exit code, stdout, stderr)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", stdin if stdin is not None else Pipe())
        code = migrate.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def on_db(database_url, work):
    """Run `work(db, settings)` on this test's database in a loop of its own."""

    async def go():
        settings = load_settings(
            database_url=database_url, jwt_secret=None, heartbeat_seconds=0.1, _env_file=None
        )
        db = create_engine(settings)
        try:
            return await work(db, settings)
        finally:
            await db.dispose()

    return asyncio.run(go())


def sql(database_url, statement: str, **params):
    async def work(db, settings):
        async with db.begin() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None

    return on_db(database_url, work)


def jobs(database_url) -> list[tuple]:
    return sql(database_url, "SELECT id, kind, status FROM migration_jobs ORDER BY created_at")


def add_job(database_url, job_id: str, status: str = "succeeded") -> None:
    """A finished dry-run job row with a chosen id, to make prefixes collide on purpose."""
    sql(
        database_url,
        "INSERT INTO migration_jobs (id, kind, dry_run, status, batch_size, requested_by) "
        "VALUES (:id, 'migrate', true, :status, 10, 'test')",
        id=job_id,
        status=status,
    )


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_list_and_status_show_a_rolled_back_migration_as_rolled_back(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=120))

    async def migrate_then_roll_back(db, settings):
        migration = await helpers.run(db, settings)
        undo = await helpers.run(db, settings, kind="rollback", targets=[migration["id"]])
        return migration["id"], undo["id"]

    migration, undo = on_db(database_url, migrate_then_roll_back)

    code, out, err = cli("--list")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["JOB", "ID", "KIND", "MODE"]
    assert [row.split()[0] for row in rows] == [str(undo), str(migration)]  # newest first
    assert rows[1].split()[1:5] == ["migrate", "real", "rolled", "back"]
    assert rows[0].split()[1:4] == ["rollback", "real", "succeeded"]

    code, out, _ = cli("--status", str(migration)[:8])
    assert code == 0
    assert f"Status: succeeded, rolled back by job {undo}" in out.splitlines()
    assert f"Rolled back by job {undo}." in out.splitlines()
    assert "Undo with" not in out

    code, out, _ = cli("--list", "--json")
    listed = json.loads(out)
    assert code == 0 and [job["id"] for job in listed["jobs"]] == [str(undo), str(migration)]
    assert listed["jobs"][1]["rolled_back_by"] == str(undo)


def test_cancel_by_prefix(cli, database_url):
    async def queue(db, settings):
        job_id, _ = await runner.create_job(
            db, settings, kind="migrate", dry_run=True, batch_size=10, requested_by="someone"
        )
        return job_id

    queued = on_db(database_url, queue)
    code, out, err = cli("--cancel", str(queued)[:6])
    assert code == 0, err
    assert out.splitlines() == [f"Job {queued} cancelled."]
    assert jobs(database_url) == [(queued, "migrate", "cancelled")]
    audit = sql(database_url, "SELECT actor, action FROM migration_audit WHERE job_id=:j", j=queued)
    assert ("cli", "cancel") in audit

    code, _, err = cli("--cancel", str(queued))
    assert code == 2
    assert one_line(err) == f"cannot cancel job {queued}: it is cancelled, not queued or running"

    code, out, err = cli("--status", str(queued), "--json")
    assert code == 0 and json.loads(out)["job"]["status"] == "cancelled"


@pytest.mark.parametrize("verb", ["--status", "--cancel", "--resume", "--rollback"])
def test_an_ambiguous_or_unknown_prefix_is_one_line_and_exit_2(cli, database_url, verb):
    add_job(database_url, "abcd0000-0000-4000-8000-000000000001", status="interrupted")
    add_job(database_url, "abcd0000-0000-4000-8000-000000000002", status="interrupted")

    code, _, err = cli(verb, "ABCD0")
    assert code == 2
    message = one_line(err)
    assert message.startswith("job id 'abcd0' is ambiguous")
    assert "abcd0000-0000-4000-8000-000000000002" in message

    code, _, err = cli(verb, "ffff")
    assert code == 2 and one_line(err) == "no job id starts with 'ffff'"

    code, _, err = cli(verb, str(uuid.UUID(int=5)))
    assert code == 2 and one_line(err) == f"no job with id {uuid.UUID(int=5)}"
    assert len(jobs(database_url)) == 2  # nothing was started


def test_resume_and_rollback_take_a_unique_prefix(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=120))
    code, out, err = cli("--yes")
    assert code == 0, err
    migration = uuid.UUID(out.split("Job ID: ")[1].split()[0])
    # Without dashes, and as many characters as make it unique.
    code, out, err = cli("--rollback", migration.hex[:10], "--dry-run")
    assert code == 0, err
    assert f"Target Job: {migration}" in out.splitlines()

    sql(database_url, "UPDATE migration_jobs SET status = 'interrupted' WHERE id = :j", j=migration)
    code, out, err = cli("--resume", str(migration)[:13], "--yes")
    assert code == 0, err
    assert f"Resuming job {migration}" in out


def test_a_real_run_asks_on_a_terminal_and_no_changes_nothing(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=60))
    terminal = Terminal("n\n")
    code, out, err = cli(stdin=terminal)
    assert code == 1 and terminal.asked == 1
    url = make_url(database_url)
    assert err == (
        f"Create treatment_goals for real in database {url.database} on the unix socket in "
        f"{url.query['host']}, port 5432, user postgres? (preview: --dry-run) [y/N] "
        "Not confirmed; nothing was changed.\n"
    )
    assert out == "" and jobs(database_url) == []

    code, out, err = cli(stdin=Terminal("yes\n"))
    assert code == 0, err
    assert "✅ Migration completed successfully!" in out
    assert [kind for _, kind, _ in jobs(database_url)] == ["migrate"]


def test_no_question_for_dry_runs_with_yes_or_without_a_terminal(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=60))
    assert cli("--dry-run", stdin=Terminal(None))[0] == 0
    assert cli("--yes", stdin=Terminal(None))[0] == 0
    assert cli(stdin=Pipe())[0] == 0  # as the guide's command does: it just runs
    statuses = [status for _, _, status in jobs(database_url)]
    assert statuses == ["succeeded"] * 3


def test_a_real_rollback_asks_and_enter_means_no(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=60))
    code, out, _ = cli("--yes")
    migration = uuid.UUID(out.split("Job ID: ")[1].split()[0])
    goals = len(on_db(database_url, lambda db, settings: helpers.migrated_goals(db)))

    code, _, err = cli("--rollback", str(migration), stdin=Terminal("\n"))
    assert code == 1
    assert f"Delete the goals job {migration} created, keeping those changed since" in err
    assert len(on_db(database_url, lambda db, settings: helpers.migrated_goals(db))) == goals

    assert cli("--rollback", str(migration), "--dry-run", stdin=Terminal(None))[0] == 0
    code, _, err = cli("--rollback", str(migration), stdin=Terminal("y\n"))
    assert code == 0, err
    assert on_db(database_url, lambda db, settings: helpers.migrated_goals(db)) == []


def test_json_keeps_stdout_a_document_when_not_confirmed(cli, database_url):
    code, out, err = cli("--json", stdin=Terminal("n\n"))
    assert code == 1
    assert json.loads(out) == {
        "command": "migrate",
        "exit_code": 1,
        "error": "Not confirmed; nothing was changed.",
    }
    assert "[y/N]" in err


def test_a_rollback_that_would_strand_a_later_run_says_so_and_offers_both_ways(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=80))
    first = uuid.UUID(cli("--yes")[1].split("Job ID: ")[1].split()[0])
    later = uuid.UUID(cli("--yes")[1].split("Job ID: ")[1].split()[0])
    goals = on_db(database_url, lambda db, settings: helpers.migrated_goals(db))

    code, out, err = cli("--rollback", str(first), "--yes")
    assert code == 2 and out == ""
    assert f"cannot roll back job {first}: later real runs ({later})" in err
    assert f"--rollback {first},{later}" in err and "--keep-later-runs" in err
    assert on_db(database_url, lambda db, settings: helpers.migrated_goals(db)) == goals
    # A preview deletes nothing, so it is not refused.
    assert cli("--rollback", str(first), "--dry-run")[0] == 0

    code, out, err = cli("--rollback", f"{first},{str(later)[:8]}", "--yes")
    assert code == 0, err
    assert f"Target Jobs: {first}, {later}" in out.splitlines()
    assert on_db(database_url, lambda db, settings: helpers.migrated_goals(db)) == []

    code, out, _ = cli("--verify")
    assert code == 1
    assert f"Goals Missing (a real run now would create): {len(goals)}" in out.splitlines()


def test_keep_later_runs_rolls_back_alone(cli, database_url):
    asyncio.run(demo.write(database_url, sessions=80))
    first = uuid.UUID(cli("--yes")[1].split("Job ID: ")[1].split()[0])
    cli("--yes")
    code, _, err = cli("--rollback", str(first), "--keep-later-runs", "--yes")
    assert code == 0, err
    assert on_db(database_url, lambda db, settings: helpers.migrated_goals(db)) == []
    with pytest.raises(SystemExit) as refused:
        cli("--keep-later-runs")
    assert refused.value.code == 2  # only with --rollback
