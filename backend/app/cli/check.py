"""`migrate_goals_from_jsonb.py --check`: the read-only preflight, one line per check.

Exit 0 when the database is ready for a migration, 2 when it is not; nothing is written.
"""

from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import common, output
from app.config import Settings
from app.schema import preflight

_LABELS = {"ok": "ok", "warning": "warning", "problem": "PROBLEM"}


def report_lines(report: preflight.Report, *, where: str) -> list[str]:
    """The report as the operator reads it: status, check, detail; a fix under each non-ok."""
    width = max(len(c.name) for c in report.checks)
    lines = [f"Preflight of {where} (read-only: nothing is written)", ""]
    for check in report.checks:
        lines.append(f"  {_LABELS[check.status]:<8} {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"  {'':<8} {'':<{width}}  → {check.fix}")
    warnings = sum(c.status == "warning" for c in report.checks)
    lines.append("")
    if report.ready:
        lines.append(
            f"Ready: no problems ({warnings} warning{'s' * (warnings != 1)}). "
            f"Next, a dry run: {output.script('--dry-run')}"
        )
    else:
        count = len(report.problems)
        lines.append(
            f"Not ready: {count} problem{'s' * (count != 1)}. "
            f"Fix {'them' if count > 1 else 'it'} and run {output.script('--check')} again."
        )
    return lines


async def run(
    db: AsyncEngine, settings: Settings, console: output.Console, *, as_json: bool
) -> int:
    """Run the preflight on the settings' database and print it; return the exit code."""
    conn = await common.connect(db, settings)
    try:
        report = await preflight.run(conn)
    finally:
        await conn.close()
    code = common.EXIT_OK if report.ready else common.EXIT_CONFIG
    if as_json:
        console.document({"command": "check", "exit_code": code, **preflight.as_dict(report)})
    else:
        database = settings.database_url.rsplit("/", 1)[-1].split("?", 1)[0]
        console.lines(
            report_lines(
                report, where=f"database {database} at {common.where(settings.database_url)}"
            )
        )
    return code
