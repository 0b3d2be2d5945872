"""Back up the database in DATABASE_URL with pg_dump, custom format (docs/CLI.md).

Run from backend/:  python scripts/backup_database.py [--output PATH]
The logic lives in app.cli.backup; this file only makes `app` importable when run as a file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.cli import backup  # noqa: E402

if __name__ == "__main__":
    sys.exit(backup.main())
