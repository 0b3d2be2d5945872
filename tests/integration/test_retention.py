"""Dry-run previews hold clinical text: gone once their job ended more than N days ago."""

import uuid

from sqlalchemy import text

from app.jobs import retention
from tests import helpers


async def test_only_previews_of_jobs_ended_beyond_the_period_go(db, settings):
    patient = uuid.uuid4()
    await helpers.load(
        db,
        users=[(patient, "patient")],
        sessions=[
            {
                "id": uuid.uuid4(),
                "patient_id": patient,
                "therapist_id": patient,
                "session_date": helpers.ts(day),
                "notes": {"action_items": [{"task": f"Task {day}"}]},
            }
            for day in range(3)
        ],
    )
    ended_long_ago = await helpers.run(db, settings, dry_run=True)
    ended_recently = await helpers.run(db, settings, dry_run=True)
    active, _ = await helpers.start_job(db, settings, dry_run=True, batch_size=10)
    async with db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO migration_previews (job_id, session_id, item_index, patient_id, "
                "description, created_at) SELECT :active, session_id, item_index, patient_id, "
                "description, created_at FROM migration_previews WHERE job_id = :old"
            ),
            {"active": active, "old": ended_long_ago["id"]},
        )
        await conn.execute(
            text(
                "UPDATE migration_jobs SET created_at = now() - interval '30 days', "
                "finished_at = CASE WHEN id = :old THEN now() - interval '8 days' "
                "ELSE finished_at END"
            ),
            {"old": ended_long_ago["id"]},
        )
        assert await retention.purge_previews(conn, older_than_days=7) == 3

    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT job_id, count(*) FROM migration_previews GROUP BY job_id")
        )
        assert dict(rows.all()) == {ended_recently["id"]: 3, active: 3}
    assert (await helpers.get(db, ended_long_ago["id"]))["goals_created"] == 3
