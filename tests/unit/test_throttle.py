"""The throttle's decision on readings shaped as PostgreSQL's views give them.

Signals this machine cannot produce in a test (an anti-wraparound autovacuum, a busy autovacuum
worker at the right moment, a logical slot's consumer) are judged here on rows as SIGNALS_SQL
returns them from pg_stat_progress_vacuum joined to pg_stat_activity (whose query column reads
"autovacuum: VACUUM public.t (to prevent wraparound)" for an anti-wraparound run, and
"<insufficient privilege>" to a role without pg_read_all_stats), pg_stat_replication,
pg_replication_slots and pg_stat_archiver. The standby, lock-wait and archiver signals are
also produced for real in tests/integration.
"""

import pytest

from app.jobs import throttle
from app.jobs.throttle import Health, Limits, Slowdown, decide

QUIET = Health(standbys=[], slots=[], vacuums=[])
MB = 2**20


def _health(**kw) -> Health:
    return Health(**({"standbys": [], "slots": [], "vacuums": []} | kw))


def test_a_quiet_database_lets_the_job_go_on():
    assert decide(QUIET, Limits()) is None


def test_standby_replay_lag_in_seconds_names_the_standby():
    health = _health(standbys=[{"name": "replica-b", "seconds": 12.43, "bytes": 40 * MB}])
    trip = decide(health, Limits())
    assert (trip.signal, trip.value, trip.threshold, trip.where) == (
        "replay_lag_seconds", 12.4, 5.0, "replica-b",
    )  # fmt: skip
    assert trip.message == "standby replay lag (replica-b) 12.4 s, limit 5 s"


def test_the_worst_standby_counts_and_a_null_lag_is_no_lag():
    health = _health(
        standbys=[
            {"name": "a", "seconds": None, "bytes": 0},  # caught up: replay_lag reads NULL
            {"name": "b", "seconds": 1.0, "bytes": 300 * MB},
        ]
    )
    trip = decide(health, Limits())
    assert (trip.signal, trip.where) == ("replay_lag_bytes", "b")
    assert trip.message == "standby replay lag (b) 300.0 MB, limit 256.0 MB"


def test_logical_slots_count_against_the_bytes_limit():
    health = _health(slots=[{"name": "cdc", "bytes": 3 * 2**30}])
    trip = decide(health, Limits())
    assert (trip.signal, trip.where, trip.value) == ("slot_lag_bytes", "cdc", 3 * 2**30)
    assert decide(health, Limits(max_replay_lag_bytes=None)) is None


@pytest.mark.parametrize(
    ("query", "age", "signal"),
    [
        ("autovacuum: VACUUM public.treatment_goals", 1000, "autovacuum"),
        ("autovacuum: VACUUM ANALYZE public.treatment_goals", 1000, "autovacuum"),
        (
            "autovacuum: VACUUM public.treatment_goals (to prevent wraparound)",
            1000,
            "anti_wraparound_vacuum",
        ),
        # Without pg_read_all_stats: the age of the table's oldest xid tells.
        ("<insufficient privilege>", 250_000_000, "anti_wraparound_vacuum"),
        ("<insufficient privilege>", 1000, "autovacuum"),
        ("VACUUM treatment_goals", 1000, None),  # an operator's manual VACUUM: no autovacuum
    ],
)
def test_autovacuum_on_the_migrated_tables(query, age, signal):
    vacuum = {
        "table": "treatment_goals",
        "query": query,
        "xid_age": age,
        "freeze_max_age": 200_000_000,
    }
    trip = decide(_health(vacuums=[vacuum]), Limits())
    assert (trip.signal if trip else None) == signal
    if trip:
        assert trip.where == "treatment_goals"


@pytest.mark.parametrize(
    ("dead_rows", "trigger", "signal"),
    [
        # After a migration's inserts: the vacuum that follows them only marks pages visible.
        (0, 50_050.0, None),
        (50_050, 50_050.0, None),  # autovacuum.c vacuums above the trigger, not at it
        (50_051, 50_050.0, "autovacuum"),  # after a rollback's deletes, or clinicians' updates
        (None, None, "autovacuum"),  # a reading without the counts: taken as dead rows
    ],
)
def test_only_an_autovacuum_called_for_by_dead_rows_makes_the_job_wait(dead_rows, trigger, signal):
    vacuum = {
        "table": "treatment_goals",
        "query": "autovacuum: VACUUM public.treatment_goals",
        "xid_age": 1000,
        "freeze_max_age": 200_000_000,
        "dead_rows": dead_rows,
        "dead_rows_trigger": trigger,
    }
    trip = decide(_health(vacuums=[vacuum]), Limits())
    assert (trip.signal if trip else None) == signal
    wraparound = {**vacuum, "query": vacuum["query"] + " (to prevent wraparound)"}
    assert decide(_health(vacuums=[wraparound]), Limits()).signal == "anti_wraparound_vacuum"


def test_anti_wraparound_vacuum_yields_even_with_autovacuum_turned_off():
    vacuum = {
        "table": "therapy_sessions",
        "query": "autovacuum: VACUUM public.therapy_sessions (to prevent wraparound)",
        "xid_age": 1000,
        "freeze_max_age": 200_000_000,
    }
    health = _health(vacuums=[vacuum])
    limits = Limits(yield_to_autovacuum=False)
    assert decide(health, limits).signal == "anti_wraparound_vacuum"
    ordinary = {**vacuum, "query": "autovacuum: VACUUM public.therapy_sessions"}
    assert decide(_health(vacuums=[ordinary]), limits) is None


def test_archiver_backlog_counts_segments_not_yet_archived():
    # pg_stat_archiver.last_archived_wal and pg_walfile_name(pg_current_wal_lsn()) as read
    # while archive_command fails: segments 0x9F..0xC2 wait, 0xC3 is being written.
    health = _health(
        archive_mode="on",
        last_archived_wal="00000001000000000000009E",
        current_wal="0000000100000000000000C3",
    )
    assert throttle.archive_backlog(health) == 36
    trip = decide(health, Limits())
    assert (trip.signal, trip.value, trip.threshold) == ("archive_backlog", 36, 32)
    assert trip.message == "WAL archive backlog 36 segments, limit 32 segments"


def test_archiver_backlog_across_a_log_file_boundary_and_after_a_history_file():
    # With 16 MB segments a log file holds 256 of them: 0x2FF then 0x300.
    health = _health(
        archive_mode="on",
        last_archived_wal="0000000200000002000000FF.partial",
        current_wal="000000020000000300000001",
    )
    assert throttle.archive_backlog(health) == 1


def test_archiving_off_or_never_archived_reads_as_no_backlog():
    off = _health(archive_mode="off", current_wal="0000000100000000000000C3")
    assert throttle.archive_backlog(off) is None
    fresh = _health(archive_mode="on", current_wal="0000000100000000000000C3")
    assert throttle.archive_backlog(fresh) is None


def test_lock_waits_and_batch_slowdown():
    assert decide(QUIET, Limits(), lock_wait=0.15) is None
    trip = decide(QUIET, Limits(), lock_wait=0.8)
    assert trip.message == "a session waited on the job's locks for 0.8 s, limit 0.2 s"
    assert decide(QUIET, Limits(max_lock_wait_seconds=None), lock_wait=9) is None
    trip = decide(QUIET, Limits(max_lock_wait_seconds=0.05), lock_wait=0.45)
    assert trip.message == "a session waited on the job's locks for 0.45 s, limit 0.05 s"
    trip = decide(QUIET, Limits(), slowdown=5.04)
    assert trip.message == "batch time over its recent median 5×, limit 4×"


def test_slowdown_needs_the_newest_three_batches_slow_not_one():
    slowdown = Slowdown()
    for _ in range(throttle.SLOWDOWN_MIN_BATCHES + throttle.SLOWDOWN_LATEST - 1):
        slowdown.add(0.3, 1000)
        assert slowdown.take() in (None, 1.0)  # too few to judge, or as usual
    slowdown.add(2.1, 1000)  # one slow batch: a checkpoint, say
    assert slowdown.take() == pytest.approx(1.0)
    slowdown.add(1.5, 1000)
    assert slowdown.take() == pytest.approx(5.0)  # two of the last three: median 1.5 / 0.3
    assert slowdown.take() is None  # read once
    slowdown.add(0.0, 0)  # a batch that went through nothing says nothing
    assert slowdown.take() is None


def test_limits_from_a_job_row_keep_unknown_keys_out_and_null_means_off():
    default = Limits()
    stored = {"max_replay_lag_seconds": 10, "max_archive_backlog": None, "surprise": 1}
    limits = Limits.from_dict(stored, default)
    assert limits.max_replay_lag_seconds == 10 and limits.max_archive_backlog is None
    assert limits.max_lock_wait_seconds == default.max_lock_wait_seconds
    assert throttle.off_if_zero(0) is None and throttle.off_if_zero(0.0) is None
    assert throttle.off_if_zero(False) is False and throttle.off_if_zero(3) == 3


def test_clinicians_at_work_make_the_job_share_not_wait():
    assert decide(QUIET, Limits(), others_active=2) is None
    trip = decide(QUIET, Limits(), others_active=24)
    assert trip.sharing and trip.signal == "clinicians_active"
    assert trip.message == "24 other sessions at work, limit 2"
    assert decide(QUIET, Limits(share_above_sessions=None), others_active=500) is None
    # A signal that makes the job wait comes first.
    assert not decide(QUIET, Limits(), lock_wait=1.0, others_active=24).sharing
