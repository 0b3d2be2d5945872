"""The guide's scripts as operators run them: `python scripts/...` from backend/, a real process.

Each test runs the scripts against its own database and compares what they print with what
the engine recorded in the job table.
"""

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import signal
import stat
import struct
import sys
import termios
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import demo
from app.cli import backup, output
from app.jobs import queries, runner
from tests import helpers, model
from tests.conftest import BACKEND, drop_database, new_database
from tests.expected import from_rows, model_outcome, read_rows
from tests.helpers import ts

MIGRATE = "scripts/migrate_goals_from_jsonb.py"
BACKUP = "scripts/backup_database.py"
RULE = "=" * 70
SUMMARY = [
    RULE,
    "GOAL MIGRATION SUMMARY",
    RULE,
    r"Execution Time: \d+\.\d\d seconds",
    r"Sessions Processed: (?P<sessions_processed>\d+)",
    r"Sessions with Action Items: (?P<sessions_with_action_items>\d+)",
    r"Goals Created: (?P<goals_created>\d+)",
    r"Goals Skipped \(Duplicate\): (?P<goals_skipped_duplicate>\d+)",
    r"Goals Skipped \(Invalid\): (?P<goals_skipped_invalid>\d+)",
    r"Errors Encountered: (?P<errors>\d+)",
    RULE,
]


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def job_id(self) -> uuid.UUID:
        return uuid.UUID(re.search(r"^Job ID: (\S+)$", self.out, re.M).group(1))

    def summary(self) -> dict[str, int]:
        """The summary block's numbers, checking its lines against the guide's, one by one."""
        start = self.lines.index("GOAL MIGRATION SUMMARY") - 1
        block = self.lines[start : start + len(SUMMARY)]
        numbers: dict[str, int] = {}
        for pattern, line in zip(SUMMARY, block, strict=True):
            match = re.fullmatch(pattern, line)
            assert match, f"{line!r} does not match the guide's {pattern!r}"
            numbers.update({k: int(v) for k, v in match.groupdict().items()})
        return numbers


def _env(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")}
    # An empty DATABASE_URL counts as none and wins over backend/.env, which dev machines have.
    env.update(DATABASE_URL=database_url or "", PYTHONIOENCODING="utf-8", **extra)
    return env


async def start(database_url: str | None, *args: str, script: str = MIGRATE, **extra: str):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        script,
        *args,
        cwd=BACKEND,
        env=_env(database_url, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def cli(database_url: str | None, *args: str, script: str = MIGRATE, **extra: str) -> Run:
    """Run a script to its end, as `cd backend && python scripts/... args`."""
    process = await start(database_url, *args, script=script, **extra)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return Run(process.returncode, out.decode(), err.decode())


async def latest_job(db) -> dict:
    async with db.connect() as conn:
        job_id = (
            await conn.execute(text("SELECT id FROM migration_jobs ORDER BY created_at DESC"))
        ).first()[0]
        return await queries.get_job(conn, job_id=job_id)


def _one_problem(run: Run) -> str:
    """The troubleshooting cases: an operator's message of one or two lines, no traceback."""
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert 1 <= len(lines) <= 2, run.err
    return run.err.strip()


async def test_dry_run_then_real_run_print_the_engines_numbers(database_url, db):
    await demo.write(database_url, sessions=600)
    rows = await read_rows(db)
    expected = from_rows(rows)
    candidates = len(model.candidates(rows.sessions))

    dry = await cli(database_url, "--dry-run", "--batch-size", "50")
    assert dry.code == 0, dry.err
    socket_dir = make_url(database_url).query["host"]  # the banner names the database it uses
    assert dry.lines[:10] == [
        RULE,
        "STARTING GOAL MIGRATION FROM JSONB ACTION_ITEMS",
        RULE,
        "🔍 DRY RUN MODE - No database changes will be made",
        "Batch Size: 50",
        "Batch Sizing: adaptive, from the batch size toward 0.3 s per batch",
        "Verbose Mode: False",
        f"Database: {make_url(database_url).database} on the unix socket in {socket_dir}, "
        "port 5432, user postgres",
        "",
        f"Found {candidates} sessions with extracted_notes.action_items",
    ]
    progress = [line for line in dry.lines if line.startswith("⏳ Progress: ")]
    assert progress[-1] == f"⏳ Progress: {candidates}/{candidates} sessions processed..."
    assert "✅ Migration completed successfully!" in dry.lines
    job = await helpers.get(db, dry.job_id())
    assert job["dry_run"] and job["requested_by"] == "cli" and job["status"] == "succeeded"
    assert dry.summary() == helpers.stats(job) == expected.stats
    assert await helpers.migrated_goals(db) == []

    real = await cli(database_url)
    assert real.code == 0, real.err
    assert "Batch Size: 1000" in real.lines and "🔍" not in real.out
    job = await helpers.get(db, real.job_id())
    assert not job["dry_run"] and job["status"] == "succeeded"
    assert real.summary() == helpers.stats(job) == dry.summary()
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)

    verify = await cli(database_url, "--verify", "--json")
    assert verify.code == 0, verify.err
    numbers = json.loads(verify.out)["verification"]
    assert numbers["all_items_accounted"] and numbers["last_real_run_id"] == str(job["id"])
    assert numbers["goals_from_migrations"] == job["goals_created"]


async def test_verbose_shows_every_session_and_item(database_url, db):
    p, t = uuid.UUID(int=1 << 124), uuid.UUID(int=77)
    ids = [uuid.UUID(int=i) for i in range(1, 5)]
    walk = {"task": "Walk daily", "category": "behavioral", "details": "20 minutes"}
    notes = [
        {"action_items": [walk, {"task": "Journal"}]},
        {"action_items": [walk, {"task": "  "}, {"task": "x" * 100, "category": "cognitive"}]},
        {"action_items": {"task": "stored as an object"}},
        {"action_items": []},
    ]
    sessions = [
        {"id": i, "patient_id": p, "therapist_id": t, "session_date": ts(day), "notes": n}
        for day, (i, n) in enumerate(zip(ids, notes, strict=True))
    ]
    await helpers.load(db, users=[(p, "patient"), (t, "therapist")], sessions=sessions)

    run = await cli(database_url, "--dry-run", "--verbose")
    assert run.code == 0, run.err
    start = run.lines.index("Found 4 sessions with extracted_notes.action_items") + 1
    end = next(i for i, line in enumerate(run.lines) if line.startswith("⏳"))

    def head(n, day, count):
        return [
            "",
            f"  Processing Session {ids[n]}",
            f"  Date: 2024-01-0{day + 1} 09:00:00",
            f"  Patient ID: {p}",
            f"  Action Items Found: {count}",
        ]

    def item(position, line):
        return ["", f"  Action Item {position}:", f"    [DRY RUN] {line}"]

    assert run.lines[start:end] == [
        *head(0, 0, 2),
        *item("1/2", "Would create goal: [behavioral] Walk daily - 20 minutes"),
        *item("2/2", "Would create goal: [uncategorized] Journal"),
        *head(1, 1, 3),
        *item(
            "1/3",
            "Would skip duplicate: [behavioral] Walk daily - 20 minutes "
            "(this patient already has this goal)",
        ),
        *item("2/3", "Would skip invalid item: missing task"),
        *item("3/3", "Would create goal: [cognitive] " + "x" * 57 + "..."),
        *head(2, 2, 1),
        *item("1/1", "Would skip invalid item: action_items is not an array"),
        *head(3, 3, 0),
        "",
    ]
    assert "Verbose Mode: True" in run.lines
    assert "Walk" not in run.err and "Journal" not in run.err  # clinical text: stdout only

    real = await cli(database_url, "--verbose")
    assert "    Created goal: [behavioral] Walk daily - 20 minutes" in real.lines
    assert real.code == 0 and "Walk" not in real.err


async def test_json_summary_replaces_the_text(database_url, db):
    await demo.write(database_url, sessions=300)
    run = await cli(database_url, "--json", "--dry-run", "--verbose")
    assert run.code == 0, run.err
    document = json.loads(run.out)
    job = await latest_job(db)
    assert document["command"] == "migrate" and document["exit_code"] == 0
    assert document["job"]["id"] == str(job["id"]) and document["job"]["status"] == "succeeded"
    assert document["job"]["stats"] == helpers.stats(job)
    assert isinstance(document["execution_seconds"], float)


async def test_failed_sessions_are_reported_with_exit_1(database_url, db):
    await demo.write(database_url, sessions=300)
    async with db.connect() as conn:
        bad = (
            await conn.execute(
                text(
                    "SELECT id FROM therapy_sessions WHERE jsonb_typeof("
                    "extracted_notes -> 'action_items') = 'array' ORDER BY id LIMIT 2"
                )
            )
        ).scalars()
        bad = list(bad)
    await helpers.fail_goal_inserts_for(db, bad)

    run = await cli(database_url, "--batch-size", "100")
    assert run.code == 1
    job = await helpers.get(db, run.job_id())
    assert job["status"] == "succeeded" and job["errors"] == 2
    assert run.summary() == helpers.stats(job)
    assert any(
        line.startswith("⚠️  Migration completed, but 2 sessions failed") for line in run.lines
    )
    assert "✅" not in run.out
    assert "refusing goal" not in run.out + run.err  # the trigger's message carries the text


async def test_missing_database_url():
    run = await cli(None, JWT_SECRET="too-short-but-not-needed")
    assert run.code == 2
    message = _one_problem(run)
    assert message.startswith("DATABASE_URL not found in environment\n")
    assert ".env" in message


async def test_missing_table(server_url):
    url = await asyncio.to_thread(new_database, server_url)  # empty: Alembic never ran
    try:
        run = await cli(url, "--dry-run")
    finally:
        await asyncio.to_thread(drop_database, url)
    assert run.code == 2
    assert _one_problem(run) == (
        "relation 'treatment_goals' does not exist\nis DATABASE_URL the platform's database? "
        "On an empty one run: python -m app.schema.bootstrap && alembic upgrade head"
    )


@pytest.mark.parametrize(
    "url, host, port",
    [
        ("postgresql://postgres@127.0.0.1:9/goals", "host 127.0.0.1", "port 9"),
        ("postgresql://postgres@/goals?host={tmp}", "host {tmp}", "port 5432"),
    ],
)
async def test_unreachable_database(url, host, port, tmp_path):
    run = await cli(url.format(tmp=tmp_path))
    assert run.code == 2
    first = _one_problem(run).splitlines()[0]
    assert first.startswith("cannot connect to the database at ")
    assert host.format(tmp=tmp_path) in first and port in first
    assert re.search(r"(Connect call failed|No such file or directory)", first)


async def test_another_active_job_exits_3(database_url, db, settings):
    active, _ = await runner.create_job(
        db, settings, kind="migrate", dry_run=True, batch_size=10, requested_by="someone"
    )
    run = await cli(database_url, "--dry-run")
    assert run.code == 3
    message = _one_problem(run)
    assert f"another migration or rollback job is active: {active}" in message
    assert "queued" in message and "someone" in message
    async with db.connect() as conn:
        count = await conn.execute(text("SELECT count(*) FROM migration_jobs"))
        assert count.scalar_one() == 1


async def _slow_batches(db, seconds: float = 0.05) -> None:
    """A test-only trigger that makes every batch take at least `seconds` to commit."""
    async with db.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION slow_batch() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER slow_batch BEFORE UPDATE ON migration_job_partitions "
                "FOR EACH ROW EXECUTE FUNCTION slow_batch()"
            )
        )


async def _until_progress(process) -> list[str]:
    seen: list[str] = []
    while not any(line.startswith("⏳ Progress") for line in seen):
        line = await process.stdout.readline()
        assert line, "the run ended before its first progress line"
        seen.append(line.decode())
    return seen


async def test_ctrl_c_then_resume_ends_like_an_uninterrupted_run(database_url, db):
    await demo.write(database_url, sessions=600)
    expected = await model_outcome(db)
    await _slow_batches(db)
    process = await start(database_url, "--batch-size", "10")
    async with asyncio.timeout(30):
        seen = await _until_progress(process)
        process.send_signal(signal.SIGINT)
        out, err = await process.communicate()
    interrupted = Run(process.returncode, "".join(seen) + out.decode(), err.decode())
    assert interrupted.code == 130, interrupted.err
    job_id = interrupted.job_id()
    assert f"Resume with: python {MIGRATE} --resume {job_id}" in interrupted.lines
    assert "⚠️  Migration interrupted: stopped after the last committed batch." in interrupted.lines
    job = await helpers.get(db, job_id)
    assert job["status"] == "interrupted"
    assert 0 < job["sessions_processed"] < job["sessions_total"]
    assert interrupted.summary() == helpers.stats(job)

    resumed = await cli(database_url, "--resume", str(job_id))
    assert resumed.code == 0, resumed.err
    assert f"Resuming job {job_id}: {job['sessions_processed']} sessions" in resumed.out
    job = await helpers.get(db, job_id)
    assert job["status"] == "succeeded" and resumed.summary() == helpers.stats(job)

    assert helpers.stats(job) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)


async def test_a_second_ctrl_c_abandons_the_batch_in_flight(database_url, db):
    await demo.write(database_url, sessions=300)
    await _slow_batches(db, seconds=2)
    process = await start(database_url, "--batch-size", "10")
    async with asyncio.timeout(30):
        await _until_progress(process)
        process.send_signal(signal.SIGINT)
        # the second Ctrl-C only once the first is handled, or the two could arrive as one
        while b"Stopping after the current batch" not in await process.stderr.readline():
            pass
        process.send_signal(signal.SIGINT)
        _, err = await process.communicate()
    assert process.returncode == 130
    assert "Abandoning the batch in flight" in err.decode()
    job = await latest_job(db)
    assert job["status"] == "interrupted" and "second Ctrl-C" in job["error"]
    # The abandoned batch rolled back: goals and counters still agree.
    assert len(await helpers.migrated_goals(db)) == job["goals_created"]


# Quick rechecks, one partition (one batch at the gate), and the one wait the clinician's: the
# test's sessions must not make the job share, a held batch must not count as a slowdown, nor
# an autovacuum make it wait.
QUICK = {"JOB_PARTITIONS": "1", "HEARTBEAT_SECONDS": "0.1", "LOCK_WATCH_SECONDS": "0.05",
         "THROTTLE_RECHECK_SECONDS": "0.5"}  # fmt: skip
ONE_WAIT = ("--batch-size", "60", "--share-above-sessions", "0", "--max-batch-slowdown", "0",
            "--no-yield-to-autovacuum")  # fmt: skip


async def _block_a_clinician(database_url, db, expected, begin):
    """Start a run (`begin()`), hold its first batch, set its lock-wait limit to 0.07 s from a
    second command line, and keep a clinician waiting on the batch long enough to be seen.

    Returns the process and its job's id, once the batch and then the clinician went on.
    """
    clinician = await asyncpg.connect(database_url)
    try:
        async with helpers.gate_closed(db):
            process = await begin()
            await helpers.at_gate(db, 1)
            job_id = (await latest_job(db))["id"]
            changed = await cli(
                database_url, "--limits", str(job_id)[:8], "--max-lock-wait", "0.07"
            )
            assert changed.code == 0, changed.err
            assert changed.out == (
                f"Limits of job {job_id} changed: --max-lock-wait 0.07 (was 0.2); "
                "it applies them within a heartbeat.\n"
            )
            opens = clinician.transaction()
            await opens.start()
            edit = await helpers.clinician_waits_on_the_batch(
                db, clinician, job_id=job_id, goals=expected.goals
            )
            await asyncio.sleep(0.4)  # long enough for the job's lock watcher to see it
        await asyncio.wait_for(edit, 10)
        await opens.commit()
    finally:
        await clinician.close()
    return process, job_id


WAITING_BRIEF = r"a session waited on the job's locks for (0\.\d+|\d+(\.\d)?) s, limit 0\.07 s"
WAITING = WAITING_BRIEF + r", since \d\d:\d\d:\d\d"


async def test_a_clinician_blocked_by_a_batch_shows_as_a_wait_with_the_limit_set_meanwhile(
    database_url, db
):
    await demo.write(database_url, sessions=800, seed=43)
    expected = await model_outcome(db)
    process, job_id = await _block_a_clinician(
        database_url, db, expected, lambda: start(database_url, *ONE_WAIT, **QUICK)
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    run = Run(process.returncode, out.decode(), err.decode())
    assert run.code == 0, run.err

    # Not a terminal: one line when it began to wait, one when it went on.
    waiting = [i for i, line in enumerate(run.lines) if line.startswith("Waiting: ")]
    assert len(waiting) == 1, run.out
    line = run.lines[waiting[0]]
    assert re.fullmatch("Waiting: " + WAITING, line), line  # the limit set by --limits
    going_on = run.lines[waiting[0] + 1]
    assert re.fullmatch(r"Going on after \d+\.\d s\.", going_on), run.out
    assert float(going_on.split()[3]) >= 0.5  # one recheck at least
    assert run.lines.index("✅ Migration completed successfully!") > waiting[0]

    job = await helpers.get(db, job_id)
    assert job["adaptive"] and job["requested_by"] == "cli" and job["throttle"] is None
    assert job["limits"]["max_lock_wait_seconds"] == 0.07
    assert job["limits"]["share_above_sessions"] is None  # 0 on the command line: off
    assert job["limits"]["max_batch_slowdown"] is None
    assert job["limits"]["yield_to_autovacuum"] is False
    assert run.summary() == helpers.stats(job) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
    async with db.connect() as conn:
        audit = (
            await conn.execute(
                text(
                    "SELECT action, actor, details FROM migration_audit "
                    "WHERE job_id = :j AND action IN ('limits', 'throttled', 'throttle_cleared') "
                    "ORDER BY id"
                ),
                {"j": job_id},
            )
        ).all()
    assert [(a.action, a.actor) for a in audit] == [
        ("limits", "cli"), ("throttled", "system"), ("throttle_cleared", "system")
    ]  # fmt: skip
    assert audit[0].details == {"max_lock_wait_seconds": {"from": 0.2, "to": 0.07}}
    assert audit[1].details["signal"] == "lock_waits" and audit[1].details["threshold"] == 0.07


async def _drain(fd: int) -> bytes:
    """Everything written to a pty until its other side is closed (EIO on Linux)."""
    seen = b""
    while True:
        if select.select([fd], [], [], 0)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return seen
            if not chunk:
                return seen
            seen += chunk
        else:
            await asyncio.sleep(0.02)


async def test_on_a_terminal_the_wait_is_on_the_bars_line_within_its_width(database_url, db):
    await demo.write(database_url, sessions=800, seed=43)
    expected = await model_outcome(db)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {k: v for k, v in _env(database_url, **QUICK).items() if k not in ("COLUMNS", "LINES")}

    reader: asyncio.Task | None = None

    async def begin():
        nonlocal reader
        process = await asyncio.create_subprocess_exec(
            sys.executable, MIGRATE, *ONE_WAIT,
            cwd=BACKEND, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=slave,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(slave)  # the child has its own copy: the pty ends when the child does
        reader = asyncio.create_task(_drain(master))
        return process

    try:
        process, job_id = await _block_a_clinician(database_url, db, expected, begin)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        out = (await asyncio.wait_for(reader, 10)).decode()
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
        os.close(master)
    assert process.returncode == 0, err.decode()
    # Each redraw of the bar's line: the wait is on it, and it fits the terminal's 100 columns.
    redraws = [part.split("\r\n")[0] for part in out.split("\r\x1b[K")[1:]]
    waits = [line for line in redraws if " · waiting: " in line]
    assert waits, out
    assert all(output._cells(line) <= 99 for line in redraws), redraws
    # The whole line would take some 130 columns: the head is shortened, "since" left out.
    assert re.fullmatch(r"⏳ \d+/729 sessions \d+% · waiting: " + WAITING_BRIEF, waits[0]), waits
    assert redraws[-1] == "⏳ Progress: 729/729 sessions processed... " + f"[{'█' * 30}] 100%"
    assert "✅ Migration completed successfully!" in out
    assert (await helpers.get(db, job_id))["status"] == "succeeded"


async def test_rollback_from_the_command_line(database_url, db):
    await demo.write(database_url, sessions=300)
    migration = (await cli(database_url)).job_id()
    created = (await helpers.get(db, migration))["goals_created"]

    preview = await cli(database_url, "--rollback", str(migration), "--dry-run")
    assert preview.code == 0, preview.err
    assert f"Goals That Would Be Deleted: {created}" in preview.lines
    assert len(await helpers.migrated_goals(db)) == created

    done = await cli(database_url, "--rollback", str(migration))
    assert done.code == 0, done.err
    assert f"Goals Deleted: {created}" in done.lines
    assert await helpers.migrated_goals(db) == []
    job = await helpers.get(db, done.job_id())
    assert job["kind"] == "rollback" and job["requested_by"] == "cli"

    again = await cli(database_url, "--resume", str(migration))
    assert again.code == 2 and "cannot resume job" in _one_problem(again)


async def test_backup_is_readable_by_pg_restore(database_url, tmp_path):
    await demo.write(database_url, sessions=50)
    target = tmp_path / "nested" / "goals.dump"
    run = await cli(database_url, "--output", str(target), script=BACKUP)
    assert run.code == 0, run.err
    assert target.is_file() and f"✅ Backup written: {target}" in run.out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    major = int(re.search(r"PostgreSQL (\d+)", run.out).group(1))
    restore = backup.pick("pg_restore", major)
    lister = await asyncio.create_subprocess_exec(
        str(restore.path), "--list", str(target), stdout=asyncio.subprocess.PIPE
    )
    listing = (await lister.communicate())[0].decode()
    assert lister.returncode == 0
    assert "TABLE public treatment_goals" in listing
    assert "TABLE DATA public therapy_sessions" in listing

    again = await cli(database_url, "--output", str(target), script=BACKUP)
    assert again.code == 2 and "already exists" in _one_problem(again)


async def test_backup_without_a_database_url(tmp_path):
    run = await cli(None, "--output", str(tmp_path / "x.dump"), script=BACKUP)
    assert run.code == 2
    assert _one_problem(run).startswith("DATABASE_URL not found in environment")
    assert os.listdir(tmp_path) == []
