"""The database's health, read between batches: when a job should wait, and why.

Every signal is read from PostgreSQL itself, in one statement (SIGNALS_SQL), except three the
runner measures: the longest time another session waited on a lock the job's connections hold
and how many other sessions are at work (WATCH_SQL, sampled while batches run, since between
batches the job holds no lock), and the job's own batch time against its recent median.
`decide` turns readings and the job's limits into a Trip (or None), so the decision is tested
on rows captured from the real views:

    anti-wraparound vacuum on therapy_sessions or treatment_goals   always yields
    standby replay lag (pg_stat_replication), seconds and bytes     max_replay_lag_seconds/_bytes
    logical replication slots, bytes not yet confirmed              max_replay_lag_bytes
    WAL archiver backlog, segments not yet archived                 max_archive_backlog
    autovacuum on either table, called for by its dead rows         yield_to_autovacuum
    another session waiting on the job's locks                      max_lock_wait_seconds
    batch time per row (last 3 batches) over its recent median      max_batch_slowdown
    other sessions at work in the last second (clinicians)          share_above_sessions

Every signal but the last makes the job wait. The last makes it share: while clinicians work,
one short batch runs at a time and rests follow it, so that batches take THROTTLE_SHARE_DUTY
(3%) of the time and few of the clinicians' statements meet one (docs/BENCHMARKS.md measures
what they feel). On an otherwise idle database the job runs at full speed.

A limit set to null turns its signal off. Seeing the replication and vacuum views in full takes
the pg_monitor role (docs/RELIABILITY.md): without it those rows read as no lag and no vacuum.
"""

import dataclasses
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# The job's own batches: per-row time of the last this many, and how many before it judges.
SLOWDOWN_WINDOW = 20
SLOWDOWN_LATEST = 3
SLOWDOWN_MIN_BATCHES = 5
_TABLES = ("therapy_sessions", "treatment_goals")


@dataclass(frozen=True)
class Limits:
    """The thresholds a job yields to; defaults from the settings, changeable while it runs."""

    max_replay_lag_seconds: float | None = 5.0
    max_replay_lag_bytes: int | None = 256 * 2**20
    max_archive_backlog: int | None = 32
    yield_to_autovacuum: bool = True
    max_lock_wait_seconds: float | None = 0.2
    max_batch_slowdown: float | None = 4.0
    share_above_sessions: int | None = 2

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, default: "Limits") -> "Limits":
        """`default` with the known keys of `values` (a job's stored limits) laid over it."""
        known = {k: v for k, v in (values or {}).items() if k in cls.names()}
        return dataclasses.replace(default, **known)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def off_if_zero(value: Any) -> Any:
    """Settings, the API and the command line say 0 to turn a numeric limit off."""
    return None if value == 0 and not isinstance(value, bool) else value


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The limits a request or a command line names (None: not named), 0 turned into off."""
    return {
        name: off_if_zero(value)
        for name, value in values.items()
        if name in Limits.names() and value is not None
    }


@dataclass(frozen=True)
class Trip:
    """A signal over its limit: what the job waits on."""

    signal: str
    value: float | None
    threshold: float | None
    unit: str | None
    where: str | None = None  # which standby, slot or table

    @property
    def sharing(self) -> bool:
        """The job goes on at a small share of the time (THROTTLE_SHARE_DUTY) instead of waiting."""
        return self.signal in SHARING

    @property
    def message(self) -> str:
        """In words, e.g. "standby replay lag 12.4 s, limit 5 s"."""
        if self.signal == "clinicians_active":
            return f"{self.value:.0f} other sessions at work, limit {self.threshold:.0f}"
        name = _NAMES[self.signal]
        if self.where:
            name += f" ({self.where})" if self.signal not in _ON_TABLE else f" on {self.where}"
        if self.value is None:
            return name
        said = f"{name} {_amount(self.value, self.unit)}"
        return f"{said}, limit {_amount(self.threshold, self.unit)}" if self.threshold else said

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_NAMES = {
    "anti_wraparound_vacuum": "anti-wraparound vacuum, which always goes first",
    "replay_lag_seconds": "standby replay lag",
    "replay_lag_bytes": "standby replay lag",
    "slot_lag_bytes": "logical replication slot lag",
    "archive_backlog": "WAL archive backlog",
    "autovacuum": "autovacuum",
    "lock_waits": "a session waited on the job's locks for",
    "batch_slowdown": "batch time over its recent median",
    "clinicians_active": "other sessions at work in the last second",
}
SHARING = ("clinicians_active",)
_ON_TABLE = ("anti_wraparound_vacuum", "autovacuum")
SIGNALS = tuple(_NAMES)


def _amount(value: float | None, unit: str | None) -> str:
    if value is None:
        return "?"
    if unit == "bytes":
        for name, size in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{value:.0f} bytes"
    # Below 1, two significant digits: a lock wait limit of 0.05 s must not read "0.1 s".
    number = f"{value:.1f}".removesuffix(".0") if abs(value) >= 1 else f"{value:.2g}"
    if unit == "×":
        return f"{number}×"
    return f"{number} {unit}" if unit else number


def _vacuum_setting(name: str) -> str:
    """A table's autovacuum setting: its own (ALTER TABLE … SET) or else the server's; NULL
    where this PostgreSQL has no such setting."""
    return (
        f"coalesce((SELECT option_value::float8 FROM pg_options_to_table(c.reloptions)"
        f" WHERE option_name = '{name}'), current_setting('{name}', true)::float8)"
    )


# How many dead rows make autovacuum vacuum a table, as autovacuum.c reckons it: threshold +
# scale factor × rows, capped by the maximum threshold where there is one (PostgreSQL 18).
_DEAD_ROWS_TRIGGER = (
    f"least({_vacuum_setting('autovacuum_vacuum_threshold')}"
    f" + {_vacuum_setting('autovacuum_vacuum_scale_factor')} * greatest(c.reltuples, 0),"
    f" nullif({_vacuum_setting('autovacuum_vacuum_max_threshold')}, -1))"
)

# One round trip: standbys, logical slots, vacuums on the two tables, and the archiver.
SIGNALS_SQL = f"""
SELECT
    (SELECT coalesce(json_agg(json_build_object(
                'name', application_name,
                'seconds', extract(epoch FROM replay_lag),
                'bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn))), '[]')
     FROM pg_stat_replication) AS standbys,
    (SELECT coalesce(json_agg(json_build_object(
                'name', slot_name,
                'bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))), '[]')
     FROM pg_replication_slots WHERE slot_type = 'logical') AS slots,
    (SELECT coalesce(json_agg(json_build_object(
                'table', c.relname,
                'query', a.query,
                'xid_age', age(c.relfrozenxid),
                'freeze_max_age', current_setting('autovacuum_freeze_max_age')::bigint,
                'dead_rows', t.n_dead_tup,
                'dead_rows_trigger', {_DEAD_ROWS_TRIGGER})), '[]')
     FROM pg_stat_progress_vacuum AS p
     JOIN pg_class AS c ON c.oid = p.relid
     LEFT JOIN pg_stat_all_tables AS t ON t.relid = p.relid
     LEFT JOIN pg_stat_activity AS a ON a.pid = p.pid
     WHERE p.relid IN ({", ".join(f"to_regclass('{t}')" for t in _TABLES)})) AS vacuums,
    current_setting('archive_mode') AS archive_mode,
    (SELECT last_archived_wal FROM pg_stat_archiver) AS last_archived_wal,
    pg_walfile_name(pg_current_wal_lsn()) AS current_wal,
    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS segment_bytes
"""

# While batches run: the longest wait so far of a session blocked by one of the job's
# connections, and how many other client sessions (not the job's, not this service's own, of
# any database on the server: they share its cores) began or ended a statement in the last
# second. pg_blocking_pids() is only called for sessions waiting on a lock.
WATCH_SQL = """
SELECT coalesce(max(CASE WHEN a.wait_event_type = 'Lock'
                          AND pg_blocking_pids(a.pid) && CAST(:pids AS int[])
                         THEN extract(epoch FROM clock_timestamp() - a.query_start) END), 0)
           AS longest_wait,
       count(*) FILTER (WHERE a.backend_type = 'client backend'
                          AND a.pid <> ALL(CAST(:pids AS int[]))
                          AND a.application_name IS DISTINCT FROM :ours
                          AND a.state_change > clock_timestamp() - interval '1 second')
           AS others_active
FROM pg_stat_activity AS a
WHERE a.pid <> pg_backend_pid()
"""


@dataclass
class Health:
    """What SIGNALS_SQL read, as plain values (tests build it from captured rows)."""

    standbys: list[dict[str, Any]]
    slots: list[dict[str, Any]]
    vacuums: list[dict[str, Any]]
    archive_mode: str = "off"
    last_archived_wal: str | None = None
    current_wal: str | None = None
    segment_bytes: int = 16 * 2**20

    @classmethod
    def from_row(cls, row: Any) -> "Health":
        return cls(**{f.name: getattr(row, f.name) for f in dataclasses.fields(cls)})


async def read(conn: AsyncConnection) -> Health:
    """The database's health now (one statement, read-only)."""
    return Health.from_row((await conn.execute(text(SIGNALS_SQL))).one())


async def watch(conn: AsyncConnection, pids: list[int], ours: str) -> tuple[float, int]:
    """(the longest current wait on `pids`' locks in seconds, other sessions active lately).

    `ours` is the application_name of this service's own connections, left out of the count.
    """
    row = (await conn.execute(text(WATCH_SQL), {"pids": pids, "ours": ours})).one()
    return float(row.longest_wait), int(row.others_active)


def segment_number(wal_file: str, segment_bytes: int) -> int:
    """A WAL file name's segment number (timeline left out): log × segments per log + seg."""
    log, seg = int(wal_file[8:16], 16), int(wal_file[16:24], 16)
    return log * (2**32 // segment_bytes) + seg


def archive_backlog(health: Health) -> int | None:
    """WAL segments finished but not yet archived; None when archiving is off."""
    if health.archive_mode == "off" or not health.current_wal:
        return None
    if health.last_archived_wal is None:
        return None  # nothing archived yet since the statistics were reset: no baseline
    name = health.last_archived_wal[:24]  # a timeline history or backup file carries a suffix
    done = segment_number(name, health.segment_bytes)
    # The current segment is still being written: it is not due for archiving yet.
    return max(segment_number(health.current_wal, health.segment_bytes) - 1 - done, 0)


def _wraparound(vacuum: dict[str, Any]) -> bool:
    query = vacuum.get("query") or ""
    if "(to prevent wraparound)" in query:
        return True
    # Without pg_read_all_stats the query reads "<insufficient privilege>": judge by age.
    age, most = vacuum.get("xid_age"), vacuum.get("freeze_max_age")
    return age is not None and most is not None and age >= most


def _autovacuum(vacuum: dict[str, Any]) -> bool:
    query = vacuum.get("query") or ""
    return query.startswith("autovacuum:") or query == "<insufficient privilege>"


def _for_dead_rows(vacuum: dict[str, Any]) -> bool:
    """Whether the table holds enough dead rows to have called for this vacuum.

    The other kind follows inserts alone (autovacuum_vacuum_insert_threshold): it marks the new
    pages visible. A migration sets one off on treatment_goals each time its goals add a fifth
    to the table, and waiting for it would only stop the job on its own wake: the vacuum goes at
    its cost-limited pace either way. A reading without the counts is taken as dead rows.
    """
    dead, trigger = vacuum.get("dead_rows"), vacuum.get("dead_rows_trigger")
    return dead is None or trigger is None or dead > trigger


def decide(
    health: Health,
    limits: Limits,
    *,
    lock_wait: float = 0.0,
    slowdown: float | None = None,
    others_active: int = 0,
) -> Trip | None:
    """The first signal over its limit, in the order of the module's table; None: go on."""
    for vacuum in health.vacuums:
        if _wraparound(vacuum):
            return Trip("anti_wraparound_vacuum", None, None, None, vacuum["table"])
    worst = _worst(health.standbys, "seconds")
    if worst and _over(worst["seconds"], limits.max_replay_lag_seconds):
        return Trip(
            "replay_lag_seconds",
            round(worst["seconds"], 1),
            limits.max_replay_lag_seconds,
            "s",
            worst["name"] or None,
        )
    worst = _worst(health.standbys, "bytes")
    if worst and _over(worst["bytes"], limits.max_replay_lag_bytes):
        return Trip(
            "replay_lag_bytes",
            worst["bytes"],
            limits.max_replay_lag_bytes,
            "bytes",
            worst["name"] or None,
        )
    worst = _worst(health.slots, "bytes")
    if worst and _over(worst["bytes"], limits.max_replay_lag_bytes):
        return Trip(
            "slot_lag_bytes", worst["bytes"], limits.max_replay_lag_bytes, "bytes", worst["name"]
        )
    backlog = archive_backlog(health)
    if backlog is not None and _over(backlog, limits.max_archive_backlog):
        return Trip("archive_backlog", backlog, limits.max_archive_backlog, "segments")
    if limits.yield_to_autovacuum:
        for vacuum in health.vacuums:
            if _autovacuum(vacuum) and _for_dead_rows(vacuum):
                return Trip("autovacuum", None, None, None, vacuum["table"])
    if _over(lock_wait, limits.max_lock_wait_seconds):
        return Trip("lock_waits", round(lock_wait, 2), limits.max_lock_wait_seconds, "s")
    if slowdown is not None and _over(slowdown, limits.max_batch_slowdown):
        return Trip("batch_slowdown", round(slowdown, 1), limits.max_batch_slowdown, "×")
    if clinicians_at_work(limits, others_active):
        return Trip("clinicians_active", others_active, limits.share_above_sessions, "sessions")
    return None


def _worst(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    rows = [r for r in rows if r.get(key) is not None]
    return max(rows, key=lambda r: r[key]) if rows else None


def clinicians_at_work(limits: Limits, others_active: int) -> bool:
    """Whether more other sessions are at work than the job runs at full speed beside."""
    return _over(others_active, limits.share_above_sessions)


def _over(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


class Slowdown:
    """The job's batch time per row, its newest batches against the median of the ones before.

    The newest SLOWDOWN_LATEST are judged by their median, so one slow batch (a checkpoint, a
    WAL segment switch) is not a slowdown; three in a row are.
    """

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=SLOWDOWN_WINDOW + SLOWDOWN_LATEST)
        self.last: float | None = None

    def add(self, seconds: float, processed: int) -> None:
        if processed <= 0:
            return
        self.recent.append(seconds / processed)
        before = list(self.recent)[:-SLOWDOWN_LATEST]
        if len(before) >= SLOWDOWN_MIN_BATCHES:
            latest = list(self.recent)[-SLOWDOWN_LATEST:]
            self.last = statistics.median(latest) / statistics.median(before)

    def take(self) -> float | None:
        """The newest batch's ratio, once: a recheck after waiting judges a new batch."""
        last, self.last = self.last, None
        return last
