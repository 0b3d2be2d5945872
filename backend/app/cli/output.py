"""The migration guide's text, line for line: banners, progress, per-session blocks, summaries.

Everything here turns job rows and batch reports into lines; nothing touches the database.
Clinical text (goal descriptions) only ever reaches the operator's own stdout through
`session_lines`, which also strips control characters so stored text cannot drive the terminal.
"""

import contextlib
import json
import os
import shutil
import sys
import textwrap
import time
import unicodedata
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from app.cli import limits
from app.jobs import throttle

RULE = "=" * 70
DRY_RUN_LINE = "🔍 DRY RUN MODE - No database changes will be made"
PROGRESS_INTERVAL_SECONDS = 1.0  # between progress lines
BAR_INTERVAL_SECONDS = 0.2  # between redraws of the in-place bar on a terminal
DESCRIPTION_WIDTH = 60

MIGRATION_SUMMARY_LABELS = (
    ("Sessions Processed", "sessions_processed"),
    ("Sessions with Action Items", "sessions_with_action_items"),
    ("Goals Created", "goals_created"),
    ("Goals Skipped (Duplicate)", "goals_skipped_duplicate"),
    ("Goals Skipped (Invalid)", "goals_skipped_invalid"),
    ("Errors Encountered", "errors"),
)


def script(args: str) -> str:
    """The command an operator types, as the guide spells it (from backend/)."""
    return f"python scripts/migrate_goals_from_jsonb.py {args}"


def sizing_text(job: dict[str, Any], settings: Any) -> str:
    """How the job sizes its batches, for the banner."""
    if not job.get("adaptive"):
        return "fixed"
    target = f"{settings.batch_target_seconds:g}"
    return f"adaptive, from the batch size toward {target} s per batch"


def migration_banner(
    *,
    dry_run: bool,
    batch_size: int,
    verbose: bool,
    total: int,
    database: str,
    sizing: str | None = None,
) -> list[str]:
    lines = [RULE, "STARTING GOAL MIGRATION FROM JSONB ACTION_ITEMS", RULE]
    if dry_run:
        lines.append(DRY_RUN_LINE)
    lines += [
        f"Batch Size: {batch_size}",
        *([f"Batch Sizing: {sizing}"] if sizing else []),
        f"Verbose Mode: {verbose}",
        f"Database: {database}",
        "",
        f"Found {total} sessions with extracted_notes.action_items",
    ]
    return lines


def rollback_banner(
    *,
    targets: list[Any],
    dry_run: bool,
    batch_size: int,
    force: bool,
    total: int,
    database: str,
    sizing: str | None = None,
) -> list[str]:
    target = ", ".join(map(str, targets))
    several = len(targets) > 1
    lines = [RULE, f"STARTING ROLLBACK OF GOAL MIGRATION JOB{'S' * several}", RULE]
    if dry_run:
        lines.append(DRY_RUN_LINE)
    kept = "changed goals are deleted too" if force else "goals changed since are kept"
    lines += [
        f"Target Job{'s' * several}: {target}",
        f"Batch Size: {batch_size}",
        *([f"Batch Sizing: {sizing}"] if sizing else []),
        f"Force: {force} ({kept})",
        f"Database: {database}",
        "",
        f"Found {total} goals created by job{'s' * several} {target}",
    ]
    return lines


def resumed_line(job: dict[str, Any]) -> str:
    done, unit = processed(job, job["kind"]), unit_of(job)
    return f"Resuming job {job['id']}: {done} {unit} already processed"


def unit_of(job: dict[str, Any]) -> str:
    return "sessions" if job["kind"] == "migrate" else "goals"


def processed(row: dict[str, Any], kind: str) -> int:
    """Units a job row or a batch's statistics went through: sessions, or goals for rollbacks."""
    if kind == "migrate":
        return row.get("sessions_processed", 0)
    return row.get("goals_deleted", 0) + row.get("goals_kept_modified", 0)


def progress_line(done: int, total: int | None, unit: str) -> str:
    return f"⏳ Progress: {done}/{total if total is not None else '?'} {unit} processed..."


def _printable(value: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in value)


def truncate(value: str, width: int = DESCRIPTION_WIDTH) -> str:
    value = _printable(value)
    return value if len(value) <= width else value[: width - 3].rstrip() + "..."


def _date(value: str | None) -> str:
    if not value:
        return "?"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _goal(row: dict[str, Any]) -> str:
    category = _printable(row.get("category") or "uncategorized")
    return f"[{category}] {truncate(row.get('description') or '')}"


def _item_line(row: dict[str, Any], dry_run: bool) -> str:
    outcome = row["outcome"]
    if outcome == "created":
        text = ("Would create goal: " if dry_run else "Created goal: ") + _goal(row)
    elif outcome == "duplicate":
        verb = "Would skip duplicate: " if dry_run else "Skipped duplicate: "
        text = verb + _goal(row) + " (this patient already has this goal)"
    else:
        verb = "Would skip invalid item: " if dry_run else "Skipped invalid item: "
        text = verb + _printable(row.get("reason") or "invalid")
    return ("[DRY RUN] " if dry_run else "") + text


def session_lines(report: Iterable[dict[str, Any]], *, dry_run: bool) -> list[str]:
    """The guide's verbose block for each session of one batch's report, in its order."""
    lines: list[str] = []
    current = None
    for row in report:
        if "error" in row:
            lines += [
                "",
                f"  Processing Session {row['session_id']}",
                f"  ❌ Session failed and was rolled back: {row['error']}",
            ]
            current = None
            continue
        if row["session_id"] != current:
            current = row["session_id"]
            count = row["item_count"] if row["outcome"] is not None else 0
            lines += [
                "",
                f"  Processing Session {row['session_id']}",
                f"  Date: {_date(row.get('session_date'))}",
                f"  Patient ID: {row['patient_id']}",
                f"  Action Items Found: {count}",
            ]
        if row["outcome"] is None:
            continue
        index = row["item_index"]
        position = f"{index + 1}/{row['item_count']}" if index is not None else "1/1"
        lines += ["", f"  Action Item {position}:", f"    {_item_line(row, dry_run)}"]
    return lines


def _rows(title: str, pairs: list[tuple[str, Any]], seconds: float | None) -> list[str]:
    lines = [RULE, title, RULE]
    if seconds is not None:
        lines.append(f"Execution Time: {seconds:.2f} seconds")
    lines += [f"{label}: {value}" for label, value in pairs]
    return lines + [RULE]


def migration_summary(job: dict[str, Any], seconds: float | None) -> list[str]:
    pairs = [(label, job[name]) for label, name in MIGRATION_SUMMARY_LABELS]
    return _rows("GOAL MIGRATION SUMMARY", pairs, seconds)


def rollback_summary(job: dict[str, Any], seconds: float | None) -> list[str]:
    deleted = "Goals That Would Be Deleted" if job["dry_run"] else "Goals Deleted"
    kept = "Goals That Would Be Kept" if job["dry_run"] else "Goals Kept"
    pairs = [
        (deleted, job["goals_deleted"]),
        (f"{kept} (Changed Since Migration)", job["goals_kept_modified"]),
    ]
    return _rows("GOAL ROLLBACK SUMMARY", pairs, seconds)


def verification_block(numbers: dict[str, Any], database: str | None = None) -> list[str]:
    last = numbers["last_real_run_id"]
    pairs = [("Database", database)] if database else []
    pairs += [
        ("Sessions with extracted_notes.action_items", numbers["sessions_with_action_items"]),
        ("Total Action Items (JSONB)", numbers["total_action_items"]),
        ("Goals in treatment_goals", numbers["goals_total"]),
        ("Goals Created by Migrations", numbers["goals_from_migrations"]),
        ("Goals Missing (a real run now would create)", numbers["goals_missing"]),
    ]
    if numbers["goals_missing"]:
        pairs += [
            ("  for Sessions / Patients", f"{numbers['sessions_missing_goals']} / "
             f"{numbers['patients_missing_goals']}"),
            ("  e.g. Session", ", ".join(map(str, numbers["missing_session_ids"]))),
        ]  # fmt: skip
    if numbers["duplicate_pairs"]:
        pairs.append(("Migrated Goals Beside a Clinician's Twin", numbers["duplicate_pairs"]))
    pairs.append(("Last Successful Migration", last or "none"))
    if last is not None:
        pairs += [
            ("Items It Accounted For (created + duplicate + invalid)",
             numbers["last_real_run_accounted"]),
            ("Its Counters Agree With the Data", "Yes" if numbers["counters_agree"] else "No"),
        ]  # fmt: skip
    pairs.append(
        ("All Action Items Accounted For", "Yes" if numbers["all_items_accounted"] else "No")
    )
    lines = _rows("GOAL MIGRATION VERIFICATION", pairs, None)
    return [*lines, *textwrap.wrap(numbers["summary"], width=len(RULE))]


def outcome_lines(job: dict[str, Any], status: str | None) -> list[str]:
    """The line after the progress: success, a warning about failed sessions, or the stop."""
    noun = "Migration" if job["kind"] == "migrate" else "Rollback"
    if status == "succeeded" and not job["errors"]:
        return [f"✅ {noun} completed successfully!"]
    if status == "succeeded":
        return [
            f"⚠️  {noun} completed, but {job['errors']} sessions failed and were rolled back, "
            "each on its own; all other sessions were migrated.",
            "   Fix the cause, then run the migration again: it creates only the missing goals.",
        ]
    if status == "interrupted":
        return [f"⚠️  {noun} interrupted: stopped after the last committed batch."]
    if status == "cancelled":
        return [f"⚠️  {noun} cancelled by an admin request."]
    if status == "failed":
        return [f"❌ {noun} failed: {job['error'] or 'see the job in the admin API'}"]
    return [
        f"❌ {noun} stopped without recording its end here (another process took the job over, "
        "or the database connection was lost); check the job's status in the admin API."
    ]


def closing_lines(job: dict[str, Any], status: str | None) -> list[str]:
    """The job's id and what the operator can do next, after the summary."""
    lines = ["", f"Job ID: {job['id']}"]
    if job.get("rolled_back_by"):
        lines.append(f"Rolled back by job {job['rolled_back_by']}.")
    elif status in ("interrupted", "cancelled", "failed"):
        lines.append(f"Resume with: {script('--resume ' + str(job['id']))}")
    elif job["kind"] == "migrate" and job["dry_run"]:
        lines.append("This was a dry run: run again without --dry-run to create the goals.")
    elif job["kind"] == "migrate" and job["goals_created"]:
        lines.append(
            f"Undo with: {script('--rollback ' + str(job['id']))} (add --dry-run to preview)"
        )
    return lines


def status_text(job: dict[str, Any]) -> str:
    """The job's status as an operator reads it: a migration rolled back since says so."""
    return "rolled back" if job.get("rolled_back_by") else job["status"]


def _when(value: datetime | None, zone: str = "") -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + zone if value else "-"


def _kind(job: dict[str, Any]) -> str:
    mode = "dry run" if job["dry_run"] else "real run"
    if job["kind"] == "migrate":
        return f"migrate, {mode}"
    force = ", force" if job["force"] else ""
    return f"rollback of job {job['target_job_id']}, {mode}{force}"


def _progress(job: dict[str, Any]) -> str:
    done, total = processed(job, job["kind"]), job["sessions_total"]
    return f"{done}/{total if total is not None else '?'}"


def job_table(jobs: list[dict[str, Any]]) -> list[str]:
    """`--list`: one line per job, newest first."""
    if not jobs:
        return ["No migration or rollback jobs yet."]
    rows = [("JOB ID", "KIND", "MODE", "STATUS", "PROGRESS", "CREATED (UTC)", "REQUESTED BY")]
    rows += [
        (
            str(job["id"]),
            job["kind"],
            "dry run" if job["dry_run"] else "real",
            status_text(job),
            _progress(job),
            _when(job["created_at"]),
            truncate(job["requested_by"], 24),
        )
        for job in jobs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def job_details(
    job: dict[str, Any],
    now: datetime | None = None,
    *,
    default_limits: throttle.Limits | None = None,
) -> list[str]:
    """`--status`: what the job is, where it stands, its statistics and what to do next."""
    status = job["status"]
    if job.get("rolled_back_by"):
        status += f", rolled back by job {job['rolled_back_by']}"
    lines = [
        f"Job ID: {job['id']}",
        f"Kind: {_kind(job)}",
        f"Status: {status}",
        f"Requested By: {truncate(job['requested_by'])}",
        f"Created: {_when(job['created_at'], ' UTC')}",
        f"Started: {_when(job['started_at'], ' UTC')}",
        f"Finished: {_when(job['finished_at'], ' UTC')}",
        f"Progress: {_progress(job)} {unit_of(job)} processed",
    ]
    if job["status"] in ("queued", "running", "cancelling") and job["heartbeat_at"]:
        age = ((now or datetime.now(UTC)) - job["heartbeat_at"]).total_seconds()
        beat = _when(job["heartbeat_at"], " UTC")
        lines.append(f"Last Heartbeat: {beat} ({max(age, 0):.0f} s ago)")
    lines += _pacing_lines(job, default_limits or throttle.Limits())
    if job["error"]:
        lines.append(f"Error: {_printable(job['error'])}")
    summary = migration_summary if job["kind"] == "migrate" else rollback_summary
    return [*lines, "", *summary(job, None), *closing_lines(job, job["status"])[2:]]


def _pacing_lines(job: dict[str, Any], default_limits: throttle.Limits) -> list[str]:
    """`--status`: batch sizing, the limits (a limit its row lacks: the default), the wait."""
    sizing = "adaptive" if job.get("adaptive") else "fixed"
    if job.get("current_batch_size"):
        sizing += f", last batch {job['current_batch_size']}"
    lines = [f"Batch Sizing: {sizing}"]
    if job.get("limits"):
        in_force = throttle.Limits.from_dict(job["limits"], default_limits)
        lines.append("Limits: " + limits.shown(in_force.as_dict()))
    if job.get("throttle"):
        lines.append(_sentence(waiting_text(job["throttle"])))
    return lines


def _sentence(text: str) -> str:
    """The first letter up, the rest as it is (str.capitalize would lower "WAL" and "MB")."""
    return text[:1].upper() + text[1:]


def waiting_text(throttle: dict[str, Any], *, since: bool = True) -> str:
    """What a job waits on, e.g. "waiting: standby replay lag 12.4 s, limit 5 s, since 14:02:31"."""
    verb = "sharing the database" if throttle.get("sharing") else "waiting"
    text = f"{verb}: {_printable(throttle['message'])}"
    if not since:
        return text
    began = datetime.fromisoformat(str(throttle["since"])).astimezone().strftime("%H:%M:%S")
    return f"{text}, since {began}"


def limits_lines(job: dict[str, Any], changed: str) -> list[str]:
    """`--limits`: what changed (limits.changed), and when the job goes by it."""
    running = job["status"] in ("running", "cancelling")
    when = "within a heartbeat" if running else "when it is resumed"
    return [f"Limits of job {job['id']} changed: {changed}; it applies them {when}."]


def cancel_lines(job: dict[str, Any], status: str) -> list[str]:
    """`--cancel`: what the request did."""
    if status == "cancelled":
        return [f"Job {job['id']} cancelled."]
    return [
        f"Cancel requested: job {job['id']} is {status} and stops at its next batch boundary.",
        f"Watch it with: {script('--status ' + str(job['id']))}",
    ]


class Console:
    """Where the human output goes: plain lines, or a bar redrawn in place on a terminal.

    If the reader goes away (`... | head`, or the terminal after a hang-up), the console falls
    silent and calls `on_broken` once, so the command can stop its job at a batch boundary
    instead of failing it mid-write.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        bar: bool = False,
        on_broken: Callable[[], None] | None = None,
        columns: Callable[[], int] = lambda: shutil.get_terminal_size().columns,
    ):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.bar = bar
        self.columns = columns  # the terminal's width now: it may change while a job runs
        self.on_broken = on_broken
        self.broken = False
        self._open_line = False

    def _write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe, or a terminal gone after a hang-up (EIO)
            self.broken = True
            with contextlib.suppress(OSError, ValueError):
                # Nothing more can reach the reader; keep the interpreter's final flush quiet.
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            if self.on_broken:
                self.on_broken()

    def lines(self, lines: Iterable[str]) -> None:
        if self.quiet:
            return
        self._close_line()
        self._write("".join(line + "\n" for line in lines))

    def document(self, document: dict[str, Any]) -> None:
        """The --json summary: the only thing such a run prints on stdout."""
        self._write(json.dumps(document, indent=2, default=str) + "\n")

    def progress(
        self,
        done: int,
        total: int | None,
        unit: str,
        note: str | None = None,
        brief: str | None = None,
    ) -> None:
        """A progress line; on a terminal the bar's line, redrawn, with what the job waits on."""
        if self.quiet:
            return
        line = progress_line(done, total, unit)
        if not self.bar:
            self._write(line + "\n")
            return
        share = done / total if total else 1.0
        filled = round(30 * min(share, 1.0))
        graphic = f" [{'█' * filled}{'░' * (30 - filled)}]"
        percent = f" {share:.0%}"
        tail, short = (f" · {note}", f" · {brief or note}") if note else ("", "")
        compact = f"⏳ {done}/{total if total is not None else '?'} {unit}"
        candidates = [line + graphic + percent + tail, line + percent + tail,
                      compact + percent + tail, compact + percent + short]  # fmt: skip
        self._write("\r\x1b[K" + _fit(candidates, self.columns() - 1))
        self._open_line = True

    def _close_line(self) -> None:
        if self._open_line:
            self._open_line = False
            self._write("\n")

    def finish(self) -> None:
        self._close_line()


def _cells(text: str) -> int:
    """Terminal columns the text takes: wide characters (the ⏳) two, combining ones none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _fit(candidates: list[str], width: int) -> str:
    """The first of the bar's lines (longest first) that fits one row; else the last, cut.

    A carriage return goes back to the start of the cursor's row only, so a line that wrapped
    would leave its first row behind at every redraw; a wait's note makes it over 80 columns.
    """
    for text in candidates:
        if _cells(text) <= width:
            return text
    kept, used = [], 1  # one column for the "…"
    for ch in candidates[-1]:
        used += _cells(ch)
        if used > width:
            break
        kept.append(ch)
    return "".join(kept) + "…"


class Progress:
    """Counts units over a run's batches; shows a progress line at most once a second."""

    def __init__(
        self,
        console: Console,
        *,
        total: int | None,
        done: int,
        unit: str,
        gap: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.console = console
        self.clock = clock
        self.total = total
        self.done = done
        self.unit = unit
        self.gap = gap  # a blank line before each progress line, between verbose blocks
        self._shown: int | None = None
        self._shown_at = 0.0
        self.note: str | None = None  # what the job waits on, shown with the count
        self.brief: str | None = None  # the same, without since when, for a narrow terminal
        self._signal: str | None = None
        self._sharing = False
        self._waiting_from: float | None = None  # when this wait began, on self.clock

    def add(self, count: int) -> None:
        self.done += count
        now = self.clock()
        interval = BAR_INTERVAL_SECONDS if self.console.bar else PROGRESS_INTERVAL_SECONDS
        if self._shown is None or now - self._shown_at >= interval:
            self.show(now)

    def show(self, now: float | None = None) -> None:
        if self.gap:
            self.console.lines([""])
        self.console.progress(self.done, self.total, self.unit, self.note, self.brief)
        self._shown, self._shown_at = self.done, self.clock() if now is None else now

    def wait(self, throttle: dict[str, Any] | None) -> None:
        """The job waits (or shares), or goes on: on the bar's line, or one line per change."""
        signal = throttle and throttle["signal"]
        changed, self._signal = signal != self._signal, signal
        self.note = throttle and waiting_text(throttle)
        self.brief = throttle and waiting_text(throttle, since=False)
        if throttle is not None and self._waiting_from is None:
            self._waiting_from = self.clock()
        going_on = ""
        if throttle is None and self._waiting_from is not None:
            going_on = self._going_on(self.clock() - self._waiting_from)
            self._waiting_from = None
        self._sharing = bool(throttle and throttle.get("sharing"))
        if self.console.bar:
            self.show()
        elif changed:
            self.console.lines([_sentence(self.note) if self.note else going_on])

    def _going_on(self, seconds: float) -> str:
        if self._sharing:
            return f"Back to full speed after sharing for {seconds:.1f} s."
        return f"Going on after {seconds:.1f} s."

    def last(self) -> None:
        """Show the final count unless the last line already did."""
        if self._shown != self.done:
            self.show()
        self.console.finish()
