"""The JSON log format: one object per line, its fixed keys first, fields from `extra`."""

import json
import logging
import sys
import uuid

from app import logs

JOB = uuid.UUID("6f1f6c2e-0000-4000-8000-000000000001")


def record(name: str, msg: str, args=(), **extra) -> logging.LogRecord:
    made = logging.getLogger(name).makeRecord(name, logging.WARNING, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_a_job_event_carries_its_fields():
    line = logs.JsonFormatter().format(
        record(
            "app.jobs",
            "job %s: %d session(s) failed",
            (JOB, 2),
            **logs.event("job.sessions_failed", job_id=JOB, partition=1, session_ids=[JOB]),
        )
    )
    assert "\n" not in line
    parsed = json.loads(line)
    assert list(parsed)[:5] == ["ts", "level", "logger", "event", "message"]
    assert parsed["ts"].endswith("Z") and parsed["level"] == "WARNING"
    assert parsed["event"] == "job.sessions_failed"
    assert parsed["message"] == f"job {JOB}: 2 session(s) failed"
    assert parsed["job_id"] == str(JOB) and parsed["session_ids"] == [str(JOB)]
    assert parsed["partition"] == 1


def test_other_libraries_lines_are_json_too():
    access = json.loads(
        logs.JsonFormatter().format(
            record(
                "uvicorn.access",
                '%s - "%s %s HTTP/%s" %d',
                ("127.0.0.1:5000", "GET", "/health", "1.1", 200),
            )
        )
    )
    assert access["event"] == "http.request"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/health", 200)
    started = json.loads(
        logs.JsonFormatter().format(
            record("uvicorn.error", "Started server process [%d]", (7,), color_message="x")
        )
    )
    assert started["event"] == "log" and "color_message" not in started


def test_a_traceback_stays_inside_its_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = logging.getLogger("app").makeRecord(
            "app", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    parsed = json.loads(logs.JsonFormatter().format(made))
    assert parsed["event"] == "log" and "RuntimeError: boom" in parsed["exception"]


def test_text_stays_as_it_was():
    logs.configure("text")
    handler = next(h for h in logging.getLogger("app").handlers if getattr(h, logs._OURS, False))
    assert handler.formatter._fmt == "%(levelname)-9s %(name)s: %(message)s"
