"""`scripts/migrate_goals_from_jsonb.py`: the migration guide's command line, on the job engine.

A shell over app.jobs, like the admin API: every run is a row in migration_jobs with
requested_by "cli", counts for the one-active-job guard, and can be resumed or rolled back from
either side. A command runs in up to three steps: check the database (and resolve job id
prefixes), ask on a terminal before anything is written, then run the job in the foreground.
Ctrl-C, SIGTERM or SIGHUP (an SSH drop) sets the runner's stop event, so the job ends at the
next batch boundary as interrupted and can be resumed. A second one abandons the batch in
flight, which rolls back, and records the job interrupted all the same. --list, --status and
--cancel are the API's operator verbs, on the same job table.
"""

import argparse
import asyncio
import contextlib
import re
import signal
import sys
import time
import uuid
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import schemas
from app.cli import check, common, limits, output
from app.cli.common import CliError
from app.config import Settings
from app.db import create_engine
from app.jobs import errors, queries, retention, runner, store
from app.jobs import verify as verify_numbers

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000
ACTOR = "cli"
DEFAULT_LIST = 20
MAX_LIST = 500
VERBS = ("verify", "list", "status", "cancel", "check", "limits")
# The signals that stop a run at a batch boundary, and how the first message names them.
SIGNALS = {signal.SIGINT: "", signal.SIGTERM: "SIGTERM: ", signal.SIGHUP: "Hang-up (SIGHUP): "}
_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]*")


def _batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_BATCH_SIZE}")
    return size


def _count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_LIST:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIST}")
    return count


def _job_ref(value: str) -> str:
    """A job id, or the start of one (resolved against the job table later)."""
    with contextlib.suppress(ValueError):
        return str(uuid.UUID(value))
    prefix = value.strip().lower()
    if not _ID_PREFIX.fullmatch(prefix):
        raise argparse.ArgumentTypeError(f"not a job id or the start of one: {value!r}")
    return prefix


def _job_refs(value: str) -> list[str]:
    """One or more job ids (or starts of ids), comma-separated."""
    refs = [_job_ref(part) for part in value.split(",") if part.strip()]
    if not refs:
        raise argparse.ArgumentTypeError(f"not a job id or the start of one: {value!r}")
    return list(dict.fromkeys(refs))


async def resolve(conn: AsyncConnection, ref: str) -> uuid.UUID:
    """The job id that a whole id or a unique start of one names; CliError in one line."""
    with contextlib.suppress(ValueError):
        return uuid.UUID(ref)
    prefix = _job_ref(ref)  # parsed already: lower-case hex digits and dashes only
    found = await queries.job_ids_starting_with(conn, prefix=prefix)
    if not found:
        raise CliError(f"no job id starts with {prefix!r}")
    if len(found) > 1:
        shown = ", ".join(map(str, found[:3])) + (", ..." if len(found) > 3 else "")
        raise CliError(f"job id {prefix!r} is ambiguous: it could be {shown}; give more characters")
    return found[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/migrate_goals_from_jsonb.py",
        description="Create treatment_goals from the action items in "
        "therapy_sessions.extracted_notes (run from backend/; see docs/CLI.md).",
        epilog="A JOB_ID may be shortened to any unique start of it. Exit codes: 0 success "
        "(--check: ready), 1 sessions or the job failed, or the run was not confirmed, "
        "2 configuration or schema problem (--check: not ready), bad option or job id, "
        "3 another job is active, 130 interrupted by Ctrl-C, "
        "SIGTERM or SIGHUP (resume with --resume JOB_ID)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        metavar="JOB_ID",
        type=_job_ref,
        help="continue an interrupted, cancelled or failed job where it stopped",
    )
    mode.add_argument(
        "--rollback",
        metavar="JOB_ID[,JOB_ID...]",
        type=_job_refs,
        help="delete the goals these migration jobs created, keeping goals changed since",
    )
    mode.add_argument(
        "--verify", action="store_true", help="print the guide's verification numbers"
    )
    mode.add_argument(
        "--list",
        metavar="N",
        nargs="?",
        const=DEFAULT_LIST,
        type=_count,
        help=f"list the newest N jobs (default {DEFAULT_LIST}), from the API and the command line",
    )
    mode.add_argument(
        "--status", metavar="JOB_ID", type=_job_ref, help="show one job: state, progress, numbers"
    )
    mode.add_argument(
        "--cancel",
        metavar="JOB_ID",
        type=_job_ref,
        help="ask an active job to stop at its next batch boundary",
    )
    mode.add_argument(
        "--limits",
        metavar="JOB_ID",
        type=_job_ref,
        help="change the health limits of an active or stopped job (the limit options below)",
    )
    mode.add_argument(
        "--check",
        action="store_true",
        help="read-only preflight: is this database ready? (exit 0 ready, 2 not)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would happen; change nothing"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every session and action item (clinical text, on this terminal only)",
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=_batch_size,
        help=f"sessions (or goals) per transaction, 1..{MAX_BATCH_SIZE} "
        f"(default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--fixed-batches",
        action="store_true",
        help="keep --batch-size for every batch, as before (default: it is where batch sizes "
        "start, then they follow BATCH_TARGET_SECONDS)",
    )
    limits.add_options(parser)
    parser.add_argument(
        "--force", action="store_true", help="with --rollback: delete changed goals too"
    )
    parser.add_argument(
        "--keep-later-runs",
        action="store_true",
        help="with --rollback: roll back although later runs counted these goals as "
        "duplicates; run a migration again afterwards to create the goals they skipped",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="do not ask before a real run or rollback (there is no question when stdin "
        "is not a terminal)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of the text output"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.force and not args.rollback:
        parser.error("--force only applies to --rollback")
    if args.keep_later_runs and not args.rollback:
        parser.error("--keep-later-runs only applies to --rollback")
    if args.resume and (args.dry_run or args.batch_size):
        parser.error("--resume continues a job with its own settings: drop --dry-run/--batch-size")
    args.limit_changes = limits.given(args)
    if args.resume and (args.fixed_batches or args.limit_changes):
        parser.error(
            "--resume continues a job with its own settings: change its limits with --limits"
        )
    for verb in VERBS:
        given = getattr(args, verb)
        run_options = args.dry_run or args.batch_size or args.verbose or args.yes
        if given and (run_options or args.fixed_batches):
            parser.error(f"--{verb} takes no options but --json" + _LIMITS_TOO[verb == "limits"])
        if given and verb != "limits" and args.limit_changes:
            parser.error(f"--{verb} takes no options but --json")
    if args.limits and not args.limit_changes:
        parser.error("--limits needs at least one limit to change, e.g. --max-replay-lag 10")
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    return args


_LIMITS_TOO = ("", " and the limit options")


def exit_code(job: dict[str, Any], status: str | None, *, interrupted: bool) -> int:
    """0 clean success, 1 failed sessions or job, 130 interrupted (see docs/CLI.md)."""
    if status == "interrupted" or (status is None and interrupted):
        return common.EXIT_INTERRUPTED
    if status == "succeeded":
        return common.EXIT_FAILED if job["errors"] else common.EXIT_OK
    return common.EXIT_FAILED


class Command:
    """One invocation: the parsed arguments, where output goes, and the Ctrl-C state."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        modes = {verb: getattr(args, verb) for verb in (*VERBS, "resume", "rollback")}
        self.name = next((name for name, given in modes.items() if given), "migrate")
        bar = sys.stdout.isatty() and not args.verbose and not args.json
        self.stop = asyncio.Event()
        self.console = output.Console(quiet=args.json, bar=bar, on_broken=self.stop.set)
        self.interrupts = 0
        self.stopped_by = "Ctrl-C"
        self.run_task: asyncio.Task | None = None
        self.job_id: uuid.UUID | None = None
        self.target: uuid.UUID | None = None  # the job --resume or --rollback names
        self.targets: list[uuid.UUID] = []  # every job --rollback names
        self.database = ""
        self.settings: Settings | None = None  # read in main(): shapes the --json documents

    def fail(self, exc: CliError) -> int:
        """Report an operator-fixable problem: its lines on stderr, and JSON if asked."""
        self.console.finish()
        common.say(str(exc))
        if self.args.json:
            self.console.document(
                {"command": self.name, "exit_code": exc.exit_code, "error": str(exc)}
            )
        return exc.exit_code

    def main(self) -> int:
        """Check, ask, run: each database step on its own event loop, the question between."""
        settings = common.load()
        self.database = common.describe_database(settings.database_url)
        self.settings = settings
        if self.name in VERBS:
            return asyncio.run(self._on_database(settings, self.verb))
        question = asyncio.run(self._on_database(settings, self.prepare))
        if question and not self.args.yes and not common.confirm(question):
            raise CliError("Not confirmed; nothing was changed.", common.EXIT_FAILED)
        return asyncio.run(self._on_database(settings, self.execute))

    async def _on_database(self, settings: Settings, step) -> Any:
        db = create_engine(settings)
        try:
            return await step(db, settings)
        except (SQLAlchemyError, OSError) as exc:
            raise self._lost(exc) from None
        finally:
            await db.dispose()

    def _lost(self, exc: BaseException) -> CliError:
        """The database went away after the preflight: say so, and how to go on."""
        message = errors.describe(exc)
        if self.job_id is not None:
            message += (
                f"\njob {self.job_id} shows as interrupted once its heartbeat is stale; then: "
                + output.script(f"--resume {self.job_id}")
            )
        return CliError(message, common.EXIT_FAILED)

    async def prepare(self, db: AsyncEngine, settings: Settings) -> str | None:
        """Check the database and the job named; return the question a real write needs."""
        args = self.args
        await common.preflight(db, settings)
        where = f"in database {self.database}"
        async with db.connect() as conn:
            if args.resume:
                self.target = await resolve(conn, args.resume)
                job = await queries.get_job(conn, job_id=self.target)
                if job is None:
                    raise CliError(f"no job with id {self.target}")
                if job["dry_run"]:
                    return None
                what = "migration" if job["kind"] == "migrate" else "rollback"
                return f"Resume job {self.target}, a real {what}, {where}?"
            if args.rollback:
                self.targets = [await resolve(conn, ref) for ref in args.rollback]
                self.target = self.targets[0]
                try:
                    # Its lease revocation rolls back with this connection; create_job redoes it.
                    await store.check_rollback_targets(
                        conn,
                        targets=self.targets,
                        dry_run=args.dry_run,
                        keep_later_runs=args.keep_later_runs,
                    )
                except store.JobNotFound as exc:
                    raise CliError(f"no job with id {exc.args[0]}") from None
                except store.JobStateError as exc:
                    raise CliError(f"cannot roll back {self._targets_named()}: {exc}") from None
                if args.dry_run:
                    return None
                kept = "changed ones too (--force)" if args.force else "keeping those changed since"
                return (
                    f"Delete the goals {self._targets_named()} created, {kept}, {where}? "
                    "(preview: add --dry-run)"
                )
        if args.dry_run:
            return None
        return f"Create treatment_goals for real {where}? (preview: --dry-run)"

    async def execute(self, db: AsyncEngine, settings: Settings) -> int:
        """Start (or resume) the job and follow it, Ctrl-C, SIGTERM and SIGHUP stopping it."""
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await retention.purge(db, settings)  # previews hold clinical text; see retention.py
            job, token = await self.start(db, settings)
            return await self.follow(db, settings, job, token)
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.interrupts += 1
        self.console.finish()
        if self.interrupts == 1:
            self.stop.set()
            if sig != signal.SIGINT:
                self.stopped_by = signal.Signals(sig).name
            common.say(
                f"{SIGNALS[sig]}Stopping after the current batch... (Ctrl-C again abandons it)"
            )
        elif self.run_task is not None and not self.run_task.done():
            common.say("Abandoning the batch in flight; it rolls back.")
            self.run_task.cancel()

    def _targets_named(self) -> str:
        """'job ID' or 'jobs ID, ID' for the jobs --rollback names."""
        ids = ", ".join(map(str, self.targets))
        return f"job {ids}" if len(self.targets) == 1 else f"jobs {ids}"

    async def start(self, db: AsyncEngine, settings: Settings) -> tuple[dict, uuid.UUID]:
        """Create (or re-queue) the job; return its row and this run's token."""
        args = self.args
        try:
            if args.resume:
                token = await runner.resume_job(db, settings, job_id=self.target, actor=ACTOR)
                job_id = self.target
            elif args.rollback:
                job_id, token = await runner.create_job(
                    db,
                    settings,
                    kind="rollback",
                    targets=self.targets,
                    force=args.force,
                    **({"keep_later_runs": True} if args.keep_later_runs else {}),
                    dry_run=args.dry_run,
                    batch_size=args.batch_size,
                    requested_by=ACTOR,
                    **self._pacing(settings),
                )
            else:
                job_id, token = await runner.create_job(
                    db,
                    settings,
                    kind="migrate",
                    dry_run=args.dry_run,
                    batch_size=args.batch_size,
                    requested_by=ACTOR,
                    **self._pacing(settings),
                )
        except store.ActiveJobExists as exc:
            raise await self._active_job_error(db, exc.active_job_id) from None
        except store.JobNotFound:
            raise CliError(f"no job with id {self.target}") from None
        except store.JobStateError as exc:
            what = (
                f"resume job {self.target}" if args.resume else f"roll back {self._targets_named()}"
            )
            raise CliError(f"cannot {what}: {exc}") from None
        self.job_id = job_id
        async with db.connect() as conn:
            return await queries.get_job(conn, job_id=job_id), token

    def _pacing(self, settings: Settings) -> dict[str, Any]:
        """A new job's adaptive flag and limits: the settings' limits, the options' over them."""
        chosen = settings.limits(self.args.limit_changes).as_dict()
        return {"adaptive": not self.args.fixed_batches, "limits": chosen}

    async def _active_job_error(self, db: AsyncEngine, active: uuid.UUID | None) -> CliError:
        about = ""
        if active is not None:
            async with db.connect() as conn:
                other = await queries.get_job(conn, job_id=active)
            if other is not None:
                kind = other["kind"] + (" dry run" if other["dry_run"] else "")
                about = f" ({kind}, {other['status']}, requested by {other['requested_by']})"
        return CliError(
            f"another migration or rollback job is active: {active}{about}\n"
            f"wait for it to end (or cancel it: {output.script('--cancel ' + str(active))}), "
            "then run this again",
            common.EXIT_ACTIVE_JOB,
        )

    async def follow(self, db: AsyncEngine, settings: Settings, job: dict, token: uuid.UUID) -> int:
        """Run the job in the foreground, printing the guide's output; return the exit code."""
        kind, dry_run = job["kind"], job["dry_run"]
        verbose = self.args.verbose and kind == "migrate" and not self.args.json
        progress: output.Progress | None = None

        def on_start(claimed: dict) -> None:
            nonlocal progress
            total = claimed["sessions_total"]
            if kind == "migrate":
                banner = output.migration_banner(
                    dry_run=dry_run,
                    batch_size=job["batch_size"],
                    sizing=output.sizing_text(job, settings),
                    verbose=self.args.verbose,
                    total=total,
                    database=self.database,
                )
            else:
                banner = output.rollback_banner(
                    targets=job["target_job_ids"] or [job["target_job_id"]],
                    dry_run=dry_run,
                    batch_size=job["batch_size"],
                    sizing=output.sizing_text(job, settings),
                    force=job["force"],
                    total=total,
                    database=self.database,
                )
            if self.args.resume:
                banner.append(output.resumed_line(job))
            self.console.lines(banner if verbose else [*banner, ""])
            progress = output.Progress(
                self.console,
                total=total,
                done=output.processed(job, kind),
                unit=output.unit_of(job),
                gap=verbose,
            )

        def on_batch(event: runner.BatchEvent) -> None:
            if event.report:
                self.console.lines(output.session_lines(event.report, dry_run=dry_run))
            progress.add(output.processed(event.stats, kind))

        def on_throttle(shown: dict[str, Any] | None) -> None:
            if progress is not None:
                progress.wait(shown)

        started = time.monotonic()
        self.run_task = asyncio.create_task(
            runner.run_job(
                db,
                settings,
                job_id=job["id"],
                token=token,
                stop=self.stop,
                on_start=on_start,
                on_batch=on_batch,
                on_throttle=on_throttle,
                report=verbose,
            )
        )
        try:
            status = await self.run_task
        except asyncio.CancelledError:
            status = await self._abandon(db, job["id"], token)
        seconds = time.monotonic() - started
        if progress is not None:
            progress.last()
        async with db.connect() as conn:
            final = await queries.get_job(conn, job_id=job["id"])
        code = exit_code(final, status, interrupted=self.interrupts > 0)
        if self.args.json:
            document = {
                "command": self.name,
                "exit_code": code,
                "execution_seconds": round(seconds, 2),
                "job": self._public(final),
            }
            self.console.document(document)
            return code
        summary = output.migration_summary if kind == "migrate" else output.rollback_summary
        self.console.lines(
            [
                "",
                *output.outcome_lines(final, status),
                "",
                *summary(final, seconds),
                *output.closing_lines(final, status),
            ]
        )
        return code

    async def _abandon(self, db: AsyncEngine, job_id: uuid.UUID, token: uuid.UUID) -> str | None:
        """After a second Ctrl-C the batch in flight rolled back; record the job interrupted."""
        error = f"stopped mid-batch by a second {self.stopped_by}; that batch was rolled back"
        recorded = await runner.abandon(db, job_id=job_id, token=token, error=error)
        return "interrupted" if recorded else None

    async def verify(self, db: AsyncEngine, settings: Settings) -> int:
        """Verification on the data, with the guide's numbers, as the API's /verify gives it."""
        report = await verify_numbers.report(db, partition_count=settings.job_partitions)
        result = schemas.Verification(**report)
        code = common.EXIT_OK if result.all_items_accounted else common.EXIT_FAILED
        if self.args.json:
            document = {
                "command": self.name,
                "exit_code": code,
                "verification": result.model_dump(mode="json"),
            }
            self.console.document(document)
        else:
            self.console.lines(output.verification_block(result.model_dump(), self.database))
        return code

    async def verb(self, db: AsyncEngine, settings: Settings) -> int:
        """--verify, --list, --status, --cancel or --check: read (or flag); nothing runs here."""
        if self.args.check:  # the preflight itself: before the schema is there, too
            return await check.run(db, settings, self.console, as_json=self.args.json)
        await common.preflight(db, settings)
        if self.args.verify:
            return await self.verify(db, settings)
        async with db.begin() as conn:
            if self.args.list:
                # As the API does before every read: a job whose process is gone shows as such.
                await runner.recover_stale(conn, settings)
                return self._show_list(
                    await queries.list_jobs(conn, limit=self.args.list, offset=0)
                )
            job_id = self.job_id = await resolve(
                conn, self.args.status or self.args.cancel or self.args.limits
            )
            if self.args.cancel:
                # No stale recovery first: a job whose process is gone is cancelled at once.
                return await self._cancel(conn, settings, job_id)
            if self.args.limits:
                return await self._change_limits(conn, settings, job_id)
            await runner.recover_stale(conn, settings)
            job = await queries.get_job(conn, job_id=job_id)
        if job is None:
            raise CliError(f"no job with id {job_id}")
        return self._show_job(job, output.job_details(job, default_limits=settings.limits()))

    async def _cancel(self, conn: AsyncConnection, settings: Settings, job_id: uuid.UUID) -> int:
        try:
            status = await store.request_cancel(
                conn, job_id=job_id, actor=ACTOR, stale_after_seconds=settings.stale_after_seconds
            )
        except store.JobNotFound:
            raise CliError(f"no job with id {job_id}") from None
        except store.JobStateError:
            job = await queries.get_job(conn, job_id=job_id)
            raise CliError(
                f"cannot cancel job {job_id}: it is {output.status_text(job)}, "
                "not queued or running"
            ) from None
        job = await queries.get_job(conn, job_id=job_id)
        return self._show_job(job, output.cancel_lines(job, status))

    async def _change_limits(
        self, conn: AsyncConnection, settings: Settings, job_id: uuid.UUID
    ) -> int:
        changes = self.args.limit_changes
        try:
            stored = await store.set_limits(conn, job_id=job_id, actor=ACTOR, changes=changes)
        except store.JobNotFound:
            raise CliError(f"no job with id {job_id}") from None
        except store.JobStateError as exc:
            raise CliError(f"cannot change the limits of job {job_id}: {exc}") from None
        job = await queries.get_job(conn, job_id=job_id)
        # What the job went by before: its stored limits over the settings, as the runner does.
        said = limits.changed(settings.limits(stored), changes)
        return self._show_job(job, output.limits_lines(job, said))

    def _public(self, job: dict) -> dict[str, Any]:
        """The job as the API shows it: a limit its row lacks is the settings' (the runner's)."""
        public = schemas.Job.from_row(
            job,
            stale_after_seconds=self.settings.stale_after_seconds,
            default_limits=self.settings.limits(),
        )
        return public.model_dump(mode="json")

    def _show_list(self, jobs: list[dict]) -> int:
        if self.args.json:
            items = [self._public(job) for job in jobs]
            self.console.document({"command": self.name, "exit_code": 0, "jobs": items})
        else:
            self.console.lines(output.job_table(jobs))
        return common.EXIT_OK

    def _show_job(self, job: dict, lines: list[str]) -> int:
        if self.args.json:
            document = self._public(job)
            self.console.document({"command": self.name, "exit_code": 0, "job": document})
        else:
            self.console.lines(lines)
        return common.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    common.prepare_streams()
    args = parse_args(argv)
    common.configure_logging()
    command = Command(args)
    try:
        return command.main()
    except CliError as exc:
        return command.fail(exc)
    except KeyboardInterrupt:
        common.say("Interrupted before a job started; nothing was changed.")
        return common.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
