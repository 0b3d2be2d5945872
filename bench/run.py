"""The benchmark from start to end: one template, a fresh clone per measurement, the report.

Settings come from the environment: BENCH_SESSIONS (200000), BENCH_MIX (both: duplicate-heavy
and insert-heavy, one after the other; or one of them), BENCH_DURABLE (1: PostgreSQL's default
fsync and synchronous_commit; 0 turns them off), BENCH_SEED (7), BENCH_REPEATS
(3: the ceiling, the floor and the engine's runs at the default batch size, best kept),
BENCH_EXTRAS (1; 0 leaves out the floor and EXPLAIN, which do not depend on the size, and the
rollback, measured at 1M: each needs one more copy of the database, long at 10M sessions),
BENCH_CEILING (1; 0 leaves out the SQL ceiling and its row-set check, keeping the check that
real runs create what dry runs predict),
BENCH_BATCH_SIZES (50,200,1000,5000: the real-run sweep), BENCH_FLOOR_SESSIONS (5000),
BENCH_QUIET_WAIT (30: seconds each measurement may wait for other load on the machine to ease),
BENCH_PG_SETTINGS (none: PostgreSQL's stock memory settings; a comma-separated list such as
"shared_buffers=6GB,max_wal_size=8GB" sizes the server, as a deployment would),
BENCH_CLINICIANS (1: the clinicians' workload alone and during a real run, with its latency;
0 leaves it out) and BENCH_DATABASE_URL (none: the embedded PostgreSQL; a postgresql:// URL of
a superuser on another server on this machine, e.g. Debian's PostgreSQL 15, measures that
server as it is configured: BENCH_DURABLE and BENCH_PG_SETTINGS then do not apply).
"""

import asyncio
import functools
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from app import demo
from app.config import Settings
from app.db import create_engine
from app.jobs import verify
from app.routers.migrations import DEFAULT_BATCH_SIZE
from bench import api, buffers, ceiling, clinicians, cpu, explain, floor, report, rollback
from bench.database import Cluster
from bench.server import ServerFailed

PREVIEW_ROWS_SQL = """
SELECT patient_id, session_id, description, category, created_at FROM migration_previews
"""


@dataclass(frozen=True)
class Options:
    sessions: int
    mixes: tuple[str, ...]
    durable: bool
    seed: int
    repeats: int
    batch_sizes: tuple[int, ...]
    floor_sessions: int
    extras: bool
    ceiling: bool
    quiet_wait: float
    server_settings: dict[str, str]
    server_url: str | None = None
    clinicians: bool = True

    @classmethod
    def from_env(cls) -> "Options":
        sizes = os.environ.get("BENCH_BATCH_SIZES", "50,200,1000,5000")
        mix = os.environ.get("BENCH_MIX", "both")
        return cls(
            sessions=int(os.environ.get("BENCH_SESSIONS", "200000")),
            mixes=tuple(demo.MIXES) if mix == "both" else (mix,),
            durable=os.environ.get("BENCH_DURABLE", "1") != "0",
            seed=int(os.environ.get("BENCH_SEED", "7")),
            repeats=max(1, int(os.environ.get("BENCH_REPEATS", "3"))),
            batch_sizes=tuple(sorted({int(s) for s in sizes.split(",")} | {DEFAULT_BATCH_SIZE})),
            floor_sessions=int(os.environ.get("BENCH_FLOOR_SESSIONS", "5000")),
            extras=os.environ.get("BENCH_EXTRAS", "1") != "0",
            ceiling=os.environ.get("BENCH_CEILING", "1") != "0",
            quiet_wait=float(os.environ.get("BENCH_QUIET_WAIT", "30")),
            server_settings=_server_settings(os.environ.get("BENCH_PG_SETTINGS", "")),
            server_url=os.environ.get("BENCH_DATABASE_URL") or None,
            clinicians=os.environ.get("BENCH_CLINICIANS", "1") != "0",
        )


def _server_settings(text: str) -> dict[str, str]:
    """Parse "shared_buffers=6GB, max_wal_size=8GB" into {name: value}."""
    settings = {}
    for item in filter(str.strip, text.split(",")):
        name, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not re.fullmatch(r"[a-z_.]+", name) or not value or "'" in value:
            raise SystemExit(f"BENCH_PG_SETTINGS: expected name=value, got {item.strip()!r}")
        settings[name] = value
    return settings


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def commit() -> str:
    """The checked-out commit, marked dirty when backend/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--", "backend") else "")


def machine() -> dict:
    """What the numbers were measured on."""
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "commit": commit(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "partitions": Settings.model_fields["job_partitions"].default,
        "load_before": round(os.getloadavg()[0], 2),
    }


async def settle(options: Options) -> None:
    """Give other load on the machine a moment to ease before a measurement."""
    waited = await cpu.wait_for_quiet(max_seconds=options.quiet_wait)
    if waited > 1.5:
        say(f"waited {waited:.0f} s for other load on the machine to ease")


async def _batches_with_goals(url: str, job_id: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM migration_batches WHERE job_id = $1::uuid", job_id
        )
    finally:
        await conn.close()


async def engine_run(
    cluster: Cluster,
    work: Path,
    options: Options,
    *,
    dry_run: bool,
    batch_size: int,
    expected: int | None,
    undo: bool = False,
    check_verify: bool = False,
    adaptive: bool = True,
    polls: list[float] | None = None,
) -> dict:
    """One job through the API on a fresh clone, its goals checked against the ceiling's.

    Adaptive, as the API starts jobs by default, unless `adaptive` is false (the size sweep).

    With `undo`, a real run is then rolled back and timed against the hand-written DELETE; with
    `check_verify`, verification is timed on it and must find nothing missing.
    Without a ceiling (`expected` None) nothing is compared here; see _measure. With `polls`,
    every poll's latency is added to it: the caller pools them over runs.
    """
    label = f"{'dry' if dry_run else 'real'}{batch_size}{'' if adaptive else 'fixed'}"
    async with cluster.clone(label) as url:
        await settle(options)
        run = await api.run_job(
            url,
            dry_run=dry_run,
            batch_size=batch_size,
            log_dir=work,
            label=label,
            adaptive=adaptive,
        )
        io = await buffers.read(url)
        created = run.job["stats"]["goals_created"]
        if expected is not None and created != expected:
            raise ceiling.RowSetMismatch(
                f"{label}: the job reports {created} goals created, the ceiling {expected}"
            )
        if polls is not None:
            polls.extend(run.poll_ms)
        rows_file = work / "ceiling.copy"
        summary = {**run.summary(), "buffers": io}
        if expected is None:
            pass
        elif dry_run:
            summary["preview_checked"] = await ceiling.check(
                url, rows_file, engine_rows_sql=PREVIEW_ROWS_SQL, label=label, subset=True
            )
        else:
            summary["goals_checked"] = await ceiling.check(
                url, rows_file, engine_rows_sql=ceiling.ROWS_SQL, label=label
            )
        if not dry_run:
            summary["batches_with_goals"] = await _batches_with_goals(url, run.job["id"])
            if check_verify:
                await settle(options)
                summary["verify"] = await verify_run(url)
            if undo:
                summary["rollback"] = await rollback_run(cluster, url, work, options, run.job)
    say(
        f"{label}: {summary['seconds']:.2f} s (wall {summary['wall_seconds']:.2f} s, "
        f"CPU {summary['profile']['backend_cpu_seconds']:.2f} s in PostgreSQL, "
        f"{summary['service_cpu_seconds']:.2f} s in the service, other load "
        f"{summary['background_cores']} cores), "
        f"poll p99 {summary['poll_p99_ms']} ms, peak RSS {summary['rss_peak_mb']} MB"
    )
    return summary


async def verify_run(url: str) -> dict:
    """GET /verify's work, timed in-process, right after the real run at `url`.

    It walks every session with the engine's rules read-only, so it must find nothing missing.
    """
    settings = Settings(database_url=url, _env_file=None)
    db = create_engine(settings)
    try:
        began = time.perf_counter()
        result = await verify.report(db, partition_count=settings.job_partitions)
        seconds = time.perf_counter() - began
    finally:
        await db.dispose()
    if not result["all_items_accounted"]:
        raise ceiling.RowSetMismatch(
            f"verify after a real run: {result['goals_missing']} goals missing, expected none"
        )
    say(f"verify: {seconds:.2f} s, nothing missing")
    return {"seconds": round(seconds, 3), "goals_missing": result["goals_missing"]}


async def rollback_run(cluster: Cluster, url: str, work: Path, options: Options, job: dict) -> dict:
    """The real run at `url` undone twice from identical copies: by a rollback job, by DELETE."""
    created = job["stats"]["goals_created"]
    async with cluster.clone("delete", source=url) as copy:
        await settle(options)
        baseline = await rollback.delete(copy, job["id"])
    await settle(options)
    run = await api.run_job(
        url,
        dry_run=False,
        batch_size=DEFAULT_BATCH_SIZE,
        log_dir=work,
        label="rollback",
        rollback_of=job["id"],
    )
    deleted = run.job["stats"]["goals_deleted"]
    left, partitions = await rollback.outcome(url, target_id=job["id"], rollback_id=run.job["id"])
    if not created == deleted == baseline.goals_deleted or left:
        raise rollback.RollbackMismatch(
            f"the run created {created} goals; the rollback job deleted {deleted} and left "
            f"{left}, the DELETE removed {baseline.goals_deleted}"
        )
    say(
        f"rollback: {run.seconds:.2f} s (partitions deleted {partitions}); "
        f"DELETE: {baseline.seconds:.2f} s; {deleted:,} goals"
    )
    return {
        "seconds": round(run.seconds, 3),
        "goals_deleted": deleted,
        "partitions_deleted": partitions,
        "cpu_seconds": run.profile["backend_cpu_seconds"],
        "avg_backends": run.profile["avg_backends"],
        "service_cpu_seconds": round(run.service_cpu_seconds, 2),
        "poll_p99_ms": run.summary()["poll_p99_ms"],
        "delete_seconds": round(baseline.seconds, 3),
        "delete_cpu_seconds": round(baseline.cpu_seconds, 2),
    }


CLINICIANS_IDLE_SECONDS = 15
# The clinicians stay for the run or this long, whichever ends first: a job that yields to
# them takes far longer beside them than alone, and goes back to full speed once they leave.
CLINICIANS_WINDOW_SECONDS = 60


async def clinicians_phase(cluster: Cluster, work: Path, options: Options) -> dict:
    """The clinicians' latency with no migration; during a real run with fixed batches that
    does not yield to them (share_above_sessions off: runs as they were before issue 23); and
    during an adaptive run with the service's defaults, which shares the database with them."""
    async with cluster.clone("clinicians_idle") as url:
        await settle(options)
        idle = await clinicians.idle(url, CLINICIANS_IDLE_SECONDS)
    say(f"clinicians, no migration: p50 {idle['p50_ms']} ms, p99 {idle['p99_ms']} ms")
    during = {}
    for mode, params in (("fixed", {"share_above_sessions": 0}), ("adaptive", {})):
        async with cluster.clone(f"clinicians_{mode}") as url:
            await settle(options)
            during[mode] = await _beside_clinicians(url, work, mode, params)
        seen = during[mode]
        say(
            f"clinicians, during a {mode} run ({seen['window_seconds']:.1f} s of its "
            f"{seen['run_seconds']:.1f} s, {seen['sessions_in_window']:,} sessions): "
            f"p50 {seen['p50_ms']} ms, p99 {seen['p99_ms']} ms"
        )
    return {
        "clients": clinicians.CLIENTS,
        "window_seconds": CLINICIANS_WINDOW_SECONDS,
        "idle": idle,
        **during,
        "p99_fixed_vs_idle": round(during["fixed"]["p99_ms"] / idle["p99_ms"], 2),
        "p99_adaptive_vs_idle": round(during["adaptive"]["p99_ms"] / idle["p99_ms"], 2),
    }


async def _beside_clinicians(url: str, work: Path, mode: str, params: dict) -> dict:
    """One real run with the clinicians at work from its start until it ends or they leave."""
    async with clinicians.Workload(url) as workload:
        await asyncio.sleep(2)  # connections open, caches warm
        run = await api.run_job(
            url,
            dry_run=False,
            batch_size=DEFAULT_BATCH_SIZE,
            log_dir=work,
            label=f"clinicians_{mode}",
            adaptive=mode == "adaptive",
            params=params,
            on_started=functools.partial(workload.measure, CLINICIANS_WINDOW_SECONDS),
            on_ended=workload.end,
        )
    started_at = datetime.fromisoformat(run.job["started_at"])
    conn = await asyncpg.connect(url)
    try:
        in_window = await conn.fetchval(
            "SELECT coalesce(sum(processed), 0) FROM migration_batches "
            "WHERE job_id = $1::uuid AND inserted_at <= $2",
            run.job["id"],
            workload.ended_at,
        )
    finally:
        await conn.close()
    return {
        **workload.seen,
        "params": params,
        "run_seconds": round(run.seconds, 3),
        "window_seconds": round(
            min((workload.ended_at - started_at).total_seconds(), run.seconds), 1
        ),
        "sessions_in_window": int(in_window),
        "sessions": run.job["stats"]["sessions_processed"],
        "batch_size": run.batch_size,
        "poll_p99_ms": run.summary()["poll_p99_ms"],
    }


async def explain_plans(cluster: Cluster, options: Options) -> list:
    """EXPLAIN (ANALYZE, BUFFERS) of engine batches, early and late in a run, and the ceiling."""
    async with cluster.clone("explain") as url:
        await settle(options)
        plans = await explain.engine_batches(url, batch_size=DEFAULT_BATCH_SIZE)
        plans.append(await explain.ceiling(url))
        await explain.reopen_batch(url, batch_size=DEFAULT_BATCH_SIZE)
        plans += await explain.engine_batches(
            url,
            batch_size=DEFAULT_BATCH_SIZE,
            variants=explain.LATE_VARIANTS,
            context="late in a run: all other goals migrated",
        )
    say("explain: " + ", ".join(f"{p.label} {p.execution_ms:.1f} ms" for p in plans))
    return plans


async def measure_all(options: Options, work: Path) -> list[dict]:
    """Each data mix measured in turn on one server."""
    cluster = Cluster(
        durable=options.durable, settings=options.server_settings, server_url=options.server_url
    )
    return [await measure(options, mix, cluster, work) for mix in options.mixes]


async def measure(options: Options, mix: str, cluster: Cluster, work: Path) -> dict:
    """Every measurement, on identical copies of one database; the results as a dict."""
    result = await _measure(options, mix, cluster, work, started := time.perf_counter())
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    return result


async def _measure(
    options: Options, mix: str, cluster: Cluster, work: Path, started: float
) -> dict:
    facts = await cluster.build_template(sessions=options.sessions, seed=options.seed, mix=mix)
    say(
        f"template ({mix}): {facts.sessions:,} sessions, {facts.items:,} items, "
        f"{facts.database_mb} MB, fsync {facts.fsync} ({time.perf_counter() - started:.1f} s)"
    )

    # The repeats interleave the ceiling, the floor and the engine, so that load from others
    # on the machine falls on all of them alike rather than on whichever ran during it.
    ceilings, ceiling_io, floors, reals, drys = [], [], [], [], []
    # A dry run lasts about 15 polls, so its own p99 is its slowest poll; the bar's p99 is
    # over every poll taken while the mix's real and dry runs ran (about 250).
    polls: list[float] = []
    expected = None
    for i in range(options.repeats):
        if options.ceiling:
            async with cluster.clone("ceiling") as url:
                await settle(options)
                ceilings.append(await ceiling.run(url))
                ceiling_io.append(await buffers.read(url))
                if i == 0:
                    await ceiling.export_rows(url, work / "ceiling.copy")
            say(
                f"ceiling: {ceilings[-1].seconds:.2f} s ({ceilings[-1].cpu_seconds:.2f} CPU s, "
                f"other load {ceilings[-1].background_cores} cores), "
                f"{ceilings[-1].goals_created:,} goals"
            )
            expected = ceilings[0].goals_created
            if ceilings[-1].goals_created != expected:
                raise ceiling.RowSetMismatch("the ceiling created a different number of goals")
        if options.extras:
            async with cluster.clone("floor") as url:
                await settle(options)
                floors.append(await floor.run(url, sessions=options.floor_sessions))
            say(f"floor: {floors[-1].items:,} items in {floors[-1].seconds:.2f} s")
        for runs, dry_run in ((reals, False), (drys, True)):
            runs.append(
                await engine_run(
                    cluster,
                    work,
                    options,
                    dry_run=dry_run,
                    batch_size=DEFAULT_BATCH_SIZE,
                    expected=expected,
                    undo=options.extras and not dry_run and i == 0,
                    check_verify=not dry_run,
                    polls=polls,
                )
            )
    # The dry run predicts the real run: with or without a ceiling, they must agree.
    predicted = {r["stats"]["goals_created"] for r in drys}
    if predicted != {r["stats"]["goals_created"] for r in reals}:
        raise ceiling.RowSetMismatch(f"dry runs predicted {predicted} goals; real runs differ")
    naive = min(floors, key=lambda f: f.seconds) if floors else None
    undo = reals[0].pop("rollback", None)
    real = min(reals, key=lambda r: r["seconds"])
    dry = min(drys, key=lambda r: r["seconds"])
    verify_seconds = min(r["verify"]["seconds"] for r in reals)
    real_times = [r["seconds"] for r in reals]
    dry_times = [r["seconds"] for r in drys]
    # Fixed sizes, each as adaptive=false keeps it: what a size costs, and where adaptive lands.
    sweep = [
        await engine_run(
            cluster,
            work,
            options,
            dry_run=False,
            batch_size=size,
            expected=expected,
            adaptive=False,
        )
        for size in options.batch_sizes
    ]
    plans = await explain_plans(cluster, options) if options.extras else []
    workload = await clinicians_phase(cluster, work, options) if options.clinicians else None
    partitions = Settings.model_fields["job_partitions"].default
    estimated = -(-facts.candidate_sessions // DEFAULT_BATCH_SIZE)
    statement_seconds = estimated * plans[0].execution_ms / 1000 if plans else None
    items_per_second = facts.items / real["seconds"]
    best = min(ceilings, key=lambda c: c.seconds) if ceilings else None

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": options.seed,
        "repeats": options.repeats,
        "default_batch_size": DEFAULT_BATCH_SIZE,
        "data": asdict(facts)
        | {"server_settings": options.server_settings, "external_server": bool(options.server_url)},
        "ceiling": best
        and {
            "seconds": round(best.seconds, 3),
            "goals_created": expected,
            "cpu_seconds": round(best.cpu_seconds, 2),
            "buffers": ceiling_io[ceilings.index(best)],
            "runs": [round(c.seconds, 3) for c in ceilings],
            "background_cores": [c.background_cores for c in ceilings],
        },
        "floor": naive
        and {
            **asdict(naive),
            "seconds": round(naive.seconds, 3),
            "runs": [round(f.seconds, 3) for f in floors],
        },
        "real": real,
        "rollback": undo,
        "real_runs": real_times,
        "real_background_cores": [r["background_cores"] for r in reals],
        "dry": dry,
        "dry_runs": dry_times,
        "verify_runs": [r["verify"]["seconds"] for r in reals],
        "sweep": sweep,
        "explain": [p.as_dict() for p in plans],
        "clinicians": workload,
        "batches": plans
        and {
            "with_goals": real["batches_with_goals"],
            "estimated": estimated,
            "statement_seconds": round(statement_seconds, 2),
            "statement_share": round(statement_seconds / (real["seconds"] * partitions), 3),
        },
        "checks": {"row_sets": _row_sets_check(expected, real["stats"]["goals_created"])},
        "ratios": {
            "real_vs_ceiling_throughput": best and round(best.seconds / real["seconds"], 3),
            "real_vs_ceiling_throughput_median": best
            and round(
                statistics.median(c.seconds for c in ceilings) / statistics.median(real_times), 3
            ),
            "real_vs_floor_throughput": naive
            and round(items_per_second / (naive.items / naive.seconds), 1),
            "dry_vs_ceiling_time": best and round(dry["seconds"] / best.seconds, 3),
            "dry_vs_real_time": round(dry["seconds"] / real["seconds"], 3),
            "verify_vs_ceiling_time": best and round(verify_seconds / best.seconds, 3),
            "rollback_vs_delete_time": undo and round(undo["seconds"] / undo["delete_seconds"], 3),
            "real_vs_ceiling_database_cpu": best
            and round(real["profile"]["backend_cpu_seconds"] / best.cpu_seconds, 3),
            "poll_p99_ms": api.percentile(polls, 99),
            "polls": len(polls),
            "rss_peak_mb": max(real["rss_peak_mb"], dry["rss_peak_mb"]),
        },
    }


def _row_sets_check(expected: int | None, created: int) -> str:
    if expected is None:
        return (
            f"no ceiling at this size (BENCH_CEILING=0); every real run created {created:,} "
            "goals, the number every dry run predicted."
        )
    return (
        f"every real run's {expected:,} goals equal the ceiling's (EXCEPT ALL both ways on "
        "patient, session, description, category, created_at); every dry run reported "
        f"{expected:,} goals to create and previewed only ceiling rows."
    )


def main() -> int:
    options = Options.from_env()
    if unknown := set(options.mixes) - set(demo.MIXES):
        print(
            f"BENCH_MIX: no mix {', '.join(sorted(unknown))}; "
            f"use both or one of {', '.join(demo.MIXES)}",
            file=sys.stderr,
        )
        return 2
    about = machine()
    say(f"{options}")
    try:
        with tempfile.TemporaryDirectory(prefix="gm-bench-work-") as work:
            results = asyncio.run(measure_all(options, Path(work)))
    except (ceiling.RowSetMismatch, rollback.RollbackMismatch, api.JobFailed, ServerFailed) as exc:
        print(f"\nBENCH FAILED: {exc}", file=sys.stderr)
        return 1
    about["load_after"] = round(os.getloadavg()[0], 2)
    for result in results:
        result["machine"] = about
        saved = report.save(result)
    page = report.write(saved)
    for result in results:
        mix = result["data"]["mix"]
        print(f"\n{mix}, {result['data']['sessions']:,} sessions:")
        for key, label, bar, higher in report.BARS:
            value = result["ratios"][key]
            shown = "–" if value is None else f"{value:.2f}"
            print(f"  {label:<48} {shown:>9}   bar {'>=' if higher else '<='} {bar:g}")
        dry_vs_real = result["ratios"]["dry_vs_real_time"]
        print(f"  {'dry run time / real run time':<48} {dry_vs_real:>9.2f}")
        for line in report.growth_lines(saved, mix, report.server(result)):
            print(f"  {line}")
    print(f"\nwrote {page.relative_to(report.ROOT)} and {report.RESULTS.relative_to(report.ROOT)}")
    return 0
