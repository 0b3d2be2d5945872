"""Which dry run a real run was confirmed from, and whether the run matched that prediction.

A real run may name the succeeded dry run an admin confirmed (`confirmed_from`). The id is kept
in the run's `start` audit entry (store.create_job audits extra parameters), so the job tables
need no column for it; queries.py reads it with the job. Once the real run has
succeeded, its six statistics are compared with the dry run's: equal means the data did not
change in between; otherwise `differences` says by how much each statistic moved.
"""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.jobs import store
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


def annotate(row: dict[str, Any]) -> dict[str, Any]:
    """The job row with its `prediction` made from the dry run it was confirmed from, if any.

    queries.get_job and list_jobs read `confirmed_from` and that dry run's statistics
    (`predicted`) in the same statement as the job.
    """
    predicted = row.get("predicted")
    row = {k: v for k, v in row.items() if k != "predicted"}
    if row.get("confirmed_from") is None or predicted is None:
        return {**row, "confirmed_from": None, "prediction": None}
    ended = row["status"] == "succeeded"
    differences = compare(predicted, row) if ended else None
    return {
        **row,
        "prediction": {
            "dry_run_id": row["confirmed_from"],
            "predicted": predicted,
            "matched": (not differences) if ended else None,
            "differences": differences,
        },
    }
