"""Adaptive batch sizes and backing off from clinicians, on real data and real locks.

Every run here ends equal to the model of the rules (tests/model.py), whatever sizes it picked
and however often it waited: sizes only move where batches end, and batches hold whole patients.
"""

import asyncio
import contextlib
import statistics
import time

import asyncpg
from sqlalchemy import text

from app import demo
from app.config import load_settings
from app.db import create_engine
from app.jobs import runner, throttle
from app.jobs.throttle import Limits
from tests import helpers
from tests.conftest import SECRET
from tests.expected import model_outcome


def _settings(database_url: str, **overrides):
    return load_settings(
        database_url=database_url,
        jwt_secret=SECRET,
        heartbeat_seconds=0.1,
        retry_backoff_seconds=0.05,
        _env_file=None,
        **overrides,
    )


async def _batches(db, job_id) -> list:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT inserted_at, batch_size, processed, seconds FROM migration_batches "
                "WHERE job_id = :job_id ORDER BY inserted_at, id"
            ),
            {"job_id": job_id},
        )
        return rows.all()


async def _audit(db, job_id) -> list:
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT at, action, details FROM migration_audit WHERE job_id = :job_id ORDER BY id"
            ),
            {"job_id": job_id},
        )
        return rows.all()


async def test_sizes_converge_on_the_target_within_bounds_and_any_sizes_give_the_model(
    database_url,
):
    await demo.write(database_url, sessions=5000, seed=41)
    target = 0.05
    settings = _settings(
        database_url, batch_target_seconds=target, batch_size_min=10, batch_size_max=2000
    )
    db = create_engine(settings)
    try:
        expected = await model_outcome(db)
        # The prediction: a dry run with a fixed, odd size.
        dry = await helpers.run(
            db, settings, dry_run=True, batch_size=37, adaptive=False, partition_count=1
        )
        real = await helpers.run(db, settings, batch_size=10, adaptive=True, partition_count=1)
        assert real["status"] == "succeeded" and real["adaptive"]
        assert helpers.stats(real) == helpers.stats(dry) == expected.stats
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)

        batches = await _batches(db, real["id"])
        sizes = [b.batch_size for b in batches]
        assert sizes[0] == 10 and all(10 <= s <= 2000 for s in sizes)
        for before, after in zip(sizes, sizes[1:], strict=False):
            assert before / 1.5 - 1 <= after <= before * 1.5 + 1  # one bounded step at a time
        assert max(sizes) > 10 * 1.5**3  # it grew: 10 sessions take far less than 50 ms
        full = [b for b in batches[:-2] if b.processed >= b.batch_size]
        settled = statistics.median(b.seconds for b in full[-5:])
        assert target / 3 <= settled <= target * 3, (settled, sizes)
        # The fixed dry run kept its size on every batch.
        assert {b.batch_size for b in await _batches(db, dry["id"])} == {37}
    finally:
        await db.dispose()


async def test_a_statement_timeout_halves_the_batch_and_the_run_ends_equal_to_the_model(
    database_url, job_log
):
    await demo.write(database_url, sessions=1500, seed=42)
    admin = await asyncpg.connect(database_url)
    try:
        # Inserting a goal costs a millisecond (a statement trigger sleeps), and the database
        # ends any statement after 300 ms: 1,000 sessions at a time can never commit.
        await admin.execute(
            "CREATE FUNCTION slow_goals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pg_sleep(0.001 * (SELECT count(*) FROM inserted)); RETURN NULL; END $$"
        )
        await admin.execute(
            "CREATE TRIGGER slow_goals AFTER INSERT ON treatment_goals "
            "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION slow_goals()"
        )
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE {database} SET statement_timeout = '300ms'")
    finally:
        await admin.close()
    settings = _settings(database_url, batch_size_min=20)
    db = create_engine(settings)
    try:
        expected = await model_outcome(db)
        job = await helpers.run(db, settings, batch_size=1000, adaptive=True, partition_count=1)
        assert job["status"] == "succeeded", job["error"]
        assert helpers.stats(job) == expected.stats
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
        assert any("QueryCanceled" in line and "retrying" in line for line in job_log)
        sizes = [b.batch_size for b in await _batches(db, job["id"])]
        # Nothing of 1,000 or 500 committed: the first batch that did had been halved twice.
        assert sizes[0] <= 250 and max(sizes) < 500, sizes
    finally:
        await db.dispose()


async def test_a_clinician_blocked_by_a_batch_makes_the_job_back_off_and_gets_through(
    database_url,
):
    await demo.write(database_url, sessions=800, seed=43)
    settings = _settings(
        database_url, batch_size_min=10, throttle_recheck_seconds=0.3, lock_watch_seconds=0.05
    )
    db = create_engine(settings)
    clinician = await asyncpg.connect(database_url)
    try:
        expected = await model_outcome(db)
        limits = settings.limits().as_dict() | {"max_lock_wait_seconds": 0.1}
        job_id, token = await helpers.start_job(
            db, settings, dry_run=False, batch_size=60, adaptive=True, partition_count=1,
            limits=limits,
        )  # fmt: skip
        task = asyncio.create_task(runner.run_job(db, settings, job_id=job_id, token=token))
        async with helpers.gate_closed(db):
            await helpers.at_gate(db, 1)
            opens = clinician.transaction()
            await opens.start()
            edit = await helpers.clinician_waits_on_the_batch(
                db, clinician, job_id=job_id, goals=expected.goals
            )
            await asyncio.sleep(0.4)  # long enough for the watcher to see it waiting
            released = time.monotonic()
        await asyncio.wait_for(edit, 10)
        waited_after_release = time.monotonic() - released
        await opens.commit()
        assert await asyncio.wait_for(task, 60) == "succeeded"

        assert waited_after_release < 5
        assert helpers.stats(await helpers.get(db, job_id)) == expected.stats
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
        audit = await _audit(db, job_id)
        throttled = [a for a in audit if a.action == "throttled"]
        assert [a.details["signal"] for a in throttled] == ["lock_waits"]
        assert throttled[0].details["value"] > 0.1 and throttled[0].details["threshold"] == 0.1
        cleared = [a for a in audit if a.action == "throttle_cleared"]
        assert len(cleared) == 1 and cleared[0].details["waited_seconds"] >= 0.3
        # Backing off also halved the batch: the first one after the wait asked for less.
        batches = await _batches(db, job_id)
        before = [b.batch_size for b in batches if b.inserted_at < throttled[0].at]
        after = [b.batch_size for b in batches if b.inserted_at > cleared[0].at]
        assert after[0] < before[-1], (before, after)
        assert (await helpers.get(db, job_id))["throttle"] is None
    finally:
        await clinician.close()
        await db.dispose()


def _sharing_settings(database_url: str, **overrides):
    """Settings that see clinicians within 50 ms and recheck often."""
    return _settings(
        database_url, lock_watch_seconds=0.05, throttle_recheck_seconds=0.2, **overrides
    )


async def test_with_clinicians_at_work_the_job_runs_one_batch_at_a_time_and_rests(database_url):
    await demo.write(database_url, sessions=3000, seed=44)
    # A quarter of the time at work: each batch is followed by a rest three times as long.
    settings = _sharing_settings(database_url, throttle_share_duty=0.25)
    db = create_engine(settings)
    async with helpers.clinicians_at_work(database_url, 4):
        expected = await model_outcome(db)
        await asyncio.sleep(0.3)
        limits = settings.limits().as_dict() | {"share_above_sessions": 2}
        job = await helpers.run(
            db, settings, batch_size=100, adaptive=False, partition_count=2, limits=limits
        )
    try:
        assert job["status"] == "succeeded" and job["throttle"] is None
        assert helpers.stats(job) == expected.stats
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
        shared = [a for a in await _audit(db, job["id"]) if a.action == "throttled"]
        assert shared and shared[0].details["signal"] == "clinicians_active"
        assert shared[0].details["sharing"] is True and shared[0].details["value"] >= 3
        # From then on the two partitions took turns: no batch overlapped another, and each
        # was followed by a rest three times as long as itself.
        batches = [b for b in await _batches(db, job["id"]) if b.inserted_at > shared[0].at]
        assert len(batches) > 5
        for one, after in zip(batches, batches[1:], strict=False):
            gap = (after.inserted_at - one.inserted_at).total_seconds()
            assert gap >= 4 * one.seconds * 0.9, (gap, one.seconds)
    finally:
        await db.dispose()


async def test_adaptive_batches_shrink_while_sharing_and_the_rest_ends_when_clinicians_leave(
    database_url,
):
    await demo.write(database_url, sessions=3000, seed=45)
    # At 0.1% of the time, a rest is 999 times as long as the batch before it: seconds.
    settings = _sharing_settings(
        database_url, throttle_share_duty=0.001, throttle_share_batch_seconds=0.01
    )
    db = create_engine(settings)
    async with helpers.clinicians_at_work(database_url, 4) as leave:
        expected = await model_outcome(db)
        await asyncio.sleep(0.3)
        job_id, token = await helpers.start_job(
            db, settings, dry_run=False, batch_size=200, adaptive=True, partition_count=1
        )
        running = asyncio.create_task(runner.run_job(db, settings, job_id=job_id, token=token))

        async def resting() -> bool:
            throttled = [a.at for a in await _audit(db, job_id) if a.action == "throttled"]
            batches = await _batches(db, job_id)
            return bool(throttled) and batches[-1].inserted_at > throttled[0]

        await helpers.until(resting, what="a batch of the job's while sharing")
        rest = 999 * (await _batches(db, job_id))[-1].seconds
        await leave()
        left = time.monotonic()
        await asyncio.wait_for(running, 60)
        # The clinicians' sessions are seen gone within a second; the rest ends half a second
        # later at most, and the few batches left run at full speed.
        assert time.monotonic() - left < 1.5 + 2 < rest, rest
        job = await helpers.get(db, job_id)
    try:
        assert job["status"] == "succeeded"
        assert helpers.stats(job) == expected.stats
        assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
        actions = [a.action for a in await _audit(db, job_id)]
        assert actions.index("throttled") < actions.index("throttle_cleared")
        # Alone, batches of a few hundred sessions only grow toward 0.3 s; sharing, they aim at
        # 0.01 s and shrink.
        sizes = [b.batch_size for b in await _batches(db, job_id)]
        assert any(after < before for before, after in zip(sizes, sizes[1:], strict=False)), sizes
    finally:
        await db.dispose()


async def _reading_during_a_vacuum(db, database_url) -> dict:
    """The vacuums row SIGNALS_SQL reads while a real VACUUM works on treatment_goals.

    The autovacuum launcher decides when its workers run, so the vacuum here is an operator's,
    slowed to a crawl; only its query text differs from an autovacuum worker's row.
    """
    vacuum = await asyncpg.connect(database_url)
    try:
        await vacuum.execute("SET vacuum_cost_delay = 100; SET vacuum_cost_limit = 1")
        running = asyncio.create_task(vacuum.execute("VACUUM treatment_goals"))

        async def seen():
            async with db.connect() as conn:
                health = await throttle.read(conn)
            return [v for v in health.vacuums if v["query"] == "VACUUM treatment_goals"]

        (row,) = await helpers.until(seen, what="the VACUUM in pg_stat_progress_vacuum")
        async with db.connect() as conn:
            await conn.execute(
                text("SELECT pg_cancel_backend(:pid)"), {"pid": vacuum.get_server_pid()}
            )
        with contextlib.suppress(asyncpg.QueryCanceledError):
            await running
        return row
    finally:
        await vacuum.close()


async def test_the_job_yields_to_an_autovacuum_called_for_by_dead_rows_not_by_its_inserts(
    database_url,
):
    await demo.write(database_url, sessions=1500, seed=44)
    settings = _settings(database_url)
    db = create_engine(settings)
    try:
        job = await helpers.run(db, settings, batch_size=200)  # goals inserted, none deleted
        assert job["status"] == "succeeded"
        async with db.begin() as conn:
            await conn.execute(text("ANALYZE treatment_goals"))
            rows = (await conn.execute(text("SELECT count(*) FROM treatment_goals"))).scalar()
        autovacuum = {"query": "autovacuum: VACUUM public.treatment_goals"}

        after_inserts = await _reading_during_a_vacuum(db, database_url)
        assert after_inserts["dead_rows"] == 0
        assert after_inserts["dead_rows_trigger"] == 50 + 0.2 * rows  # the server's defaults
        health = throttle.Health(standbys=[], slots=[], vacuums=[after_inserts | autovacuum])
        assert throttle.decide(health, Limits()) is None

        # A rollback's deletes leave dead rows; a table of its own settings counts its own.
        async with db.begin() as conn:
            await conn.execute(
                text("ALTER TABLE treatment_goals SET (autovacuum_vacuum_threshold = 10)")
            )
            await conn.execute(
                text(
                    "DELETE FROM treatment_goals "
                    "WHERE ctid IN (SELECT ctid FROM treatment_goals LIMIT 500)"
                )
            )

        async def counted():
            async with db.connect() as conn:
                dead = await conn.execute(
                    text(
                        "SELECT n_dead_tup FROM pg_stat_all_tables "
                        "WHERE relname = 'treatment_goals'"
                    )
                )
                return dead.scalar() >= 500

        await helpers.until(counted, what="the deleted goals in pg_stat_all_tables")
        after_deletes = await _reading_during_a_vacuum(db, database_url)
        assert after_deletes["dead_rows"] >= 500
        assert after_deletes["dead_rows_trigger"] == 10 + 0.2 * rows
        health = throttle.Health(standbys=[], slots=[], vacuums=[after_deletes | autovacuum])
        trip = throttle.decide(health, Limits())
        assert (trip.signal, trip.where) == ("autovacuum", "treatment_goals")
        assert throttle.decide(health, Limits(yield_to_autovacuum=False)) is None
    finally:
        await db.dispose()
