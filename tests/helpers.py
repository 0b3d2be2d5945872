"""Shared test helpers: loading hostile data, running jobs, reading results, gating batches."""

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.jobs import queries, runner
from app.jobs.engine import STAT_NAMES

JSON_NULL = object()  # extracted_notes = 'null'::jsonb, as opposed to SQL NULL


async def reset(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(
            text("TRUNCATE users, therapy_sessions, treatment_goals, migration_jobs CASCADE")
        )


async def load(db: AsyncEngine, *, users, sessions, goals=()) -> None:
    """users: [(id, role)]; sessions: model dicts; goals: [(patient, therapist, desc, status)]."""
    async with db.begin() as conn:
        if users:
            await conn.execute(
                text("INSERT INTO users (id, email, role) VALUES (:id, :email, :role)"),
                [{"id": u, "email": f"{u}@example.org", "role": r} for u, r in users],
            )
        if sessions:
            await conn.execute(
                text(
                    "INSERT INTO therapy_sessions (id, patient_id, therapist_id, session_date, "
                    "extracted_notes) VALUES (:id, :patient_id, :therapist_id, :session_date, "
                    "CAST(:notes AS jsonb))"
                ),
                [
                    {
                        "id": s["id"],
                        "patient_id": s["patient_id"],
                        "therapist_id": s["therapist_id"],
                        "session_date": s["session_date"],
                        "notes": (
                            "null"
                            if s["notes"] is JSON_NULL
                            else None
                            if s["notes"] is None
                            else json.dumps(s["notes"])
                        ),
                    }
                    for s in sessions
                ],
            )
        if goals:
            await conn.execute(
                text(
                    "INSERT INTO treatment_goals (patient_id, therapist_id, description, status) "
                    "VALUES (:p, :t, :d, :s)"
                ),
                [{"p": p, "t": t, "d": d, "s": st} for p, t, d, st in goals],
            )


async def start_job(db: AsyncEngine, settings: Settings, **params) -> tuple[uuid.UUID, uuid.UUID]:
    params.setdefault("kind", "migrate")
    params.setdefault("requested_by", "test")
    return await runner.create_job(db, settings, **params)


async def run(db: AsyncEngine, settings: Settings, **params) -> dict:
    """Create a job, run it to its end in the foreground, and return the job row."""
    params.setdefault("dry_run", False)
    params.setdefault("batch_size", 500)
    job_id, token = await start_job(db, settings, **params)
    await runner.run_job(db, settings, job_id=job_id, token=token)
    return await get(db, job_id)


async def get(db: AsyncEngine, job_id: uuid.UUID) -> dict:
    async with db.connect() as conn:
        return await queries.get_job(conn, job_id=job_id)


def stats(job: dict) -> dict:
    return {name: job[name] for name in STAT_NAMES}


async def migrated_goals(db: AsyncEngine) -> list[tuple]:
    """Goals created by migration jobs, as model tuples, sorted."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT patient_id, therapist_id, session_id, description, category, created_at "
                "FROM treatment_goals WHERE source_job_id IS NOT NULL"
            )
        )
        return sorted(tuple(r) for r in rows)


def model_goals(outcome) -> list[tuple]:
    return sorted(outcome.goals)


async def job_count(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar_one()


GATE_KEY = 0x6A6F62  # an advisory lock key no application code uses


async def install_gate(db: AsyncEngine, partition: int | None = None, refuse: bool = False):
    """A test-only trigger on progress updates (of one partition) for gate_closed().

    A progress update moves the cursor or marks the partition done under the same run token;
    any other update of a partition row (a lease taken over or revoked) passes.
    """
    only = (
        "NEW.run_token IS NOT DISTINCT FROM OLD.run_token "
        "AND (NEW.cursor IS DISTINCT FROM OLD.cursor OR NEW.done IS DISTINCT FROM OLD.done)"
    )
    if partition is not None:
        only += f" AND NEW.partition = {int(partition)}"
    if refuse:
        action = (
            f"IF NOT pg_try_advisory_xact_lock_shared({GATE_KEY}) THEN RAISE EXCEPTION "
            "'test gate closed' USING ERRCODE = 'lock_not_available'; END IF;"
        )
    else:
        action = f"PERFORM pg_advisory_xact_lock_shared({GATE_KEY});"
    async with db.begin() as conn:
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN IF {only} THEN {action} END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE OR REPLACE TRIGGER test_gate BEFORE UPDATE ON migration_job_partitions "
                "FOR EACH ROW EXECUTE FUNCTION test_gate()"
            )
        )


@asynccontextmanager
async def gate_closed(db: AsyncEngine, partition: int | None = None, *, refuse: bool = False):
    """While inside, no batch (of that partition) of any job can commit.

    By default a batch waits at its progress update, its transaction and locks held: the test
    knows exactly which batches are in flight (at_gate) and that they commit once it leaves.
    With refuse=True the batch fails there instead, with lock_not_available, rolls back and is
    retried after a backoff, holding nothing meanwhile: use it when the test must take a lock
    a batch would hold, as a cancel does on the job row. Either way the job cannot finish
    before the test has done what it wants (cancel, read, start another), whatever the load.
    """
    await install_gate(db, partition, refuse)
    async with db.connect() as conn:
        await conn.execute(text(f"SELECT pg_advisory_lock({GATE_KEY})"))
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(text(f"SELECT pg_advisory_unlock({GATE_KEY})"))
            await conn.commit()


async def waiting_on_lock(db: AsyncEngine, event: str | None = None) -> int:
    """How many other sessions of this database wait for a lock (of kind `event`) right now."""
    async with db.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
                    "AND (CAST(:event AS text) IS NULL OR wait_event = :event)"
                ),
                {"event": event},
            )
        ).scalar_one()


async def at_gate(db: AsyncEngine, count: int) -> None:
    """Wait until `count` batches are held at the closed gate."""

    async def held():
        return await waiting_on_lock(db, "advisory") >= count

    await until(held, what=f"{count} batches at the gate")


async def clinician_waits_on_the_batch(db: AsyncEngine, clinician, *, job_id, goals):
    """With a one-partition job's batch held at the closed gate: a clinician, in a transaction
    of `clinician` (asyncpg) already open, edits a session that batch gave goals to.

    The batch's goal inserts lock their sessions FOR KEY SHARE (the foreign key), so the
    clinician's FOR UPDATE waits on the job. `goals` are the model's, in its tuple order.
    Returns the clinician's statement, which completes once the batch commits.
    """
    async with db.connect() as conn:
        cursor = (
            await conn.execute(
                text("SELECT cursor FROM migration_job_partitions WHERE job_id = :j"), {"j": job_id}
            )
        ).scalar_one()
    _, _, session_id, *_ = min(g for g in goals if cursor is None or g[0] > cursor)
    edit = asyncio.create_task(
        clinician.execute("SELECT 1 FROM therapy_sessions WHERE id = $1 FOR UPDATE", session_id)
    )

    async def blocked() -> bool:
        async with db.connect() as conn:
            query = text("SELECT cardinality(pg_blocking_pids(:pid)) > 0")
            return (await conn.execute(query, {"pid": clinician.get_server_pid()})).scalar_one()

    await until(blocked, 10, "the clinician to wait on the batch")
    return edit


async def keep_goal_statistics(db: AsyncEngine) -> None:
    """Analyze treatment_goals now and keep those statistics, as they are right after a large
    migration that autovacuum has not analyzed yet."""
    async with db.begin() as conn:
        await conn.execute(text("ALTER TABLE treatment_goals SET (autovacuum_enabled = off)"))
        await conn.execute(text("ANALYZE treatment_goals"))


def plan_scans(plan: dict, relation: str):
    """Every scan node of `relation` in an EXPLAIN (FORMAT JSON) plan, depth first."""
    if plan.get("Relation Name") == relation and "Scan" in plan["Node Type"]:
        yield plan
    for child in plan.get("Plans", []):
        yield from plan_scans(child, relation)


def ts(day: int, minute: int = 0) -> datetime:
    """A session date `day` days after 2024-01-01 09:00 UTC."""
    return datetime(2024, 1, 1, 9, tzinfo=UTC) + timedelta(days=day, minutes=minute)


async def sessions_with_items(db: AsyncEngine, limit: int) -> list[uuid.UUID]:
    """Up to `limit` sessions whose action_items is a non-empty array, in id order."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                # CASE, not AND: PostgreSQL may evaluate AND's operands in any order, and
                # jsonb_array_length raises on anything but an array.
                "SELECT id FROM therapy_sessions "
                "WHERE CASE WHEN jsonb_typeof(extracted_notes -> 'action_items') = 'array' "
                "THEN jsonb_array_length(extracted_notes -> 'action_items') > 0 END "
                "ORDER BY id LIMIT :limit"
            ),
            {"limit": limit},
        )
        return list(rows.scalars())


async def fail_goal_inserts_for(db: AsyncEngine, session_ids) -> None:
    """A test-only trigger that makes inserting any goal of these sessions raise."""
    async with db.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS test_fail_sessions (id uuid)"))
        await conn.execute(
            text("INSERT INTO test_fail_sessions VALUES (:id)"), [{"id": i} for i in session_ids]
        )
        await conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION fail_for_session() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "IF EXISTS (SELECT 1 FROM test_fail_sessions WHERE id = NEW.session_id) THEN "
                "RAISE EXCEPTION 'refusing goal %', NEW.description; END IF; "
                "RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE OR REPLACE TRIGGER fail_for_session BEFORE INSERT ON treatment_goals "
                "FOR EACH ROW EXECUTE FUNCTION fail_for_session()"
            )
        )


async def until(condition, seconds: float = 30.0, what: str = "a condition"):
    """Poll an async condition until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        await asyncio.sleep(0.05)


async def data_ids(db: AsyncEngine) -> set[str]:
    """Every patient, therapist, session and goal id in the database."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id::text FROM therapy_sessions UNION SELECT patient_id::text "
                "FROM therapy_sessions UNION SELECT id::text FROM users "
                "UNION SELECT id::text FROM treatment_goals"
            )
        )
        return set(rows.scalars())


async def clinical_texts(db: AsyncEngine) -> set[str]:
    """Every string inside any session's action items, and every goal description."""
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, str):
            if len(node.strip()) >= 4:
                found.add(node.strip())
        elif isinstance(node, dict):
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    async with db.connect() as conn:
        notes = await conn.execute(
            text("SELECT extracted_notes -> 'action_items' FROM therapy_sessions")
        )
        for (items,) in notes:
            walk(json.loads(items) if isinstance(items, str) else items)
        goals = await conn.execute(text("SELECT description FROM treatment_goals"))
        found.update(d for (d,) in goals if len(d) >= 4)
    return found


@asynccontextmanager
async def clinicians_at_work(database_url: str, count: int, *, every: float = 0.02):
    """`count` other sessions, each reading goals every `every` seconds, as long as the block
    runs (the throttle counts them as clinicians at work); it yields a coroutine function that
    sends them home earlier."""
    stop = asyncio.Event()

    async def clinician() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            while not stop.is_set():
                await conn.fetch("SELECT id, status FROM treatment_goals LIMIT 5")
                await asyncio.sleep(every)
        finally:
            await conn.close()

    at_work = asyncio.gather(*(clinician() for _ in range(count)))

    async def leave() -> None:
        stop.set()
        await at_work

    try:
        yield leave
    finally:
        await leave()
