"""What clinicians feel during a migration: the platform's own workload, timed from outside.

A few dozen therapists at work, as the database sees them: each client picks one of its
patients and reads their goals, reads their last sessions, adds a goal, or moves a goal's
status on, then thinks for a moment. Every request is one statement on its own connection,
as the platform's application pool would send it. Latency is measured per request from the
client: the time a clinician waits. The text it writes is synthetic, never a session's.
"""

import asyncio
import contextlib
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field

import asyncpg

CLIENTS = 24
THINK_SECONDS = (0.05, 0.15)  # between one request of a client and its next
PATIENTS = 2000  # the patients the clinicians look after, drawn from the sessions

_PATIENTS_SQL = """
SELECT patient_id, therapist_id FROM therapy_sessions TABLESAMPLE SYSTEM (5) LIMIT $1
"""
REQUESTS = {
    "read goals": (
        "SELECT id, description, category, status, created_at FROM treatment_goals "
        "WHERE patient_id = $1 ORDER BY created_at DESC LIMIT 50"
    ),
    # The platform indexes sessions by therapist (ix_therapy_sessions_therapist_id): a
    # therapist opens their own last sessions with the patient.
    "read sessions": (
        "SELECT id, session_date, extracted_notes FROM therapy_sessions "
        "WHERE therapist_id = $2 AND patient_id = $1 ORDER BY session_date DESC LIMIT 10"
    ),
    "add goal": (
        "INSERT INTO treatment_goals (patient_id, therapist_id, description, status) "
        "VALUES ($1, $2, $3, 'assigned')"
    ),
    "change status": (
        "UPDATE treatment_goals SET status = 'in_progress', updated_at = now() "
        "WHERE id = (SELECT id FROM treatment_goals WHERE patient_id = $1 "
        "            ORDER BY created_at DESC LIMIT 1)"
    ),
}
# How often each request comes, out of ten: therapists mostly read.
MIX = ["read goals"] * 4 + ["read sessions"] * 3 + ["add goal"] * 2 + ["change status"]


@dataclass
class Latencies:
    """Milliseconds per request, by kind."""

    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def add(self, kind: str, ms: float) -> None:
        self.by_kind.setdefault(kind, []).append(ms)

    def summary(self) -> dict:
        every = [ms for values in self.by_kind.values() for ms in values]
        return {
            "requests": len(every),
            "p50_ms": _pct(every, 50),
            "p99_ms": _pct(every, 99),
            "by_kind": {
                kind: {"requests": len(v), "p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99)}
                for kind, v in sorted(self.by_kind.items())
            },
        }


def _pct(values: list[float], pct: int) -> float | None:
    if len(values) < 2:
        return round(values[0], 2) if values else None
    return round(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 2)


async def _client(url: str, people: list, stop: asyncio.Event, seen: Latencies, seed: int):
    rng = random.Random(seed)
    conn = await asyncpg.connect(url, server_settings={"application_name": "clinician"})
    try:
        while not stop.is_set():
            patient, therapist = rng.choice(people)
            kind = rng.choice(MIX)
            args = (patient, therapist, f"Synthetic goal {uuid.uuid4()}")
            args = args[: {"add goal": 3, "read sessions": 2}.get(kind, 1)]
            began = time.perf_counter()
            await conn.execute(REQUESTS[kind], *args)
            seen.add(kind, (time.perf_counter() - began) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(*THINK_SECONDS))
    finally:
        await conn.close()


class Workload:
    """The clinicians at work on `url` until stopped; `measure()` opens a window of interest."""

    def __init__(self, url: str, *, clients: int = CLIENTS, seed: int = 7):
        self.url, self.clients, self.seed = url, clients, seed
        self.stop = asyncio.Event()
        self.window = Latencies()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "Workload":
        conn = await asyncpg.connect(self.url)
        try:
            people = [tuple(r) for r in await conn.fetch(_PATIENTS_SQL, PATIENTS)]
        finally:
            await conn.close()
        self._tasks = [
            asyncio.create_task(_client(self.url, people, self.stop, self.window, self.seed + i))
            for i in range(self.clients)
        ]
        return self

    def measure(self) -> Latencies:
        """Start a fresh window: requests from now on count in it (warm-up left out)."""
        self.window.by_kind = {}
        return self.window

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.gather(*self._tasks)


async def idle(url: str, seconds: float) -> dict:
    """The workload alone: what clinicians feel when no migration runs."""
    async with Workload(url) as work:
        await asyncio.sleep(2)  # connections open, caches warm
        window = work.measure()
        await asyncio.sleep(seconds)
        return window.summary()
