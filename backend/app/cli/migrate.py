"""`scripts/migrate_goals_from_jsonb.py`: the migration guide's command line, on the job engine.

A shell over app.jobs, like the admin API: every run is a row in migration_jobs with
requested_by "cli", counts for the one-active-job guard, and can be resumed or rolled back from
either side. The job runs in the foreground; Ctrl-C (or SIGTERM) sets the runner's stop event,
so the job ends at the next batch boundary as interrupted and can be resumed. A second Ctrl-C
abandons the batch in flight, which rolls back, and records the job interrupted all the same.
"""

import argparse
import asyncio
import signal
import sys
import time
import uuid
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import schemas
from app.cli import common, output
from app.cli.common import CliError
from app.config import Settings
from app.db import create_engine
from app.jobs import errors, runner, store
from app.jobs import verify as verify_numbers

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000
ACTOR = "cli"


def _batch_size(value: str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_BATCH_SIZE}")
    return size


def _job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id: {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/migrate_goals_from_jsonb.py",
        description="Create treatment_goals from the action items in "
        "therapy_sessions.extracted_notes (run from backend/; see docs/CLI.md).",
        epilog="exit codes: 0 success, 1 sessions or the job failed, 2 configuration or schema "
        "problem, 3 another job is active, 130 interrupted (resume with --resume JOB_ID)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        metavar="JOB_ID",
        type=_job_id,
        help="continue an interrupted, cancelled or failed job where it stopped",
    )
    mode.add_argument(
        "--rollback",
        metavar="JOB_ID",
        type=_job_id,
        help="delete the goals this migration job created, keeping goals changed since",
    )
    mode.add_argument(
        "--verify", action="store_true", help="print the guide's verification numbers"
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
        "--force", action="store_true", help="with --rollback: delete changed goals too"
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
    if args.resume and (args.dry_run or args.batch_size):
        parser.error("--resume continues a job with its own settings: drop --dry-run/--batch-size")
    if args.verify and (args.dry_run or args.batch_size or args.verbose):
        parser.error("--verify takes no options but --json")
    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    return args


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
        modes = {"verify": args.verify, "resume": args.resume, "rollback": args.rollback}
        self.name = next((name for name, given in modes.items() if given), "migrate")
        bar = sys.stdout.isatty() and not args.verbose and not args.json
        self.stop = asyncio.Event()
        self.console = output.Console(quiet=args.json, bar=bar, on_broken=self.stop.set)
        self.interrupts = 0
        self.run_task: asyncio.Task | None = None
        self.job_id: uuid.UUID | None = None

    def fail(self, exc: CliError) -> int:
        """Report an operator-fixable problem: its lines on stderr, and JSON if asked."""
        self.console.finish()
        print(exc, file=sys.stderr)
        if self.args.json:
            self.console.document(
                {"command": self.name, "exit_code": exc.exit_code, "error": str(exc)}
            )
        return exc.exit_code

    async def run(self) -> int:
        settings = common.load()
        db = create_engine(settings)
        try:
            await common.preflight(db, settings)
            if self.args.verify:
                return await self.verify(db)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal)
            try:
                job, token = await self.start(db, settings)
                return await self.follow(db, settings, job, token)
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
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

    def _on_signal(self) -> None:
        self.interrupts += 1
        self.console.finish()
        if self.interrupts == 1:
            self.stop.set()
            print("Stopping after the current batch... (Ctrl-C again abandons it)", file=sys.stderr)
        elif self.run_task is not None and not self.run_task.done():
            print("Abandoning the batch in flight; it rolls back.", file=sys.stderr)
            self.run_task.cancel()

    async def start(self, db: AsyncEngine, settings: Settings) -> tuple[dict, uuid.UUID]:
        """Create (or re-queue) the job; return its row and this run's token."""
        args = self.args
        try:
            if args.resume:
                token = await runner.resume_job(db, settings, job_id=args.resume, actor=ACTOR)
                job_id = args.resume
            elif args.rollback:
                job_id, token = await runner.create_job(
                    db,
                    settings,
                    kind="rollback",
                    targets=[args.rollback],
                    force=args.force,
                    dry_run=args.dry_run,
                    batch_size=args.batch_size,
                    requested_by=ACTOR,
                )
            else:
                job_id, token = await runner.create_job(
                    db,
                    settings,
                    kind="migrate",
                    dry_run=args.dry_run,
                    batch_size=args.batch_size,
                    requested_by=ACTOR,
                )
        except store.ActiveJobExists as exc:
            raise await self._active_job_error(db, exc.active_job_id) from None
        except store.JobNotFound:
            raise CliError(f"no job with id {args.resume or args.rollback}") from None
        except store.JobStateError as exc:
            verb = "resume" if args.resume else "roll back"
            raise CliError(f"cannot {verb} job {args.resume or args.rollback}: {exc}") from None
        self.job_id = job_id
        async with db.connect() as conn:
            return await store.get_job(conn, job_id=job_id), token

    async def _active_job_error(self, db: AsyncEngine, active: uuid.UUID | None) -> CliError:
        about = ""
        if active is not None:
            async with db.connect() as conn:
                other = await store.get_job(conn, job_id=active)
            if other is not None:
                kind = other["kind"] + (" dry run" if other["dry_run"] else "")
                about = f" ({kind}, {other['status']}, requested by {other['requested_by']})"
        return CliError(
            f"another migration or rollback job is active: {active}{about}\n"
            "wait for it to end (or cancel it in the admin API), then run this again",
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
                    verbose=self.args.verbose,
                    total=total,
                )
            else:
                banner = output.rollback_banner(
                    target=job["target_job_id"],
                    dry_run=dry_run,
                    batch_size=job["batch_size"],
                    force=job["force"],
                    total=total,
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
            final = await store.get_job(conn, job_id=job["id"])
        code = exit_code(final, status, interrupted=self.interrupts > 0)
        if self.args.json:
            document = {
                "command": self.name,
                "exit_code": code,
                "execution_seconds": round(seconds, 2),
                "job": schemas.Job.from_row(final).model_dump(mode="json"),
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
        error = "stopped mid-batch by a second Ctrl-C; that batch was rolled back"
        recorded = await runner.abandon(db, job_id=job_id, token=token, error=error)
        return "interrupted" if recorded else None

    async def verify(self, db: AsyncEngine) -> int:
        """The guide's verification numbers, as the API's /verify computes them."""
        async with db.connect() as conn:
            result = schemas.Verification(**await verify_numbers.report(conn))
        code = common.EXIT_OK if result.all_items_accounted else common.EXIT_FAILED
        if self.args.json:
            document = {
                "command": self.name,
                "exit_code": code,
                "verification": result.model_dump(mode="json"),
            }
            self.console.document(document)
        else:
            self.console.lines(output.verification_block(result.model_dump()))
        return code


def main(argv: list[str] | None = None) -> int:
    common.prepare_streams()
    args = parse_args(argv)
    common.configure_logging()
    command = Command(args)
    try:
        return asyncio.run(command.run())
    except CliError as exc:
        return command.fail(exc)
    except KeyboardInterrupt:
        print("Interrupted before a job started; nothing was changed.", file=sys.stderr)
        return common.EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
