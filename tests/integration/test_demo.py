"""The demo generator: deterministic for a seed, realistic in shape, written with COPY."""

import asyncpg

from app import demo


def test_same_seed_same_data_other_seed_other_data():
    assert demo.build(300, seed=3) == demo.build(300, seed=3)
    assert demo.build(300, seed=3) != demo.build(300, seed=4)


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
