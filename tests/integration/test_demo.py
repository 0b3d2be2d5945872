"""The demo generator: deterministic for a seed, realistic in shape, written with COPY."""

import asyncio

import asyncpg
import pytest

from app import demo
from app.config import load_settings
from app.db import create_engine
from tests.conftest import SECRET, drop_database, new_database
from tests.expected import model_outcome


def test_same_seed_same_data_other_seed_other_data():
    assert demo.build(300, seed=3) == demo.build(300, seed=3)
    assert demo.build(300, seed=3) != demo.build(300, seed=4)


@pytest.mark.parametrize(
    ("mix", "low", "high"), [("duplicate-heavy", 0.40, 0.60), ("insert-heavy", 0.85, 0.95)]
)
async def test_each_mix_makes_the_share_of_goals_it_promises(database_url, mix, low, high):
    await demo.write(database_url, sessions=4000, seed=5, mix=mix)
    db = create_engine(load_settings(database_url=database_url, jwt_secret=SECRET, _env_file=None))
    try:
        outcome = await model_outcome(db)
    finally:
        await db.dispose()
    items = sum(
        outcome.stats[name]
        for name in ("goals_created", "goals_skipped_duplicate", "goals_skipped_invalid")
    )
    assert low <= outcome.stats["goals_created"] / items <= high


def test_the_default_mix_is_the_data_every_seed_always_gave():
    # Tests and earlier benchmarks rely on a seed's data staying what it was.
    assert demo.build(500, seed=3) == demo.build(500, seed=3, mix="duplicate-heavy")
    assert demo.build(500, seed=3) != demo.build(500, seed=3, mix="insert-heavy")


async def test_written_data_has_the_shapes_the_migration_meets(database_url):
    counts = await demo.write(database_url, sessions=3000, seed=11)
    assert counts.sessions == 3000 and counts.goals > 0
    conn = await asyncpg.connect(database_url)
    try:
        shapes = await conn.fetchrow(
            """
            SELECT count(*) FILTER (WHERE extracted_notes IS NULL) AS no_notes,
                   count(*) FILTER (WHERE extracted_notes ? 'action_items'
                                    AND jsonb_typeof(extracted_notes -> 'action_items') <> 'array')
                       AS not_array,
                   count(*) FILTER (WHERE jsonb_typeof(extracted_notes -> 'action_items') = 'array')
                       AS with_items
            FROM therapy_sessions
            """
        )
        items = await conn.fetchrow(
            """
            SELECT count(*) AS total,
                   count(*) FILTER (WHERE NOT (item ? 'details')) AS without_details,
                   count(*) FILTER (WHERE jsonb_typeof(item) <> 'object'
                                    OR jsonb_typeof(item -> 'task') IS DISTINCT FROM 'string')
                       AS malformed
            FROM therapy_sessions,
                 jsonb_array_elements(extracted_notes -> 'action_items') AS item
            WHERE jsonb_typeof(extracted_notes -> 'action_items') = 'array'
            """
        )
        repeats = await conn.fetchval(
            """
            SELECT count(*) FROM (
                SELECT patient_id, item ->> 'task'
                FROM therapy_sessions, jsonb_array_elements(extracted_notes -> 'action_items') item
                WHERE jsonb_typeof(extracted_notes -> 'action_items') = 'array'
                GROUP BY 1, 2 HAVING count(*) > 1) AS r
            """
        )
    finally:
        await conn.close()
    assert shapes["no_notes"] > 0 and shapes["not_array"] > 0 and shapes["with_items"] > 2000
    assert 2.5 <= items["total"] / shapes["with_items"] <= 3.5
    assert items["without_details"] > 0
    assert 0.002 < items["malformed"] / items["total"] < 0.03
    assert repeats > 100


async def test_if_empty_leaves_existing_data_alone(database_url):
    await demo.write(database_url, sessions=50, seed=1)
    again = await demo.write(database_url, sessions=50, seed=1, if_empty=True)
    assert again.sessions == 0


def _counts(database_url):
    async def go():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchrow(
                "SELECT (SELECT count(*) FROM therapy_sessions) AS sessions,"
                " (SELECT count(DISTINCT id) FROM therapy_sessions) AS session_ids,"
                " (SELECT count(*) FROM users) AS users,"
                " (SELECT count(*) FROM users WHERE role = 'admin') AS admins"
            )
        finally:
            await conn.close()

    return asyncio.run(go())


def test_a_second_load_adds_a_fresh_batch_instead_of_a_traceback(database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert demo.main(["--sessions", "60"]) == 0
    first = _counts(database_url)
    capsys.readouterr()

    assert demo.main(["--sessions", "60"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("demo data: ") and out.endswith(
        ", 60 sessions, 1 goals, added to the 60 sessions already there\n"
    )
    second = _counts(database_url)
    assert second["sessions"] == second["session_ids"] == 120
    assert second["users"] == 2 * first["users"] - 1 and second["admins"] == 1

    assert demo.main(["--sessions", "60", "--if-empty"]) == 0
    left = capsys.readouterr().out
    assert left == "demo data: the database already has 120 sessions, left as is\n"


def test_a_database_without_the_schema_gets_one_line(server_url, monkeypatch, capsys):
    url = new_database(server_url)  # empty: Alembic never ran
    monkeypatch.setenv("DATABASE_URL", url)
    try:
        assert demo.main(["--sessions", "10"]) == 2
    finally:
        drop_database(url)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        'demo data not written: relation "therapy_sessions" does not exist; '
        "run: alembic upgrade head\n"
    )
