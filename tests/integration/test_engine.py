"""The engine against the reference model, on real PostgreSQL, with hostile data."""

import uuid

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import text

from app.jobs import engine, runner
from tests import helpers, model
from tests.helpers import JSON_NULL, ts

PATIENTS = [uuid.UUID(int=i << 124) for i in (1, 2, 9, 15)]  # spread over both partitions
THERAPIST = uuid.UUID(int=77)
USERS = [(p, "patient") for p in PATIENTS] + [(THERAPIST, "therapist")]

texts = st.sampled_from(
    [
        "Walk daily",
        " Walk daily",
        "Walk daily\t\n",
        "walk daily",
        "Walk  daily",
        "Walk daily\u00a0",
        "\u200bWalk daily",
        "\x0bWalk daily\x0c",
        "Journal",
        "Journal \r",
        "",
        "   ",
        "\u00e9t\u00e9 \U0001f600",
        "x" * 12000,
    ]
)
maybe_text = st.one_of(
    texts, st.none(), st.integers(), st.booleans(), st.lists(st.integers(), max_size=2)
)


@st.composite
def items(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(
            st.one_of(
                st.text(max_size=5),
                st.integers(),
                st.none(),
                st.booleans(),
                st.lists(st.integers(), max_size=2),
            )
        )
    item = {}
    if draw(st.integers(0, 9)) > 0:
        item["task"] = draw(texts if draw(st.integers(0, 5)) else maybe_text)
    for key in ("details", "category"):
        if draw(st.booleans()):
            item[key] = draw(texts if draw(st.integers(0, 3)) else maybe_text)
    if draw(st.integers(0, 9)) == 0:
        item["extra"] = {"nested": [1, 2]}
    return item


notes = st.one_of(
    st.none(),
    st.just(JSON_NULL),
    st.just({}),
    st.just({"summary": "no items"}),
    st.just({"action_items": None}),
    st.sampled_from([[1, 2], "text", 5, {"task": "Walk daily"}, True]).map(
        lambda v: {"action_items": v}
    ),
    st.sampled_from([["action_items"], "action_items", 3]),
    st.lists(items(), max_size=5).map(lambda xs: {"action_items": xs}),
    st.lists(items(), min_size=1, max_size=5).map(lambda xs: {"action_items": xs}),
)


@st.composite
def datasets(draw):
    ids = draw(st.lists(st.integers(1, 2**128 - 1), max_size=14, unique=True))
    sessions = [
        {
            "id": uuid.UUID(int=i),
            "patient_id": draw(st.sampled_from(PATIENTS)),
            "therapist_id": THERAPIST,
            "session_date": ts(draw(st.integers(0, 3)), draw(st.sampled_from([0, 0, 30]))),
            "notes": draw(notes),
        }
        for i in ids
    ]
    existing = draw(
        st.lists(
            st.tuples(
                st.sampled_from(PATIENTS),
                st.sampled_from(["Walk daily", "Journal", "walk daily", "x" * 12000]),
            ),
            max_size=3,
            unique=True,
        )
    )
    return sessions, existing


@pytest.mark.parametrize("batch_size", [1, 7, None])
@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=datasets())
async def test_engine_matches_model(db, settings, batch_size, data):
    sessions, existing = data
    batch_size = batch_size or 1000
    await helpers.reset(db)
    await helpers.load(
        db,
        users=USERS,
        sessions=sessions,
        goals=[(p, THERAPIST, d, "in_progress") for p, d in existing],
    )
    expected = model.migrate(sessions, existing)

    dry = await helpers.run(db, settings, dry_run=True, batch_size=batch_size)
    assert dry["status"] == "succeeded"
    assert helpers.stats(dry) == expected.stats
    assert await helpers.migrated_goals(db) == []

    real = await helpers.run(db, settings, dry_run=False, batch_size=batch_size)
    assert real["status"] == "succeeded"
    assert helpers.stats(real) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
    async with db.connect() as conn:
        invalid = await conn.execute(
            text(
                "SELECT session_id, item_index, reason FROM migration_findings "
                "WHERE job_id = :j AND kind = 'invalid'"
            ),
            {"j": real["id"]},
        )
        assert sorted(invalid, key=str) == sorted(expected.invalid, key=str)
        untouched = await conn.execute(
            text("SELECT count(*) FROM treatment_goals WHERE source_job_id IS NULL")
        )
        assert untouched.scalar_one() == len(existing)


def _session(patient, day, items, minute=0, sid=None):
    return {
        "id": sid or uuid.uuid4(),
        "patient_id": patient,
        "therapist_id": THERAPIST,
        "session_date": ts(day, minute),
        "notes": {"action_items": items},
    }


async def test_candidates_only_objects_with_action_items(db, settings):
    p = PATIENTS[0]
    sessions = [
        {**_session(p, 0, []), "notes": None},
        {**_session(p, 0, []), "notes": JSON_NULL},
        {**_session(p, 0, []), "notes": {}},
        {**_session(p, 0, []), "notes": {"action_items": None}},
        {**_session(p, 0, []), "notes": [{"action_items": [{"task": "A"}]}]},
        {**_session(p, 0, []), "notes": "text"},
        {**_session(p, 0, []), "notes": 12},
        _session(p, 1, []),
        _session(p, 2, {"task": "not in an array"}),
        _session(p, 3, [{"task": "Walk"}]),
    ]
    await helpers.load(db, users=USERS, sessions=sessions)
    job = await helpers.run(db, settings)
    assert helpers.stats(job) == {
        "sessions_processed": 3,
        "sessions_with_action_items": 1,
        "goals_created": 1,
        "goals_skipped_duplicate": 0,
        "goals_skipped_invalid": 1,
        "errors": 0,
    }


async def test_earlier_session_wins_even_when_inserted_later(db, settings):
    p = PATIENTS[1]
    late = _session(p, 3, [{"task": "Walk", "category": "late"}])
    early = _session(p, 1, [{"task": "Walk", "category": "early"}])
    await helpers.load(db, users=USERS, sessions=[late])
    await helpers.load(db, users=[], sessions=[early])
    job = await helpers.run(db, settings)
    assert job["goals_created"] == 1 and job["goals_skipped_duplicate"] == 1
    goals = await helpers.migrated_goals(db)
    assert [(g[2], g[4]) for g in goals] == [(early["id"], "early")]


async def test_second_run_creates_nothing(db, settings):
    sessions = [
        _session(p, d, [{"task": f"T{d}"}, {"task": "Same"}]) for p in PATIENTS for d in range(3)
    ]
    await helpers.load(db, users=USERS, sessions=sessions)
    first = await helpers.run(db, settings, batch_size=2)
    second = await helpers.run(db, settings, batch_size=3)
    assert first["goals_created"] == 4 * 4
    assert second["goals_created"] == 0
    assert (
        second["goals_skipped_duplicate"]
        == first["goals_created"] + first["goals_skipped_duplicate"]
    )
    assert len(await helpers.migrated_goals(db)) == 16


@pytest.mark.parametrize("batch_size", [1, 2, 5])
async def test_keyset_batches_with_shared_timestamps(db, settings, batch_size):
    # One patient with many sessions at the same instant: batches hold whole patients, so the
    # id order decides every duplicate however the batches fall.
    p = PATIENTS[2]
    sessions = [
        _session(
            p,
            0,
            [{"task": f"Task {i % 4}"}, {"task": "Shared", "details": str(i)}],
            sid=uuid.UUID(int=1000 + i),
        )
        for i in range(23)
    ] + [_session(q, 0, [{"task": "Task 1"}]) for q in PATIENTS]
    await helpers.load(db, users=USERS, sessions=sessions)
    expected = model.migrate(sessions, [])
    job = await helpers.run(db, settings, batch_size=batch_size)
    assert helpers.stats(job) == expected.stats
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
async def test_a_failing_session_rolls_back_alone(db, settings, batch_size):
    p, q = PATIENTS[0], PATIENTS[3]
    bad = _session(p, 1, [{"task": "Walk"}, {"task": "Secret note"}])
    sessions = [
        _session(p, 0, [{"task": "Journal"}]),
        bad,
        _session(p, 2, [{"task": "Walk"}, {"task": 5}]),  # creates Walk, since bad's goals failed
        _session(q, 1, [{"task": "Walk"}]),
    ]
    await helpers.load(db, users=USERS, sessions=sessions)
    await helpers.fail_goal_inserts_for(db, [bad["id"]])

    expected = model.migrate(sessions, [], fail_sessions={bad["id"]})
    job = await helpers.run(db, settings, batch_size=batch_size)
    assert job["status"] == "succeeded"
    assert helpers.stats(job) == expected.stats
    assert job["errors"] == 1
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)
    async with db.connect() as conn:
        errors = (
            await conn.execute(
                text(
                    "SELECT session_id, reason FROM migration_findings "
                    "WHERE job_id = :j AND kind = 'error'"
                ),
                {"j": job["id"]},
            )
        ).all()
    assert [e.session_id for e in errors] == [bad["id"]]
    assert "P0001" in errors[0].reason and "fail_for_session()" in errors[0].reason
    assert "Secret" not in errors[0].reason and "Walk" not in errors[0].reason


async def test_findings_are_capped_but_counted(db, settings, monkeypatch):
    monkeypatch.setattr(engine, "FINDINGS_CAP", 6)
    sessions = [_session(p, d, [{"task": ""}, 7]) for p in PATIENTS for d in range(3)]
    await helpers.load(db, users=USERS, sessions=sessions)
    job = await helpers.run(db, settings, batch_size=1)
    assert job["goals_skipped_invalid"] == 24
    async with db.connect() as conn:
        stored = await conn.execute(text("SELECT count(*) FROM migration_findings"))
        assert stored.scalar_one() == 6  # both partitions stored up to 6, then the job kept 6


async def test_dry_run_preview_holds_the_first_goals(db, settings, monkeypatch):
    monkeypatch.setattr(engine, "PREVIEW_CAP", 4)
    sessions = [
        _session(PATIENTS[0], d, [{"task": f"Task {d}", "category": " c "}]) for d in range(5)
    ]
    await helpers.load(db, users=USERS, sessions=sessions)
    job = await helpers.run(db, settings, dry_run=True, batch_size=2)
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT description, category FROM migration_previews ORDER BY created_at")
            )
        ).all()
    assert job["goals_created"] == 5
    assert [tuple(r) for r in rows] == [(f"Task {d}", "c") for d in range(4)]


async def test_a_missing_table_fails_the_job_with_the_guides_advice(db, settings):
    await helpers.load(db, users=USERS, sessions=[_session(PATIENTS[0], 0, [{"task": "Walk"}])])
    job_id, token = await helpers.start_job(db, settings, dry_run=False, batch_size=10)
    async with db.begin() as conn:
        await conn.execute(text("DROP TABLE treatment_goals"))
    assert await runner.run_job(db, settings, job_id=job_id, token=token) == "failed"
    job = await helpers.get(db, job_id)
    # the guide's troubleshooting advice, and the step an empty database needs first
    assert job["error"].startswith(
        "relation 'treatment_goals' does not exist; run: alembic upgrade head"
    )
    assert "python -m app.schema.bootstrap" in job["error"]


@pytest.mark.parametrize("batch_size", [1, 3])
async def test_patients_on_partition_edges(db, settings, batch_size):
    edges = [uuid.UUID(int=0), uuid.UUID(int=(1 << 127) - 1), uuid.UUID(int=1 << 127)]
    edges.append(uuid.UUID(int=(1 << 128) - 1))
    sessions = [_session(p, d, [{"task": f"T{d % 2}"}]) for p in edges for d in range(3)]
    await helpers.load(db, users=[(p, "patient") for p in edges] + [(THERAPIST, "therapist")],
                       sessions=sessions)  # fmt: skip
    expected = model.migrate(sessions, [])
    job = await helpers.run(db, settings, batch_size=batch_size)
    assert helpers.stats(job) == expected.stats and expected.stats["goals_created"] == 8
    assert await helpers.migrated_goals(db) == helpers.model_goals(expected)


async def test_migrated_goals_get_time_ordered_ids(db, settings):
    sessions = [_session(p, d, [{"task": f"T{d}"}]) for p in PATIENTS for d in range(3)]
    await helpers.load(db, users=USERS, sessions=sessions)
    await helpers.run(db, settings, batch_size=1)
    async with db.connect() as conn:
        ids = (await conn.execute(text("SELECT id FROM treatment_goals"))).scalars().all()
    assert len(ids) == 12 and {i.version for i in ids} == {7}
    millis = [i.int >> 80 for i in ids]
    assert max(millis) - min(millis) < 60_000  # the time of insertion, not random bits
