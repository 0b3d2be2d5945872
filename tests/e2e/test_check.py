"""`migrate_goals_from_jsonb.py --check` as a DBA runs it: one line per check, exit 0 or 2."""

import json

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.e2e.test_cli import cli


async def test_a_ready_database_exits_0_and_writes_nothing(database_url, db):
    run = await cli(database_url, "--check")
    assert run.code == 0, run.err
    assert run.lines[0].startswith("Preflight of database ")
    assert run.lines[0].endswith("(read-only: nothing is written)")
    statuses = [line.split()[0] for line in run.lines[2:-2] if line.strip()]
    assert set(statuses) <= {"ok", "warning", "→"} and statuses.count("ok") >= 10
    assert any(line.split()[:3] == ["ok", "service", "schema"] for line in run.lines)
    assert run.lines[-1].startswith("Ready: no problems")
    assert "python scripts/migrate_goals_from_jsonb.py --dry-run" in run.lines[-1]
    async with db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM migration_jobs"))).scalar() == 0


async def test_a_short_statement_timeout_exits_2_with_what_to_do(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        name = make_url(database_url).database
        await conn.execute(f"ALTER DATABASE {name} SET statement_timeout = '200ms'")
    finally:
        await conn.close()

    run = await cli(database_url, "--check")
    assert run.code == 2
    (index,) = [i for i, line in enumerate(run.lines) if "statement_timeout" in line.split()[:3]]
    assert run.lines[index].split()[:3] == ["PROBLEM", "setting", "statement_timeout"]
    assert "200 ms" in run.lines[index]
    assert run.lines[index + 1].strip().startswith("→ ALTER ROLE")
    assert run.lines[-1] == (
        "Not ready: 1 problem. Fix it and run python scripts/migrate_goals_from_jsonb.py "
        "--check again."
    )

    as_json = await cli(database_url, "--check", "--json")
    assert as_json.code == 2
    document = json.loads(as_json.out)
    assert document["command"] == "check" and document["ready"] is False
    assert [c["name"] for c in document["checks"] if c["status"] == "problem"] == [
        "setting statement_timeout"
    ]


async def test_check_takes_no_job_options():
    run = await cli(None, "--check", "--dry-run")
    assert run.code == 2 and "--check takes no options but --json" in run.err
