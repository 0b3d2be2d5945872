"""Which dry run a real run was confirmed from, and whether the run matched that prediction.

A real run may name the succeeded dry run an admin confirmed (`confirmed_from`). The id is kept
in the run's `start` audit entry (store.create_job audits extra parameters), so the job tables
need no column for it. Once the real run has
succeeded, its six statistics are compared with the dry run's: equal means the data did not
change in between; otherwise `differences` says by how much each statistic moved.
"""

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs import queries, store
from app.jobs.engine import STAT_NAMES


class InvalidSource(store.JobStateError):
    """The job named as the confirmed dry run cannot be one: a 409, like any state refusal."""


async def check_source(conn: AsyncConnection, *, job_id: uuid.UUID, dry_run: bool) -> None:
    """Refuse anything but a succeeded dry-run migration as the prediction a real run follows.

    Raises store.JobNotFound for an unknown job (a 404, like any job id that names none) and
    InvalidSource (a store.JobStateError) for a request that is itself a dry run, a job that is
    not a dry-run migration, or a dry run that has not (yet) succeeded. All of these are
    well-formed requests that the named job's state refuses, hence never a 422.
    """
    if dry_run:
        raise InvalidSource("confirmed_from applies to a real run (dry_run=false)")
    row = await store.job_state(conn, job_id=job_id)
    if row is None:
        raise store.JobNotFound(job_id)
    if row.kind != "migrate" or not row.dry_run:
        raise InvalidSource(f"confirmed_from: job {job_id} is not a dry-run migration")
    if row.status != "succeeded":
        raise InvalidSource(
            f"confirmed_from: dry run {job_id} is {row.status}; only a succeeded dry run "
            "can be confirmed"
        )


def compare(predicted: dict[str, int], actual: dict[str, int]) -> dict[str, int]:
    """Actual minus predicted, for each statistic that differs."""
    return {n: actual[n] - predicted[n] for n in STAT_NAMES if actual[n] != predicted[n]}


async def annotate(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The job rows with `confirmed_from` and `prediction` added where a run has them."""
    ids = [r["id"] for r in rows if r["kind"] == "migrate" and not r["dry_run"]]
    if not ids:
        return rows
    sources = dict(
        (
            await conn.execute(
                text(
                    "SELECT job_id, (details ->> 'confirmed_from')::uuid FROM migration_audit "
                    "WHERE action = 'start' AND job_id = ANY(:ids) "
                    "AND details ->> 'confirmed_from' IS NOT NULL"
                ),
                {"ids": ids},
            )
        ).all()
    )
    dry_runs = {}
    for dry_id in set(sources.values()):
        dry_runs[dry_id] = await queries.get_job(conn, job_id=dry_id)
    annotated = []
    for row in rows:
        dry = dry_runs.get(sources.get(row["id"]))
        if dry is not None:
            predicted = {n: dry[n] for n in STAT_NAMES}
            ended = row["status"] == "succeeded"
            differences = compare(predicted, row) if ended else None
            row = {
                **row,
                "confirmed_from": dry["id"],
                "prediction": {
                    "dry_run_id": dry["id"],
                    "predicted": predicted,
                    "matched": (not differences) if ended else None,
                    "differences": differences,
                },
            }
        annotated.append(row)
    return annotated
