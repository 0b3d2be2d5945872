"""The engine as an admin uses it: start a job over HTTP, poll it every 100 ms until it ends.

Each poll's latency is recorded, and the server's resident memory read at each poll and at the
end. The job's own started_at and finished_at give its time; the wall clock is kept beside it.
"""

import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from app import security
from app.models.migration_job import TERMINAL_STATUSES
from bench import activity, cpu
from bench.server import Server, memory_mb

POLL_INTERVAL = 0.1
PREFIX = "/admin/migrations/goals"


class JobFailed(Exception):
    """The job did not succeed, or the API answered with an error."""


@dataclass
class JobRun:
    """One job through the API: its final state and what we measured around it."""

    dry_run: bool
    batch_size: int
    job: dict
    seconds: float
    wall_seconds: float
    poll_ms: list[float] = field(default_factory=list)
    rss_peak_mb: float = 0.0
    rss_max_sampled_mb: float = 0.0
    service_cpu_seconds: float = 0.0
    background_cores: float = 0.0
    profile: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The run as the results file keeps it (latencies reduced to percentiles)."""
        return {
            "dry_run": self.dry_run,
            "batch_size": self.batch_size,
            "job_id": self.job["id"],
            "seconds": round(self.seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "stats": self.job["stats"],
            "polls": len(self.poll_ms),
            "poll_p50_ms": percentile(self.poll_ms, 50),
            "poll_p99_ms": percentile(self.poll_ms, 99),
            "poll_max_ms": round(max(self.poll_ms), 2) if self.poll_ms else None,
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_max_sampled_mb": round(self.rss_max_sampled_mb, 1),
            "service_cpu_seconds": round(self.service_cpu_seconds, 2),
            "background_cores": self.background_cores,
            "profile": self.profile,
        }


def percentile(values: list[float], pct: int) -> float | None:
    """The pct-th percentile (inclusive method), rounded to 0.01."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 2)


def _seconds(job: dict) -> float:
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


async def run_job(
    database_url: str,
    *,
    dry_run: bool,
    batch_size: int,
    log_dir: Path,
    label: str,
    rollback_of: str | None = None,
    adaptive: bool = True,
    params: dict | None = None,
    on_started: Callable[[], Awaitable] | None = None,
    on_ended: Callable[[], Awaitable] | None = None,
) -> JobRun:
    """Start the service on `database_url`, run one job through it, stop the service.

    The job migrates, or with `rollback_of` (a job id) rolls that job back. `adaptive` false
    keeps batch_size for every batch; true (the API's default) starts there and tunes it.
    `params` go with the start request (a health limit, say). `on_started` is awaited once the
    API has accepted the job, `on_ended` once the job has ended, both while the service still
    runs: what happens between them is the job's doing.
    """
    secret = secrets.token_urlsafe(48)
    token = security.mint(secret=secret, sub="bench", role="admin", ttl_seconds=6 * 3600)
    headers = {"Authorization": f"Bearer {token}"}
    with Server(
        database_url=database_url, jwt_secret=secret, log_path=log_dir / f"server-{label}.log"
    ) as server:
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(activity.sample(database_url, stop_sampling))
        background = cpu.Background()
        try:
            async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as client:
                path = f"{PREFIX}/{rollback_of}/rollback" if rollback_of else PREFIX
                run = await _drive(
                    client,
                    server,
                    path=path,
                    dry_run=dry_run,
                    batch_size=batch_size,
                    adaptive=adaptive,
                    params=params or {},
                    on_started=on_started,
                    on_ended=on_ended,
                )
        finally:
            stop_sampling.set()
            profile = await sampler
        run.profile = profile.as_dict()
        run.background_cores = background.cores(
            run.profile["backend_cpu_seconds"] + run.service_cpu_seconds
        )
        run.rss_peak_mb = memory_mb(server.pid)["VmHWM"]
    return run


async def _drive(
    client: httpx.AsyncClient,
    server: Server,
    *,
    path: str,
    dry_run: bool,
    batch_size: int,
    adaptive: bool,
    params: dict,
    on_started: Callable[[], Awaitable] | None,
    on_ended: Callable[[], Awaitable] | None,
):
    cpu_before = cpu.seconds(server.pid) or 0.0
    started = time.perf_counter()
    params = params | {"dry_run": str(dry_run).lower(), "batch_size": batch_size}
    response = await client.post(path, params=params | {"adaptive": str(adaptive).lower()})
    if response.status_code != 202:
        raise JobFailed(f"POST {path}: {response.status_code} {response.text}")
    job = response.json()
    if on_started is not None:
        await on_started()
    latencies: list[float] = []
    rss_max = 0.0
    next_at = time.monotonic()
    while job["status"] not in TERMINAL_STATUSES:
        next_at += POLL_INTERVAL
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        server.check_alive()
        sent = time.perf_counter()
        response = await client.get(f"{PREFIX}/{job['id']}")
        latency = (time.perf_counter() - sent) * 1000
        if response.status_code != 200:
            raise JobFailed(f"GET job: {response.status_code} {response.text}")
        job = response.json()
        if job["status"] not in TERMINAL_STATUSES:
            latencies.append(latency)  # the bar is for polls while the job runs
        rss_max = max(rss_max, memory_mb(server.pid)["VmRSS"])
    wall = time.perf_counter() - started
    if on_ended is not None:
        await on_ended()
    service_cpu = (cpu.seconds(server.pid) or 0.0) - cpu_before
    if job["status"] != "succeeded":
        raise JobFailed(f"job {job['id']} ended {job['status']}: {job['error']}" + server.tail())
    return JobRun(
        dry_run=dry_run,
        batch_size=batch_size,
        job=job,
        seconds=_seconds(job),
        wall_seconds=wall,
        poll_ms=latencies,
        rss_max_sampled_mb=rss_max,
        service_cpu_seconds=service_cpu,
    )
