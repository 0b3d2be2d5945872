"""Deterministic demo data: users, therapy sessions with realistic action items, a few goals.

`python -m app.demo --sessions 5000 [--seed 7] [--mix duplicate-heavy|insert-heavy] [--if-empty]`.
The tests and the benchmark use the same generator; rows go in with COPY, so a million sessions
take well under a minute.

The mix decides how much of the homework recurs. In the default, duplicate-heavy mix, patients
get the same few tasks of their plan session after session, so about half the items are
duplicates. In the insert-heavy mix, clinicians date almost every item ("... (12 Mar 2023)"),
so about nine in ten items become goals.
On a database that already has users, the new rows are a further batch: fresh ids, their own
e-mail addresses, no second admin; the seed still decides what they hold.
"""

import argparse
import asyncio
import json
import random
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from app.config import ConfigError, load_settings

TASKS = [
    ("Practice deep breathing twice daily", "behavioral", "Use 4-7-8 technique for 5 minutes"),
    ("Keep a thought record", "cognitive", "Write down automatic thoughts when anxious"),
    ("Walk outside for 20 minutes", "behavioral", "Morning walks preferred"),
    ("Schedule one pleasant activity per day", "behavioral", "Log it in the activity planner"),
    ("Practice progressive muscle relaxation", "behavioral", "Before bed, 10 minutes"),
    ("Challenge catastrophic thinking", "cognitive", "Use the evidence for/against worksheet"),
    ("Call a supportive friend this week", "interpersonal", "Pick someone from the support list"),
    ("Maintain a regular sleep schedule", "lifestyle", "Same wake time every day, 7:00 am"),
    ("Limit caffeine after noon", "lifestyle", None),
    ("Use the grounding exercise when triggered", "coping", "5-4-3-2-1 senses technique"),
    ("Write three things you are grateful for", "cognitive", "Each evening in the journal"),
    ("Practice assertive communication", "interpersonal", "Use I-statements with partner"),
    ("Attend the support group meeting", "social", "Thursday 6 pm community center"),
    ("Reduce screen time before bed", "lifestyle", "No phone after 10 pm"),
    ("Complete the exposure hierarchy step", "exposure", "Spend 10 minutes in a busy store"),
    ("Track mood three times a day", "monitoring", "Rate 0-10 in the mood app"),
    ("Practice mindful eating at one meal", "mindfulness", None),
    ("Read chapter 3 of the workbook", "psychoeducation", "Mind Over Mood, pages 40-62"),
    ("Use the coping card when urges arise", "coping", "Keep it in your wallet"),
    ("Take medication as prescribed", "medical", "Discuss side effects at next visit"),
    ("Body scan meditation", "mindfulness", "Guided audio, 15 minutes"),
    ("Set one boundary with a family member", "interpersonal", None),
    ("Plan a weekend outing", "behavioral", "Something outdoors if possible"),
    ("Review relapse prevention plan", "coping", "Identify early warning signs"),
]
FIRST = ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn"]
LAST = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Khan", "Müller", "Rossi", "Kim"]
MALFORMED = [
    {"category": "behavioral", "details": "no task given"},
    {"task": "   ", "category": "cognitive"},
    {"task": 42, "category": "behavioral"},
    {"task": "Journal daily", "details": ["not", "a", "string"]},
    {"task": "Stretch every morning", "category": 7},
    "just a string, not an object",
    None,
]
EPOCH = datetime(2022, 1, 1, tzinfo=UTC)
# Per mix: the share of items whose details carry the session's date, which makes them new.
MIXES = {"duplicate-heavy": 0.0, "insert-heavy": 0.7}
DEFAULT_MIX = "duplicate-heavy"


@dataclass
class DemoCounts:
    users: int
    sessions: int
    goals: int
    sessions_before: int = 0  # sessions the database already had


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _item(rng: random.Random, task_index: int, dated: str | None) -> object:
    if rng.random() < 0.01:
        return rng.choice(MALFORMED)
    task, category, details = TASKS[task_index]
    item: dict[str, object] = {"task": task, "category": category}
    if dated is not None:
        item["details"] = f"{details or 'as discussed'} ({dated})"
    elif details is not None and rng.random() < 0.7:
        # Clinicians adjust homework over time, so the same task recurs with new details.
        item["details"] = f"{details} (week {rng.randint(1, 8)})" if rng.random() < 0.4 else details
    if rng.random() < 0.03:
        item["task"] = f"  {task}\n"
    return item


def _notes(rng: random.Random, plan: list[int], when: datetime, dated: float) -> str | None:
    roll = rng.random()
    if roll < 0.06:
        return None
    if roll < 0.09:
        return json.dumps({"summary": "Session focused on rapport and history."})
    if roll < 0.11:
        return json.dumps({"action_items": [], "summary": "No homework this week."})
    if roll < 0.112:
        return json.dumps({"action_items": {"task": "Wrongly stored as an object"}})
    count = min(len(plan), rng.randint(2, 4))
    picks = rng.sample(plan, count)
    if rng.random() < 0.15:
        picks.append(rng.randrange(len(TASKS)))
    day = f"{when:%d %b %Y}"
    # No draw at all in the default mix, so its data for a seed stays what it always was.
    items = [_item(rng, i, day if dated and rng.random() < dated else None) for i in picks]
    return json.dumps({"action_items": items, "mood": rng.randint(1, 10)})


def build(sessions: int, seed: int = 7, batch: int = 0, mix: str = DEFAULT_MIX):
    """Return (users, sessions, goals) record lists for `sessions` therapy sessions.

    Batch 0 is the first load; a later batch draws other ids and addresses from the same seed.
    """
    dated = MIXES[mix]
    rng = random.Random(seed if batch == 0 else f"{seed}/{batch}")
    tag = f"+{batch}" if batch else ""
    n_therapists = max(1, sessions // 400)
    n_patients = max(1, sessions // 12)
    users = [(_uuid(rng), "admin@example.org", "Demo Admin", "admin")] if batch == 0 else []
    therapists = []
    for i in range(n_therapists):
        tid = _uuid(rng)
        therapists.append(tid)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        users.append((tid, f"therapist{i}{tag}@example.org", name, "therapist"))
    patients = []
    for i in range(n_patients):
        pid = _uuid(rng)
        plan = rng.sample(range(len(TASKS)), rng.randint(3, 6))
        patients.append((pid, rng.choice(therapists), plan))
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        users.append((pid, f"patient{i}{tag}@example.org", name, "patient"))

    span = 3 * 365 * 24 * 3600
    session_rows = []
    for _ in range(sessions):
        pid, tid, plan = patients[rng.randrange(n_patients)]
        when = EPOCH + timedelta(seconds=rng.randrange(span) // 1800 * 1800)
        session_rows.append((_uuid(rng), pid, tid, when, _notes(rng, plan, when, dated)))

    goal_rows = []
    for pid, tid, plan in patients[: max(1, n_patients // 20)]:
        task, category, details = TASKS[plan[0]]
        description = f"{task} - {details}" if details else task
        goal_rows.append((pid, tid, description, category, "in_progress", EPOCH, EPOCH))
    return users, session_rows, goal_rows


async def write(
    dsn: str, sessions: int, seed: int = 7, *, if_empty: bool = False, mix: str = DEFAULT_MIX
) -> DemoCounts:
    """Generate and COPY the demo data into the database at `dsn` (a postgresql:// URL)."""
    conn = await asyncpg.connect(dsn)
    try:
        before = await conn.fetchval("SELECT count(*) FROM therapy_sessions")
        if if_empty and before:
            return DemoCounts(0, 0, 0, before)
        # Each batch is numbered by the users already there, so batches never share ids.
        batch = await conn.fetchval("SELECT count(*) FROM users")
        users, session_rows, goal_rows = build(sessions, seed, batch, mix)
        async with conn.transaction():
            await conn.copy_records_to_table(
                "users", records=users, columns=["id", "email", "full_name", "role"]
            )
            await conn.copy_records_to_table(
                "therapy_sessions",
                records=session_rows,
                columns=["id", "patient_id", "therapist_id", "session_date", "extracted_notes"],
            )
            await conn.copy_records_to_table(
                "treatment_goals",
                records=goal_rows,
                columns=[
                    "patient_id",
                    "therapist_id",
                    "description",
                    "category",
                    "status",
                    "created_at",
                    "updated_at",
                ],
            )
        await conn.execute("ANALYZE users; ANALYZE therapy_sessions; ANALYZE treatment_goals")
        return DemoCounts(len(users), len(session_rows), len(goal_rows), before)
    finally:
        await conn.close()


def asyncpg_dsn(database_url: str) -> str:
    """The settings URL (postgresql+asyncpg://) in the plain form asyncpg itself accepts."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _problem(exc: BaseException) -> str:
    """One line for the operator on why the demo data could not be written."""
    if isinstance(exc, asyncpg.UndefinedTableError):
        return f"{exc}; run: alembic upgrade head"
    if isinstance(exc, asyncpg.UniqueViolationError):
        return f"the demo rows collide with rows already there ({exc}); try another --seed"
    if isinstance(exc, asyncpg.PostgresError):
        return f"database error: {exc}"
    return f"cannot connect to the database: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mix", choices=sorted(MIXES), default=DEFAULT_MIX, help="data mix")
    parser.add_argument("--if-empty", action="store_true", help="do nothing if sessions exist")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    dsn = asyncpg_dsn(settings.database_url)
    try:
        counts = asyncio.run(
            write(dsn, args.sessions, args.seed, if_empty=args.if_empty, mix=args.mix)
        )
    except (asyncpg.PostgresError, OSError) as exc:
        print(f"demo data not written: {_problem(exc)}", file=sys.stderr)
        return 2
    if not counts.sessions:
        print(f"demo data: the database already has {counts.sessions_before} sessions, left as is")
        return 0
    before = counts.sessions_before
    added = f", added to the {before} sessions already there" if before else ""
    print(
        f"demo data: {counts.users} users, {counts.sessions} sessions, {counts.goals} goals{added}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
