"""Is this database ready for the migration? A read-only look before anything is written.

`run()` inspects the target in one READ ONLY transaction and answers one Check per line:

    server            version, and not a read-only standby
    table …           the platform tables, with the columns, types, nullability and foreign
                      keys the engine relies on (one line per table, or per thing wrong)
    service schema    the service's migrations at head, in their own version table
    index …           the indexes the engine needs, present and valid
    candidates        sessions and items to migrate (exact on small tables, else estimated
                      from statistics and a sample)
    setting …         statement_timeout, lock_timeout: what would make a run fail or crawl
    privileges        what the service's role may read and write
    statistics        whether the planner knows the tables' sizes

Each problem says what to do. `schema_problems()` is the cheap part (a few catalog look-ups,
no table read), checked before every job start through the API, and by /ready.
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models.therapy_session import CANDIDATE_PREDICATE
from app.schema import platform, version

Status = Literal["ok", "warning", "problem"]

MIN_SERVER_VERSION = 130000  # gen_random_uuid() is built in from PostgreSQL 13
# Below this many rows candidates are counted exactly; above, estimated from a sample.
EXACT_BELOW = 100_000
SAMPLE_ROWS = 20_000
# A batch of 1,000 sessions takes ~50 ms on an idle server, seconds on a busy one, and the
# count at a job's start reads every candidate: below the first it fails, below the second
# it may fail on a large or loaded database.
STATEMENT_TIMEOUT_PROBLEM_MS = 5_000
STATEMENT_TIMEOUT_WARNING_MS = 60_000
LOCK_TIMEOUT_WARNING_MS = 1_000
UPGRADE = "cd backend && alembic upgrade head"
BOOTSTRAP = "python -m app.schema.bootstrap"

# The indexes the engine's statements are planned around (built by revisions 0003 and 0004).
ENGINE_INDEXES = {
    "ix_therapy_sessions_candidates": (
        "therapy_sessions",
        "CREATE INDEX CONCURRENTLY ix_therapy_sessions_candidates ON therapy_sessions "
        f"(patient_id, session_date, id) WHERE {CANDIDATE_PREDICATE}",
    ),
    "ix_treatment_goals_patient_id_description_md5": (
        "treatment_goals",
        "CREATE INDEX CONCURRENTLY ix_treatment_goals_patient_id_description_md5 "
        "ON treatment_goals (patient_id, md5(description))",
    ),
    "ix_treatment_goals_source_job_id": (
        "treatment_goals",
        "CREATE INDEX CONCURRENTLY ix_treatment_goals_source_job_id "
        "ON treatment_goals (source_job_id, id) WHERE source_job_id IS NOT NULL",
    ),
}


@dataclass(frozen=True)
class Check:
    """One line of the preflight: what was checked, how it stands, and what to do if not ok."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class Report:
    checks: list[Check]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.status == "problem"]

    @property
    def ready(self) -> bool:
        return not self.problems


class SchemaNotReady(Exception):
    """The database cannot take a job yet; carries the problems and what to do."""

    def __init__(self, problems: list[Check]):
        super().__init__("; ".join(p.detail for p in problems))
        self.problems = problems


def _problem(name: str, detail: str, fix: str) -> Check:
    return Check(name, "problem", detail, fix)


# --- the cheap part ---------------------------------------------------------------------

_READINESS_SQL = """
SELECT (SELECT array_agg(name ORDER BY position)
        FROM unnest(CAST(:tables AS text[])) WITH ORDINALITY AS t(name, position)
        WHERE to_regclass(name) IS NULL) AS missing_tables,
       to_regclass('migration_jobs') IS NOT NULL AS has_job_tables
"""


async def schema_problems(conn: AsyncConnection, *, columns: bool = True) -> list[Check]:
    """Platform tables present (with the columns the engine needs) and the service's schema
    at head; [] when ready. /ready skips the columns: it is polled every few seconds."""
    row = (
        await conn.execute(text(_READINESS_SQL), {"tables": list(platform.PLATFORM_TABLES)})
    ).one()
    missing = set(row.missing_tables or ())
    problems = [_missing_table(name) for name in platform.PLATFORM_TABLES if name in missing]
    if columns:
        for table in (t for t in platform.PLATFORM_TABLES if t not in missing):
            problems.extend(c for c in await check_table(conn, table) if c.status == "problem")
    schema = _schema_check(await version.current(conn), has_job_tables=row.has_job_tables)
    if schema.status == "problem":
        problems.append(schema)
    return problems


async def require_ready(conn: AsyncConnection) -> None:
    """Raise SchemaNotReady unless a job can run on this database."""
    problems = await schema_problems(conn)
    if problems:
        raise SchemaNotReady(problems)


def _missing_table(name: str) -> Check:
    return _problem(
        f"table {name}",
        "missing",
        "check that DATABASE_URL names the platform's database; "
        f"on an empty database create the platform tables: {BOOTSTRAP}",
    )


def _schema_check(revision: str | None, *, has_job_tables: bool) -> Check:
    head = version.head()
    if revision == head:
        return Check("service schema", "ok", f"at revision {head} (head)")
    if revision is None and has_job_tables:
        return _problem(
            "service schema",
            f"job tables from an earlier install, no {version.VERSION_TABLE}",
            f"{UPGRADE} (keeps the job tables and their history)",
        )
    if revision is None:
        return _problem(
            "service schema",
            "not installed",
            f"{UPGRADE} (creates the job tables, adds treatment_goals.source_job_id, "
            "builds indexes concurrently; no platform row is changed)",
        )
    if revision in version.known():
        return _problem("service schema", f"at revision {revision}, head is {head}", UPGRADE)
    return _problem(
        "service schema",
        f"at revision {revision}, which this code does not know (head is {head})",
        "the database was migrated by a newer version of this service: deploy that version",
    )


# --- the full preflight -----------------------------------------------------------------


async def run(conn: AsyncConnection, *, exact_below: int = EXACT_BELOW) -> Report:
    """Every check, in one read-only transaction; never writes, never raises for a finding."""
    checks: list[Check] = []
    async with conn.begin():
        await conn.execute(text("SET TRANSACTION READ ONLY"))
        # Our own look must not be cut short by the timeouts it checks; those are read as
        # every session of the service starts with them (reset_val).
        await conn.execute(text("SET LOCAL statement_timeout = '60s'"))
        await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
        settings = await _settings(conn)
        checks.append(_server(settings))
        present = await _existing_tables(conn)
        for table in platform.PLATFORM_TABLES:
            checks.extend(
                await check_table(conn, table) if table in present else [_missing_table(table)]
            )
        row = (
            await conn.execute(text(_READINESS_SQL), {"tables": list(platform.PLATFORM_TABLES)})
        ).one()
        revision = await version.current(conn)
        checks.append(_schema_check(revision, has_job_tables=row.has_job_tables))
        checks.extend(await _indexes(conn, at_head=revision == version.head()))
        if "therapy_sessions" in present:
            checks.append(await _candidates(conn, exact_below=exact_below))
        checks.extend(_timeouts(settings))
        checks.append(await _privileges(conn, present))
        checks.append(await _statistics(conn, present))
    return Report(checks)


_SETTINGS_SQL = """
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       pg_is_in_recovery() AS in_recovery,
       current_setting('default_transaction_read_only') AS read_only,
       (SELECT reset_val::bigint FROM pg_settings WHERE name = 'statement_timeout')
           AS statement_timeout_ms,
       (SELECT reset_val::bigint FROM pg_settings WHERE name = 'lock_timeout') AS lock_timeout_ms,
       current_user AS role,
       current_database() AS database
"""


async def _settings(conn: AsyncConnection) -> dict:
    return dict((await conn.execute(text(_SETTINGS_SQL))).mappings().one())


def _server(s: dict) -> Check:
    name = "server"
    detail = f"PostgreSQL {s['version']}"
    if s["version_num"] < MIN_SERVER_VERSION:
        return _problem(name, detail + ", older than 13", "upgrade PostgreSQL to 13 or newer")
    if s["in_recovery"]:
        return _problem(
            name, detail + ", a read-only standby", "point DATABASE_URL at the primary server"
        )
    if s["read_only"] == "on":
        return _problem(
            name,
            detail + ", default_transaction_read_only is on",
            f"ALTER ROLE {s['role']} SET default_transaction_read_only = off",
        )
    return Check(name, "ok", detail)


async def _existing_tables(conn: AsyncConnection) -> set[str]:
    rows = await conn.execute(
        text(
            "SELECT name FROM unnest(CAST(:names AS text[])) AS name "
            "WHERE to_regclass(name) IS NOT NULL"
        ),
        {"names": list(platform.PLATFORM_TABLES)},
    )
    return set(rows.scalars())


_COLUMNS_SQL = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
           AS has_default
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped
"""

_FOREIGN_KEYS_SQL = """
SELECT a.attname AS column_name, c.confrelid::regclass::text AS referenced
FROM pg_constraint AS c
JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND c.conrelid = to_regclass(:table) AND cardinality(c.conkey) = 1
"""


async def check_table(conn: AsyncConnection, table: str) -> list[Check]:
    """One line for a table as the engine needs it, else one per thing wrong; then warnings."""
    columns = {r.name: r for r in await conn.execute(text(_COLUMNS_SQL), {"table": table})}
    problems: list[Check] = []
    warnings: list[Check] = []
    described = []
    for need in (n for n in platform.NEEDS if n.table == table):
        where = f"column {table}.{need.column}"
        found = columns.get(need.column)
        if found is None:
            problems.append(
                _problem(
                    where, "missing", f"the engine reads or writes it; add it as {need.types[0]}"
                )
            )
            continue
        base_type = found.type.split("(")[0]
        if base_type in need.tolerated:
            warnings.append(
                Check(
                    where,
                    "warning",
                    f"is {found.type}: goal times are read and written in the server's TimeZone",
                    "keep the TimeZone setting the same between a migration and its rollback",
                )
            )
        if base_type not in need.types + need.tolerated:
            problems.append(
                _problem(
                    where, f"is {found.type}, the engine needs {need.types[0]}", "alter its type"
                )
            )
        elif need.nullable is False and found.nullable:
            problems.append(
                _problem(
                    where,
                    "allows NULL; rows with NULL here would never be migrated",
                    f"fill it, then ALTER TABLE {table} ALTER COLUMN {need.column} SET NOT NULL",
                )
            )
        elif need.nullable is True and not found.nullable:
            problems.append(
                _problem(
                    where,
                    "is NOT NULL; the engine writes NULL here for items without one",
                    f"ALTER TABLE {table} ALTER COLUMN {need.column} DROP NOT NULL",
                )
            )
        else:
            described.append(need.column)
    if table == "treatment_goals":
        for name, column in columns.items():
            if (
                name not in platform.GOAL_COLUMNS_WRITTEN
                and not column.nullable
                and not column.has_default
            ):
                problems.append(
                    _problem(
                        f"column {table}.{name}",
                        "NOT NULL without a default; every migrated goal's insert would fail",
                        "give it a default or allow NULL",
                    )
                )
    fks = {
        r.column_name: r.referenced
        for r in await conn.execute(text(_FOREIGN_KEYS_SQL), {"table": table})
    }
    linked = []
    for fk_table, column, referenced in platform.FOREIGN_KEYS:
        if fk_table != table:
            continue
        actual = fks.get(column)
        if actual is not None and actual.split(".")[-1].strip('"') != referenced:
            problems.append(
                _problem(
                    f"foreign key {table}.{column}",
                    f"references {actual}, the engine copies {referenced} ids into it",
                    "the engine cannot migrate into this schema; check with the platform's team",
                )
            )
        elif actual is not None:
            linked.append(f"{column} → {referenced}")
    if problems:
        return problems + warnings
    count = len(described)
    detail = (
        f"{count} column{'s' * (count != 1)} as the engine needs "
        f"{'them' if count != 1 else 'it'} ({', '.join(described)})"
    )
    if linked:
        detail += "; foreign keys " + ", ".join(linked)
    return [Check(f"table {table}", "ok", detail), *warnings]


_INDEXES_SQL = """
SELECT c.relname AS name, i.indisvalid AND i.indisready AS valid
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE c.relname = ANY(CAST(:names AS text[]))
  AND c.relnamespace = to_regnamespace(current_schema())
"""


async def _indexes(conn: AsyncConnection, *, at_head: bool) -> list[Check]:
    found = {
        r.name: r.valid
        for r in await conn.execute(text(_INDEXES_SQL), {"names": list(ENGINE_INDEXES)})
    }
    checks = []
    for name, (table, definition) in ENGINE_INDEXES.items():
        label = f"index {name}"
        if found.get(name):
            checks.append(Check(label, "ok", f"on {table}, valid"))
        elif name in found:
            checks.append(
                _problem(
                    label,
                    "INVALID (an interrupted concurrent build); the engine would crawl",
                    f"REINDEX INDEX CONCURRENTLY {name}"
                    if at_head
                    else f"{UPGRADE} (drops and rebuilds it)",
                )
            )
        else:
            checks.append(
                _problem(
                    label,
                    "missing",
                    definition if at_head else f"{UPGRADE} (builds it concurrently)",
                )
            )
    return checks


_ITEMS = (
    "CASE WHEN jsonb_typeof(extracted_notes -> 'action_items') = 'array' "
    "THEN jsonb_array_length(extracted_notes -> 'action_items') ELSE 1 END"
)
_EXACT_SQL = f"""
SELECT count(*) AS sessions, coalesce(sum({_ITEMS}), 0) AS items
FROM therapy_sessions WHERE {CANDIDATE_PREDICATE}
"""
# SYSTEM sampling reads whole random pages: cheap on any size; REPEATABLE keeps it stable.
_SAMPLE_SQL = f"""
SELECT count(*) AS sampled,
       count(*) FILTER (WHERE {CANDIDATE_PREDICATE}) AS sessions,
       coalesce(sum({_ITEMS}) FILTER (WHERE {CANDIDATE_PREDICATE}), 0) AS items
FROM therapy_sessions TABLESAMPLE SYSTEM (:percent) REPEATABLE (0)
"""
# reltuples is -1 before the first ANALYZE; then guess from the size (~30 rows a page).
_ROWS_SQL = """
SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint
            ELSE pg_relation_size(oid) / current_setting('block_size')::int * 30 END
FROM pg_class WHERE oid = to_regclass('therapy_sessions')
"""


async def _candidates(conn: AsyncConnection, *, exact_below: int) -> Check:
    name = "candidates"
    try:
        async with conn.begin_nested():
            rows = (await conn.execute(text(_ROWS_SQL))).scalar() or 0
            if rows < exact_below:
                exact = (await conn.execute(text(_EXACT_SQL))).one()
                return Check(
                    name,
                    "ok",
                    f"{exact.sessions:,} sessions with action items, {exact.items:,} items (exact)",
                )
            percent = min(100.0, 100.0 * SAMPLE_ROWS / rows)
            sample = (await conn.execute(text(_SAMPLE_SQL), {"percent": percent})).one()
    except DBAPIError as exc:
        return Check(name, "warning", f"could not count: {type(exc.orig).__name__}")
    scale = rows / sample.sampled if sample.sampled else 0
    return Check(
        name,
        "ok",
        f"about {round(sample.sessions * scale):,} sessions with action items, about "
        f"{round(sample.items * scale):,} items (estimated: ~{rows:,} sessions in table "
        f"statistics, a {percent:.2g}% sample)",
    )


def _duration(ms: int) -> str:
    return f"{ms} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _timeouts(s: dict) -> list[Check]:
    fix_scope = f"ALTER ROLE {s['role']} IN DATABASE {s['database']} SET"
    statement = s["statement_timeout_ms"]
    name = "setting statement_timeout"
    if statement == 0:
        checks = [Check(name, "ok", "0 (no limit)")]
    elif statement < STATEMENT_TIMEOUT_PROBLEM_MS:
        checks = [
            _problem(
                name,
                f"{_duration(statement)}: batches and the count at a job's start would be "
                "cancelled",
                f"{fix_scope} statement_timeout = '5min' (or 0), for the service's role only",
            )
        ]
    elif statement < STATEMENT_TIMEOUT_WARNING_MS:
        checks = [
            Check(
                name,
                "warning",
                f"{_duration(statement)}: enough for batches; the count at a job's start on a "
                "large or busy database may need longer",
                f"{fix_scope} statement_timeout = '5min' if a job fails with a statement timeout",
            )
        ]
    else:
        checks = [Check(name, "ok", _duration(statement))]
    lock = s["lock_timeout_ms"]
    name = "setting lock_timeout"
    if 0 < lock < LOCK_TIMEOUT_WARNING_MS:
        checks.append(
            Check(
                name,
                "warning",
                f"{_duration(lock)}: batches waiting on clinicians' row locks will be retried "
                "or fail",
                f"{fix_scope} lock_timeout = '5s' for the service's role",
            )
        )
    else:
        checks.append(Check(name, "ok", "0 (no limit)" if lock == 0 else _duration(lock)))
    return checks


_PRIVILEGES = (
    ("therapy_sessions", "SELECT"),
    ("treatment_goals", "SELECT"),
    ("treatment_goals", "INSERT"),
    ("treatment_goals", "UPDATE"),
    ("treatment_goals", "DELETE"),
    ("users", "SELECT"),
)


async def _privileges(conn: AsyncConnection, present: set[str]) -> Check:
    missing = []
    for table, privilege in _PRIVILEGES:
        if table not in present:
            continue
        # One privilege per call: given a list, has_table_privilege is true if any is held.
        allowed = (
            await conn.execute(
                text("SELECT has_table_privilege(:table, :privilege)"),
                {"table": table, "privilege": privilege},
            )
        ).scalar()
        if not allowed:
            missing.append(f"{privilege} on {table}")
    can_create = (
        await conn.execute(text("SELECT has_schema_privilege(current_schema(), 'CREATE')"))
    ).scalar()
    if missing:
        return _problem(
            "privileges",
            "the service's role lacks " + "; ".join(missing),
            "GRANT " + "; GRANT ".join(f"{m} TO <the service's role>" for m in missing),
        )
    detail = "may read sessions and write goals"
    if not can_create:
        return Check(
            "privileges",
            "warning",
            detail + "; may not create objects (the upgrade needs a role that can)",
            "run `alembic upgrade head` as the schema's owner",
        )
    return Check("privileges", "ok", detail)


_STATISTICS_SQL = """
SELECT c.relname AS name
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid IN (to_regclass('therapy_sessions'), to_regclass('treatment_goals'))
  AND c.relpages > 100
  AND coalesce(s.last_analyze, s.last_autoanalyze) IS NULL
"""


async def _statistics(conn: AsyncConnection, present: set[str]) -> Check:
    never = list((await conn.execute(text(_STATISTICS_SQL))).scalars())
    if never:
        return Check(
            "statistics",
            "warning",
            f"{', '.join(never)} never analyzed: the planner may pick slow plans",
            f"ANALYZE {', '.join(never)}",
        )
    return Check("statistics", "ok", "table statistics available")


def as_dict(report: Report) -> dict:
    """The report as the API and `--check --json` give it."""
    return {
        "ready": report.ready,
        "checked_at": report.checked_at,
        "checks": [dataclasses.asdict(c) for c in report.checks],
    }
