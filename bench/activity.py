"""A sampling profile of the service's database connections, from pg_stat_activity.

Every few milliseconds it notes what each of the service's backends is doing: running which of
the engine's statements, or idle inside a transaction (waiting on Python, the driver or the
network). Averaged over the run, a category's share is how many backends were in it on average,
so the job categories together show how much of the two cores the engine really used. It also
reads each backend's CPU time from /proc, which other load on the machine cannot inflate.
"""

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from bench import cpu

# First words of each statement the service sends, and the name the report gives them.
KINDS = (
    ("WITH batch AS", "batch statement"),
    ("SELECT patient_id FROM (", "next batch bound"),
    ("WITH saved AS (UPDATE migration_job_partitions", "save progress"),
    ("SAVEPOINT", "savepoint"),
    ("RELEASE SAVEPOINT", "savepoint"),
    ("BEGIN", "begin"),
    ("COMMIT", "commit"),
    ("SELECT count(*) FROM therapy_sessions", "count candidates"),
    ("UPDATE migration_jobs SET heartbeat_at", "heartbeat"),
    ("UPDATE migration_jobs SET status = 'interrupted'", "poll: stale-job check"),
    ("SELECT j.*", "poll: read job"),
    ("DELETE FROM migration_findings", "trim findings"),
)

CPU_EVERY = 10

_SAMPLE_SQL = """
SELECT pid, state, left(query, 64) AS query, wait_event_type
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'goal-migration'
"""


def kind(query: str) -> str:
    """The report's name for a statement, from its first words."""
    head = " ".join(query.split())
    for prefix, name in KINDS:
        if head.startswith(prefix):
            return name
    return "other"


@dataclass
class Profile:
    """Samples taken, and per category the number of backends seen in it."""

    interval: float
    samples: int = 0
    seen: Counter = field(default_factory=Counter)
    waits: Counter = field(default_factory=Counter)
    cpu: dict[int, float] = field(default_factory=dict)  # last reading per backend pid

    def backends(self) -> dict[str, float]:
        """Average number of backends in each category, largest first."""
        if not self.samples:
            return {}
        return {name: round(n / self.samples, 3) for name, n in self.seen.most_common()}

    def as_dict(self) -> dict:
        return {
            "interval_ms": round(self.interval * 1000),
            "samples": self.samples,
            "backends_seen": len(self.cpu),
            "backend_cpu_seconds": round(sum(self.cpu.values()), 2),
            "avg_backends": self.backends(),
            "waits": {name: round(n / max(self.samples, 1), 3) for name, n in self.waits.items()},
        }


async def sample(url: str, stop: asyncio.Event, *, interval: float = 0.025) -> Profile:
    """Sample until `stop` is set; return the profile."""
    profile = Profile(interval=interval)
    conn = await asyncpg.connect(url)
    try:
        statement = await conn.prepare(_SAMPLE_SQL)
        next_at = time.monotonic()
        while not stop.is_set():
            rows = await statement.fetch()
            profile.samples += 1
            for row in rows:
                # /proc is read in this event loop, which also times the API's polls: every
                # CPU_EVERY samples is enough, since a job's backends live as long as the run.
                if profile.samples % CPU_EVERY == 1 or row["pid"] not in profile.cpu:
                    used = cpu.seconds(row["pid"])
                    if used is not None:
                        profile.cpu[row["pid"]] = used
                if row["state"] not in ("active", "idle in transaction"):
                    continue
                name = kind(row["query"])
                if row["state"] == "idle in transaction":
                    name = f"client, in transaction (after {name})"
                elif row["wait_event_type"]:
                    profile.waits[f"{name}: {row['wait_event_type']}"] += 1
                profile.seen[name] += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await conn.close()
    for pid in profile.cpu:  # the last reading of each backend still running
        used = cpu.seconds(pid)
        if used is not None:
            profile.cpu[pid] = used
    return profile
