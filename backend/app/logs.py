"""Log lines as text (what `make run` prints) or as one JSON object per line (LOG_FORMAT=json).

Our log calls pass a stable event name and their fields as `extra`:

    log.warning("job %s: lease revoked ...", job_id, extra={"event": "job.lease_lost",
                                                           "job_id": job_id})

The text format prints the message as it always has; the JSON format prints

    {"ts": "2026-11-25T13:10:04.690Z", "level": "WARNING", "logger": "app.jobs",
     "event": "job.lease_lost", "message": "job … : lease revoked …", "job_id": "…"}

Fields are ids, counts, durations, SQLSTATEs and fixed words: never clinical text, never a
patient id. Lines of other libraries (uvicorn's) get `event` "log", or "http.request" for
uvicorn's access lines, whose fields come from the line itself.
"""

import json
import logging
from datetime import UTC, datetime
from typing import Any

from app.jobs import errors

TEXT_FORMAT = "%(levelname)-9s %(name)s: %(message)s"
# uvicorn's loggers: the server's own lines and, separately, one line per request.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_OURS = "_goal_migration_handler"
# What every LogRecord carries: anything else on a record came as a field in `extra`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}


def event(name: str, **fields: Any) -> dict[str, Any]:
    """A log call's `extra`: its event name and fields."""
    return {"event": name, **fields}


def failure(exc: BaseException) -> dict[str, Any]:
    """The fields that say what went wrong: the safe description, the SQLSTATE and class only."""
    info = errors.error_info(exc)
    return {
        "error": errors.describe(exc),
        "sqlstate": info.sqlstate,
        "error_class": info.error_class,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or _foreign_event(record),
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and "event" not in record.__dict__:
            line.update(_access_fields(record))
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key != "event":
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def _foreign_event(record: logging.LogRecord) -> str:
    return "http.request" if record.name == "uvicorn.access" else "log"


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    # uvicorn's access line: (client address, method, path with query, HTTP version, status).
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) != 5:
        return {}
    client, method, path, version, status = args
    return {"client": client, "method": method, "path": path, "status": status}


def _formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(log_format: str = "text") -> None:
    """Our loggers print to stderr beside uvicorn's, as text or JSON; safe to call again.

    JSON also formats uvicorn's handlers (configure after uvicorn has set up its logging) and
    gives the root logger a JSON handler when it has none, so every line stays JSON. Text
    leaves uvicorn's lines as uvicorn prints them.
    """
    app_log = logging.getLogger("app")
    if not app_log.handlers:
        handler = logging.StreamHandler()
        setattr(handler, _OURS, True)
        app_log.addHandler(handler)
        app_log.setLevel(logging.INFO)
        app_log.propagate = False
    for handler in app_log.handlers:
        if getattr(handler, _OURS, False):
            handler.setFormatter(_formatter(log_format))
    if log_format != "json":
        return
    for name in UVICORN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
