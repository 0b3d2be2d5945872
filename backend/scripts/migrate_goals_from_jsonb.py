"""Backfill treatment_goals from therapy_sessions.extracted_notes action items (docs/CLI.md).

Run from backend/:  python scripts/migrate_goals_from_jsonb.py --dry-run --verbose
The logic lives in app.cli.migrate; this file only makes `app` importable when run as a file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import migrate  # noqa: E402

if __name__ == "__main__":
    sys.exit(migrate.main())
