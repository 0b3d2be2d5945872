"""The command lines of docs/CLI.md, as importable modules behind the thin `backend/scripts/`.

common.py    exit codes, operator-facing errors, settings and the database preflight
output.py    the migration guide's text: banner, progress, per-session blocks, summaries
migrate.py   scripts/migrate_goals_from_jsonb.py: runs app.jobs jobs in the foreground
backup.py    scripts/backup_database.py: pg_dump of the database in DATABASE_URL
"""
