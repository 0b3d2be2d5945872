"""What clinicians feel during a migration: the platform's own workload, timed from outside.

A few dozen therapists at work, as the database sees them: each client picks one of its
patients and reads their goals, reads their last sessions, adds a goal, or moves a goal's
status on, then thinks for a moment. Every request is one statement on its own connection,
as the platform's application pool would send it. Latency is measured per request from the
client: the time a clinician waits. The text it writes is synthetic, never a session's.
"""

import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

CLIENTS = 24
THINK_SECONDS = (0.05, 0.15)  # between one request of a client and its next
PATIENTS = 2000  # the patients the clinicians look after, drawn from the sessions
_REPO = Path(__file__).resolve().parent.parent  # where `python -m bench.clinicians` runs

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
    """The clinicians at work on `url`, in a process of their own, until the block ends.

    The platform is another application: its clients must not share an event loop (or a core's
    turn) with the benchmark's own poller and profiler, whose delays would be counted as the
    clinicians'. The child takes one command per line on stdin: `measure` opens a fresh window
    (warm-up left out), `summary` prints the window as one JSON line.
    """

    def __init__(self, url: str, *, clients: int = CLIENTS, seed: int = 7):
        self.url, self.clients, self.seed = url, clients, seed
        self._child: asyncio.subprocess.Process | None = None
        self.seen: dict = {}
        self.ended_at: datetime | None = None
        self._leaving: asyncio.Task | None = None

    async def __aenter__(self) -> "Workload":
        self._child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.clinicians", self.url, str(self.clients), str(self.seed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=_REPO,
        )  # fmt: skip
        await self._ask("ready")
        return self

    async def measure(self, seconds: float | None = None) -> None:
        """Start a fresh window: requests from now on count in it; with `seconds`, `end` it
        then unless it has ended before."""
        await self._ask("measure")
        if seconds is not None:
            self._leaving = asyncio.create_task(self._end_after(seconds))

    async def summary(self) -> dict:
        """The window so far, as Latencies.summary gives it."""
        return json.loads(await self._ask("summary"))

    async def end(self) -> None:
        """Close the window and send the clinicians home: `seen` keeps its summary, `ended_at`
        the moment. Once is enough; the block's end does it too."""
        if self._leaving is not None and self._leaving is not asyncio.current_task():
            self._leaving.cancel()
        if self._child.stdin.is_closing():
            return
        self.seen = await self.summary()
        self.ended_at = datetime.now(UTC)
        self._child.stdin.close()
        await self._child.wait()

    async def _end_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.end()

    async def _ask(self, command: str) -> str:
        self._child.stdin.write(f"{command}\n".encode())
        await self._child.stdin.drain()
        line = await self._child.stdout.readline()
        if not line:
            raise RuntimeError(f"the clinicians' workload ended (exit {await self._child.wait()})")
        return line.decode()

    async def __aexit__(self, *exc) -> None:
        await self.end()


async def idle(url: str, seconds: float) -> dict:
    """The workload alone: what clinicians feel when no migration runs."""
    async with Workload(url) as work:
        await asyncio.sleep(2)  # connections open, caches warm
        await work.measure()
        await asyncio.sleep(seconds)
        return await work.summary()


async def _serve(url: str, clients: int, seed: int) -> None:
    """The child: run the clients, answer the parent's commands until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    conn = await asyncpg.connect(url)
    try:
        people = [tuple(r) for r in await conn.fetch(_PATIENTS_SQL, PATIENTS)]
    finally:
        await conn.close()
    stop, window = asyncio.Event(), Latencies()
    tasks = [
        asyncio.create_task(_client(url, people, stop, window, seed + i)) for i in range(clients)
    ]
    try:
        while command := (await reader.readline()).decode().strip():
            if command == "measure":
                window.by_kind = {}
            answer = json.dumps(window.summary()) if command == "summary" else command
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
    finally:
        stop.set()
        await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
