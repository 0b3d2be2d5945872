"""Prometheus metrics: what the job table says, read at scrape time, and what this process saw.

    GET /metrics ─┬─ the job table (goal_migration_job_status, _items_total, _sessions_*,
                  │  _rollback_goals_total, _last_heartbeat_timestamp_seconds): the active jobs
                  │  and the RECENT_JOBS last ended ones, read when scraped, so every replica
                  │  reports a job's totals right whichever replica runs it
                  │  and goal_migration_throttled{reason}: what an active job waits on
                  ├─ this process (goal_migration_batch_duration_seconds, _batch_size): the
                  │  batches its runner committed, through JobRunner's on_batch; plus
                  │  prometheus_client's process_* and python_* collectors
                  └─ goal_migration_database_up: 0 when the job table could not be read in
                     time; the scrape still answers, with this process's metrics

prometheus_client collects synchronously and our database is async, so a scrape reads the job
table first (async, bounded by a statement timeout and READ_TIMEOUT_SECONDS) and then renders
the families it built with this process's registry. With METRICS_PORT, prometheus_client's own
HTTP server answers in its thread and hands the read to the app's event loop.

Labels: job_id, kind, dry_run and fixed words (status, outcome); never a patient or session id,
never text of a session; a throttle's reason is one of throttle.SIGNALS.
"""

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app import logs
from app.jobs import queries, throttle
from app.jobs.runner import BatchEvent
from app.models.migration_job import ACTIVE_STATUSES, JOB_STATUSES

log = logging.getLogger("app")

JOB_LABELS = ("job_id", "kind", "dry_run")
RECENT_JOBS = 10  # ended jobs a scrape reports, beside every active one
STATEMENT_TIMEOUT_MS = 2000
READ_TIMEOUT_SECONDS = 5.0  # connecting included: a scrape never hangs on a database away
# Batches take from milliseconds (a dry run of small ones) to minutes (10,000 sessions with
# long texts on a busy server).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# The job's counters that count action items, by the outcome label they get.
ITEM_OUTCOMES = {
    "created": "goals_created",
    "duplicate": "goals_skipped_duplicate",
    "invalid": "goals_skipped_invalid",
    "failed_session": "items_in_failed_sessions",
}
ROLLBACK_OUTCOMES = {"deleted": "goals_deleted", "kept_modified": "goals_kept_modified"}


def _labels(job: dict[str, Any]) -> list[str]:
    return [str(job["id"]), job["kind"], "true" if job["dry_run"] else "false"]


class Metrics:
    """This process's registry, fed by the runner, and the scrape that adds the job table."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.batch_duration = Histogram(
            "goal_migration_batch_duration_seconds",
            "Time from the start to the commit of each batch this process ran "
            "(the attempt that committed)",
            JOB_LABELS,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Gauge(
            "goal_migration_batch_size",
            "Rows in the last batch this process committed for the job "
            "(sessions for a migration, goals for a rollback)",
            JOB_LABELS,
            registry=self.registry,
        )
        self.database_up = True

    def observe_batch(self, event: BatchEvent) -> None:
        """The runner's on_batch: one committed batch. Never lets a failure reach the job."""
        try:
            labels = _labels(event.job)
            self.batch_duration.labels(*labels).observe(event.seconds)
            rows = (
                event.stats.get("sessions_processed", 0)
                if event.job["kind"] == "migrate"
                else sum(event.stats.get(n, 0) for n in ROLLBACK_OUTCOMES.values())
            )
            self.batch_size.labels(*labels).set(rows)
        except Exception:  # a metric must never stop a migration
            log.exception("recording a batch's metrics failed", extra=logs.event("metrics.error"))

    async def collect(self, db: AsyncEngine) -> list[Metric]:
        """Every family a scrape shows: the job table's, read now, then this process's."""
        jobs = await self._read_jobs(db)
        return [*job_families(jobs), *self.registry.collect()]

    async def _read_jobs(self, db: AsyncEngine) -> list[dict] | None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS), db.begin() as conn:
                jobs = await queries.jobs_to_report(
                    conn, recent=RECENT_JOBS, timeout_ms=STATEMENT_TIMEOUT_MS
                )
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            if self.database_up:  # said once per outage, not once per scrape
                log.warning(
                    "metrics: the job table could not be read (%s); reporting "
                    "goal_migration_database_up 0 until it can",
                    logs.failure(exc)["error"],
                    extra=logs.event("metrics.database_unavailable", **logs.failure(exc)),
                )
            self.database_up = False
            return None
        if not self.database_up:
            log.info(
                "metrics: the job table can be read again",
                extra=logs.event("metrics.database_available"),
            )
        self.database_up = True
        return jobs


def job_families(jobs: list[dict] | None) -> list[Metric]:
    """The job table as metric families; None (not read) gives only database_up 0."""
    up = GaugeMetricFamily(
        "goal_migration_database_up",
        "1 when this scrape could read the job table, else 0 (the job metrics are then absent)",
        value=0 if jobs is None else 1,
    )
    if jobs is None:
        return [up]
    status = GaugeMetricFamily(
        "goal_migration_job_status",
        "1 for the job's current status, 0 for the others",
        labels=[*JOB_LABELS, "status"],
    )
    items = CounterMetricFamily(
        "goal_migration_items",
        "Action items a migration job has handled, by outcome (a dry run: would have); "
        "failed_session counts the items of sessions that failed and were rolled back",
        labels=[*JOB_LABELS, "outcome"],
    )
    processed = CounterMetricFamily(
        "goal_migration_sessions_processed",
        "Candidate sessions a migration job has gone through, failed ones included",
        labels=JOB_LABELS,
    )
    failed = CounterMetricFamily(
        "goal_migration_sessions_failed",
        "Sessions whose goals failed to insert and were rolled back (the job's errors)",
        labels=JOB_LABELS,
    )
    candidates = GaugeMetricFamily(
        "goal_migration_candidate_sessions",
        "Candidate sessions a migration job goes through, counted when it started",
        labels=JOB_LABELS,
    )
    rolled_back = CounterMetricFamily(
        "goal_migration_rollback_goals",
        "Goals a rollback job has deleted or kept because they changed since (a dry run: would)",
        labels=[*JOB_LABELS, "outcome"],
    )
    targets = GaugeMetricFamily(
        "goal_migration_rollback_target_goals",
        "Goals of its target jobs a rollback job goes through, counted when it started",
        labels=JOB_LABELS,
    )
    heartbeat = GaugeMetricFamily(
        "goal_migration_last_heartbeat_timestamp_seconds",
        "When the process running an active job last beat (Unix time); a stale one means "
        "that process is gone",
        labels=JOB_LABELS,
    )
    throttled = GaugeMetricFamily(
        "goal_migration_throttled",
        "1 for the health signal an active job waits on (jobs/throttle.py), 0 for the others",
        labels=[*JOB_LABELS, "reason"],
    )
    for job in jobs:
        labels = _labels(job)
        if job["status"] in ACTIVE_STATUSES:
            waiting_on = (job.get("throttle") or {}).get("signal")
            for reason in throttle.SIGNALS:
                throttled.add_metric([*labels, reason], 1 if waiting_on == reason else 0)
        for name in JOB_STATUSES:
            status.add_metric([*labels, name], 1 if job["status"] == name else 0)
        if job["kind"] == "migrate":
            for outcome, counter in ITEM_OUTCOMES.items():
                items.add_metric([*labels, outcome], job[counter])
            processed.add_metric(labels, job["sessions_processed"])
            failed.add_metric(labels, job["errors"])
            total = candidates
        else:
            for outcome, counter in ROLLBACK_OUTCOMES.items():
                rolled_back.add_metric([*labels, outcome], job[counter])
            total = targets
        if job["sessions_total"] is not None:
            total.add_metric(labels, job["sessions_total"])
        if job["status"] in ACTIVE_STATUSES and job["heartbeat_at"] is not None:
            heartbeat.add_metric(labels, job["heartbeat_at"].timestamp())
    families = [
        status,
        items,
        processed,
        failed,
        candidates,
        rolled_back,
        targets,
        heartbeat,
        throttled,
    ]
    return [up, *(family for family in families if family.samples)]


class _Families:
    """A collector over families already built: what the exposition functions render."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def endpoint(request: Request) -> Response:
    """GET /metrics on the app: the families read now, in the format the scraper asks for."""
    state = request.app.state
    families = await state.metrics.collect(state.db)
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(_Families(families)), headers={"Content-Type": content_type})


class _FromLoop:
    """A collector for prometheus_client's server thread: the app's loop does the reading."""

    def __init__(self, metrics: Metrics, db: AsyncEngine, loop: asyncio.AbstractEventLoop):
        self.metrics, self.db, self.loop = metrics, db, loop

    def collect(self) -> Iterable[Metric]:
        future = asyncio.run_coroutine_threadsafe(self.metrics.collect(self.db), self.loop)
        try:
            return future.result(READ_TIMEOUT_SECONDS + 1)
        except (TimeoutError, RuntimeError, concurrent.futures.CancelledError):
            # The loop is stopping or stuck: this process's own numbers, and say so.
            future.cancel()
            return [*job_families(None), *self.metrics.registry.collect()]


class Exporter:
    """prometheus_client's HTTP server on a port of its own, serving the app's metrics."""

    def __init__(self, metrics: Metrics, db: AsyncEngine, *, host: str, port: int):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_FromLoop(metrics, db, asyncio.get_running_loop()))
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self.server.server_port

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
