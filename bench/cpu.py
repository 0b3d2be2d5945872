"""CPU time from /proc: ours, which other load cannot inflate, and that other load itself."""

import asyncio
import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def seconds(pid: int) -> float | None:
    """User plus system CPU seconds of `pid`, or None once it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, anything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


class Background:
    """How many cores everything else on the machine kept busy while we measured.

    Start it, run the measurement, then call `cores` with the CPU seconds our own processes
    (PostgreSQL backends, the service) used; the benchmark process itself is counted here.
    """

    def __init__(self) -> None:
        self._busy = busy_seconds()
        self._own = seconds(os.getpid()) or 0.0
        self._started = time.monotonic()

    def cores(self, ours: float) -> float:
        elapsed = time.monotonic() - self._started
        own = (seconds(os.getpid()) or 0.0) - self._own
        other = busy_seconds() - self._busy - own - ours
        return round(max(other, 0.0) / elapsed, 2) if elapsed else 0.0


async def wait_for_quiet(*, max_seconds: float, below_cores: float = 0.5) -> float:
    """Wait (at most `max_seconds`) until others keep fewer than `below_cores` cores busy.

    Returns the seconds waited. On a shared machine this lets each measurement start when the
    load from others has eased; whatever load remains is measured and reported with the run.
    """
    started = time.monotonic()
    while time.monotonic() - started < max_seconds:
        window = Background()
        await asyncio.sleep(1.0)
        if window.cores(0.0) < below_cores:
            break
    return round(time.monotonic() - started, 1)
