"""The command lines' pure parts: the guide's text, progress pacing, pg_dump choice, URLs."""

import dataclasses
import io
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.cli import backup, common, limits, migrate, output
from app.cli.common import CliError, describe_database, where
from app.config import Settings
from app.jobs.throttle import Limits, Trip
from app.routers.migrations import LimitParams

SESSION = "11111111-1111-1111-1111-111111111111"
PATIENT = "22222222-2222-2222-2222-222222222222"


def _row(item_index, outcome, *, count=2, description=None, category=None, reason=None):
    return {
        "session_id": SESSION,
        "patient_id": PATIENT,
        "session_date": "2024-11-15T15:30:00+01:00",
        "item_count": count,
        "item_index": item_index,
        "reason": reason,
        "description": description,
        "category": category,
        "outcome": outcome,
    }


def test_verbose_block_follows_the_guide():
    report = [
        _row(
            0, "created", description="Practice deep breathing twice daily", category="behavioral"
        ),
        _row(1, "invalid", reason="missing task"),
    ]
    assert output.session_lines(report, dry_run=True) == [
        "",
        f"  Processing Session {SESSION}",
        "  Date: 2024-11-15 14:30:00",
        f"  Patient ID: {PATIENT}",
        "  Action Items Found: 2",
        "",
        "  Action Item 1/2:",
        "    [DRY RUN] Would create goal: [behavioral] Practice deep breathing twice daily",
        "",
        "  Action Item 2/2:",
        "    [DRY RUN] Would skip invalid item: missing task",
    ]


def test_real_run_items_say_what_happened():
    report = [
        _row(0, "created", description="Walk", category=None),
        _row(1, "duplicate", description="Journal", category="cognitive"),
    ]
    lines = output.session_lines(report, dry_run=False)
    assert lines[-4] == "    Created goal: [uncategorized] Walk"
    assert lines[-1].startswith("    Skipped duplicate: [cognitive] Journal")


def test_sessions_without_items_non_arrays_and_failures():
    empty = _row(None, None, count=0)
    not_array = _row(None, "invalid", count=1, reason="action_items is not an array")
    failed = {"session_id": SESSION, "error": "RaiseError (SQLSTATE P0001)"}
    lines = output.session_lines([empty], dry_run=True)
    assert lines[-1] == "  Action Items Found: 0"
    lines = output.session_lines([not_array], dry_run=False)
    assert lines[-2:] == [
        "  Action Item 1/1:",
        "    Skipped invalid item: action_items is not an array",
    ]
    lines = output.session_lines([failed], dry_run=False)
    assert lines[-1] == "  ❌ Session failed and was rolled back: RaiseError (SQLSTATE P0001)"


def test_descriptions_are_truncated_and_cannot_drive_the_terminal():
    assert output.truncate("x" * 60) == "x" * 60
    assert output.truncate("x" * 61) == "x" * 57 + "..."
    assert output.truncate("a\x1b[2Jb\nc") == "a [2Jb c"


def test_summary_block_has_the_guides_labels():
    job = dict.fromkeys([name for _, name in output.MIGRATION_SUMMARY_LABELS], 3)
    assert output.migration_summary(job, 2.871) == [
        "=" * 70,
        "GOAL MIGRATION SUMMARY",
        "=" * 70,
        "Execution Time: 2.87 seconds",
        "Sessions Processed: 3",
        "Sessions with Action Items: 3",
        "Goals Created: 3",
        "Goals Skipped (Duplicate): 3",
        "Goals Skipped (Invalid): 3",
        "Errors Encountered: 3",
        "=" * 70,
    ]


def test_progress_shows_at_most_once_a_second_plus_the_last():
    times = iter([0.0, 0.3, 0.6, 1.2, 1.5, 1.6])
    stream = io.StringIO()
    progress = output.Progress(
        output.Console(stream), total=50, done=0, unit="sessions", clock=lambda: next(times)
    )
    for _ in range(5):
        progress.add(10)
    progress.last()
    assert stream.getvalue().splitlines() == [
        "⏳ Progress: 10/50 sessions processed...",
        "⏳ Progress: 40/50 sessions processed...",
        "⏳ Progress: 50/50 sessions processed...",
    ]


def test_a_closed_reader_silences_the_console_and_asks_to_stop():
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError

    asked = []
    console = output.Console(Closed(), on_broken=lambda: asked.append(True))
    console.lines(["a"])
    console.lines(["b"])
    assert console.broken and asked == [True]


@pytest.mark.parametrize(
    "status, errors, interrupted, code",
    [
        ("succeeded", 0, False, 0),
        ("succeeded", 2, False, 1),
        ("failed", 0, False, 1),
        ("cancelled", 0, False, 1),
        ("interrupted", 0, True, 130),
        (None, 0, True, 130),
        (None, 0, False, 1),
    ],
)
def test_exit_codes(status, errors, interrupted, code):
    assert migrate.exit_code({"errors": errors}, status, interrupted=interrupted) == code


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-size", "0"],
        ["--batch-size", "10001"],
        ["--force"],
        ["--resume", "not-a-uuid"],
        ["--resume", "11111111-1111-1111-1111-111111111111", "--dry-run"],
        ["--verify", "--rollback", "11111111-1111-1111-1111-111111111111"],
        ["--max-replay-lag", "-1"],
        ["--max-archive-backlog", "2.5"],
        ["--limits", "1111"],  # no limit to change
        ["--status", "1111", "--max-lock-wait", "1"],
        ["--resume", "1111", "--fixed-batches"],
        ["--limits", "1111", "--max-lock-wait", "1", "--fixed-batches"],  # a job's sizing stays
        ["--resume", "1111", "--max-batch-slowdown", "3"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        migrate.parse_args(argv)
    assert exit_.value.code == 2


def test_default_batch_size_is_1000():
    assert migrate.parse_args([]).batch_size == 1000


def test_jobs_are_adaptive_unless_fixed_and_limit_options_name_the_limits():
    args = migrate.parse_args([])
    assert not args.fixed_batches and args.limit_changes == {}
    args = migrate.parse_args(
        ["--fixed-batches", "--max-replay-lag", "10", "--max-archive-backlog", "0",
         "--no-yield-to-autovacuum", "--max-lock-wait", "0.5", "--share-above-sessions", "8"]
    )  # fmt: skip
    assert args.fixed_batches
    assert args.limit_changes == {
        "max_replay_lag_seconds": 10.0,
        "max_archive_backlog": None,  # 0: off
        "yield_to_autovacuum": False,
        "max_lock_wait_seconds": 0.5,
        "share_above_sessions": 8,
    }
    assert migrate.parse_args(["--limits", "ab12", "--max-batch-slowdown", "3"]).limits == "ab12"
    again = migrate.parse_args(["--limits", "ab12", "--yield-to-autovacuum"])
    assert again.limit_changes == {"yield_to_autovacuum": True}


def test_every_limit_is_an_option_here_and_a_parameter_of_the_api():
    names = set(Limits.names())
    assert set(limits.OPTIONS) | set(limits.SWITCHES) == names
    assert {field.name for field in dataclasses.fields(LimitParams)} == names


def test_limits_are_named_as_their_options_spell_them():
    stored = Limits(max_archive_backlog=None, yield_to_autovacuum=False).as_dict()
    assert limits.shown(stored) == (
        "--max-replay-lag 5, --max-replay-lag-bytes 268435456, --max-archive-backlog off, "
        "--no-yield-to-autovacuum, --max-lock-wait 0.2, --max-batch-slowdown 4, "
        "--share-above-sessions 2"
    )
    changes = {"max_lock_wait_seconds": 0.05, "yield_to_autovacuum": True,
               "max_batch_slowdown": 4.0, "max_replay_lag_seconds": 12.5}  # fmt: skip
    assert limits.changed(Limits(yield_to_autovacuum=False), changes) == (
        "--max-replay-lag 12.5 (was 5), --yield-to-autovacuum (was --no-yield-to-autovacuum), "
        "--max-lock-wait 0.05 (was 0.2), --max-batch-slowdown 4 (unchanged)"
    )


def _shown(trip: Trip, since: str = "2026-12-05T14:02:31+00:00") -> dict:
    """A throttle as the runner puts it in the job row and hands it to on_throttle."""
    return {**trip.as_dict(), "message": trip.message, "sharing": trip.sharing, "since": since}


THROTTLE = _shown(Trip("replay_lag_seconds", 12.4, 5.0, "s", "replica-b"))


@pytest.fixture
def local_utc():
    """Local time is UTC while the test runs: a wait's "since" is shown in local time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "UTC")
        time.tzset()
        yield
    time.tzset()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_without_a_terminal_is_one_line_per_change(local_utc):
    assert THROTTLE["message"] == "standby replay lag (replica-b) 12.4 s, limit 5 s"
    stream, clock = io.StringIO(), Clock()
    progress = output.Progress(
        output.Console(stream), total=50, done=10, unit="sessions", clock=clock
    )
    progress.wait(THROTTLE)
    clock.now = 2.0  # a new reading of the same signal: no new line
    progress.wait(_shown(Trip("replay_lag_seconds", 13.0, 5.0, "s", "replica-b")))
    clock.now = 12.0
    progress.wait(None)
    clinicians = _shown(Trip("clinicians_active", 24, 2, "sessions"), "2026-12-05T14:10:00+00:00")
    progress.wait(clinicians)
    clock.now = 42.5
    progress.wait(None)
    assert stream.getvalue().splitlines() == [
        "Waiting: standby replay lag (replica-b) 12.4 s, limit 5 s, since 14:02:31",
        "Going on after 12.0 s.",
        "Sharing the database: 24 other sessions at work, limit 2, since 14:10:00",
        "Back to full speed after sharing for 30.5 s.",
    ]


def _bar(columns: int) -> tuple[io.StringIO, output.Progress]:
    stream = io.StringIO()
    console = output.Console(stream, bar=True, columns=lambda: columns)
    return stream, output.Progress(console, total=200_000, done=41_000, unit="sessions")


def _last_redraw(stream: io.StringIO) -> str:
    return stream.getvalue().rsplit("\r\x1b[K", 1)[1]


def test_on_a_terminal_the_wait_is_on_the_bars_line_within_one_row(local_utc):
    head = "⏳ Progress: 41000/200000 sessions processed..."
    note = " 20% · waiting: standby replay lag (replica-b) 12.4 s, limit 5 s, since 14:02:31"
    stream, progress = _bar(200)
    progress.wait(THROTTLE)
    assert _last_redraw(stream) == f"{head} [{'█' * 6}{'░' * 24}]{note}"
    progress.wait(None)  # going on: the note is gone at the next redraw
    assert _last_redraw(stream) == f"{head} [{'█' * 6}{'░' * 24}] 20%"

    # Narrower: the graphic goes first, then the head is shortened, then "since", then the
    # end is cut; never past the last column but one, which would wrap on some terminals.
    stream, progress = _bar(140)
    progress.wait(THROTTLE)
    assert _last_redraw(stream) == head + note
    compact = (
        "⏳ 41000/200000 sessions 20% · waiting: standby replay lag (replica-b) 12.4 s, limit 5 s"
    )
    stream, progress = _bar(110)
    progress.wait(THROTTLE)
    assert _last_redraw(stream) == compact + ", since 14:02:31"
    stream, progress = _bar(100)
    progress.wait(THROTTLE)
    assert _last_redraw(stream) == compact
    stream, progress = _bar(80)
    progress.wait(THROTTLE)
    shown = _last_redraw(stream)
    assert shown == compact[:77] + "…" and output._cells(shown) == 79
    assert output._cells("⏳") == 2


@pytest.mark.parametrize(
    "url, conninfo, env",
    [
        (
            "postgresql+asyncpg://app:s3cr%40t@db.example.org:6543/goals",
            "host=db.example.org port=6543 user=app dbname=goals",
            {"PGPASSWORD": "s3cr@t"},
        ),
        (
            "postgresql+asyncpg://postgres:@/gm?host=/tmp/pg sock",
            "host='/tmp/pg sock' user=postgres dbname=gm",
            {},
        ),
        (
            "postgresql+asyncpg://u@h/d?ssl=require&application_name=it's",
            "host=h user=u dbname=d application_name='it\\'s' sslmode=require",
            {},
        ),
    ],
)
def test_database_url_as_libpq_connection(url, conninfo, env):
    assert backup.libpq_connection(url) == (conninfo, env)


def test_where_names_host_and_port():
    assert where("postgresql+asyncpg://u@db:6000/d") == "host db, port 6000"
    assert where("postgresql+asyncpg://u@/d?host=/run/pg") == "host /run/pg, port 5432"


def _tool(major):
    return backup.Tool(path=Path(f"/pg{major}/pg_dump"), major=major, version=f"{major}.1")


def test_pg_dump_choice_prefers_the_servers_version_then_the_oldest_newer():
    tools = [_tool(15), _tool(18), _tool(16)]
    assert backup.choose(tools, 16).major == 16
    assert backup.choose(tools, 17).major == 18
    assert backup.choose(tools, 19) is None


def test_no_fitting_pg_dump_says_why(monkeypatch):
    monkeypatch.setattr(backup, "find_tools", lambda name: [_tool(15)])
    with pytest.raises(CliError) as err:
        backup.pick("pg_dump", 18)
    assert "no pg_dump fits the PostgreSQL 18 server: found 15.1 (/pg15/pg_dump)" in str(err.value)
    monkeypatch.setattr(backup, "find_tools", lambda name: [])
    with pytest.raises(CliError, match="pg_dump not found"):
        backup.pick("pg_dump", 18)


def test_default_backup_goes_to_the_ignored_backups_directory():
    path = backup.default_output("goals")
    assert path.parent == Path(__file__).resolve().parents[2] / "backups"
    assert path.name.startswith("goals-") and path.suffix == ".dump"


@pytest.mark.parametrize(
    "url, described",
    [
        (
            "postgresql+asyncpg://app:s3cret@db.example.org:6543/goals",
            "goals on host db.example.org, port 6543, user app",
        ),
        (
            "postgresql+asyncpg://postgres:@/gm?host=/run/pg",
            "gm on the unix socket in /run/pg, port 5432, user postgres",
        ),
    ],
)
def test_the_database_is_named_without_its_password(url, described):
    assert describe_database(url) == described


def test_a_terminal_gone_after_a_hang_up_silences_the_console():
    class HungUp(io.StringIO):
        def write(self, text):
            raise OSError(5, "Input/output error")  # EIO: the pty's other end is closed

    asked = []
    console = output.Console(HungUp(), on_broken=lambda: asked.append(True))
    console.progress(1, 2, "sessions")
    console.lines(["summary"])
    assert console.broken and asked == [True]


def _job(**changes):
    job = {
        "id": "7d7b039c-c1d5-4bae-bf68-e112f0a4c72f",
        "kind": "migrate",
        "dry_run": False,
        "force": False,
        "status": "succeeded",
        "rolled_back_by": None,
        "target_job_id": None,
        "requested_by": "ops-1",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "started_at": None,
        "finished_at": None,
        "heartbeat_at": None,
        "sessions_total": 42,
        "error": None,
        **dict.fromkeys([name for _, name in output.MIGRATION_SUMMARY_LABELS], 0),
    }
    job.update(sessions_processed=42, goals_created=7, **changes)
    return job


def test_job_listing_shows_rolled_back_migrations_as_rolled_back():
    rolled = _job(rolled_back_by="11111111-2222-3333-4444-555555555555")
    assert output.job_table([rolled, _job(dry_run=True)]) == [
        "JOB ID                                KIND     MODE     STATUS       PROGRESS  "
        "CREATED (UTC)        REQUESTED BY",
        "7d7b039c-c1d5-4bae-bf68-e112f0a4c72f  migrate  real     rolled back  42/42     "
        "2026-01-02 03:04:05  ops-1",
        "7d7b039c-c1d5-4bae-bf68-e112f0a4c72f  migrate  dry run  succeeded    42/42     "
        "2026-01-02 03:04:05  ops-1",
    ]
    assert output.job_table([]) == ["No migration or rollback jobs yet."]


def test_job_details_show_the_sizing_the_limits_and_the_wait(local_utc):
    waiting = _shown(Trip("archive_backlog", 40, 32, "segments"))
    job = _job(status="running", adaptive=True, current_batch_size=640,
               limits=Limits(max_lock_wait_seconds=None).as_dict(), throttle=waiting)  # fmt: skip
    lines = output.job_details(job)
    at = lines.index("Batch Sizing: adaptive, last batch 640")
    assert lines[at + 1 : at + 3] == [
        "Limits: --max-replay-lag 5, --max-replay-lag-bytes 268435456, "
        "--max-archive-backlog 32, --yield-to-autovacuum, --max-lock-wait off, "
        "--max-batch-slowdown 4, --share-above-sessions 2",
        # As the throttle says it: "WAL" stays upper-case.
        "Waiting: WAL archive backlog 40 segments, limit 32 segments, since 14:02:31",
    ]
    # A limit the row lacks is the default the runner applies (the settings').
    partial = _job(limits={"max_lock_wait_seconds": 0.5})
    lines = output.job_details(partial, default_limits=Limits(share_above_sessions=9))
    assert any(x.startswith("Limits: ") and x.endswith("--share-above-sessions 9") for x in lines)
    fixed = output.job_details(_job(adaptive=False, current_batch_size=None, limits=None))
    assert "Batch Sizing: fixed" in fixed and not any(x.startswith("Limits:") for x in fixed)


def test_job_details_say_what_to_do_next():
    lines = output.job_details(_job(status="interrupted", error="stopped\x1b[2J"))
    assert lines[:3] == [
        "Job ID: 7d7b039c-c1d5-4bae-bf68-e112f0a4c72f",
        "Kind: migrate, real run",
        "Status: interrupted",
    ]
    assert "Error: stopped [2J" in lines and "Progress: 42/42 sessions processed" in lines
    assert "GOAL MIGRATION SUMMARY" in lines and "Goals Created: 7" in lines
    assert lines[-1] == (
        "Resume with: python scripts/migrate_goals_from_jsonb.py "
        "--resume 7d7b039c-c1d5-4bae-bf68-e112f0a4c72f"
    )


@pytest.mark.parametrize(
    "argv", [["--list", "--dry-run"], ["--status", "abc", "--yes"], ["--cancel", "zz"]]
)
def test_operator_verbs_take_no_run_options(argv):
    with pytest.raises(SystemExit) as exit_:
        migrate.parse_args(argv)
    assert exit_.value.code == 2


def test_without_database_url_next_to_make_run_the_error_says_what_to_source(
    tmp_path, monkeypatch, capsys
):
    empty = tmp_path / "backend.env"
    empty.write_text("")
    monkeypatch.setitem(Settings.model_config, "env_file", empty)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    made_by_make_run = tmp_path / "env"
    monkeypatch.setattr(common, "MAKE_RUN_ENV", made_by_make_run)
    assert migrate.main(["--dry-run"]) == 2
    assert "make run" not in capsys.readouterr().err

    made_by_make_run.write_text("export TOKEN=x\n")
    assert migrate.main(["--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "DATABASE_URL not found in environment",
        f"make run is serving a database: source {made_by_make_run} (or set DATABASE_URL in the "
        "environment or in backend/.env)",
    ]
