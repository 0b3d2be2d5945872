"""The health limits (throttle.Limits) as command-line options: parsed, and named back.

A new job's options are laid over the THROTTLE_* settings (Settings.limits); `--limits JOB_ID`
changes a job's. `--status` and `--limits` print a limit as its option spells it, so what an
operator reads can be typed back.
"""

import argparse
from typing import Any

from app.jobs import throttle


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError("must be a number, 0 or more (0 turns the limit off)")
    return number


def _whole(value: str) -> int:
    number = _number(value)
    if number != int(number):
        raise argparse.ArgumentTypeError("must be a whole number, 0 or more (0: off)")
    return int(number)


# Each numeric limit: its option, its value's kind, what it limits.
OPTIONS = {
    "max_replay_lag_seconds": ("--max-replay-lag", _number, "SECONDS", "a standby's replay lag"),
    "max_replay_lag_bytes": ("--max-replay-lag-bytes", _whole, "N",
                             "bytes of WAL a standby or logical slot is behind"),
    "max_archive_backlog": ("--max-archive-backlog", _whole, "N",
                            "WAL segments waiting for the archiver"),
    "max_lock_wait_seconds": ("--max-lock-wait", _number, "SECONDS",
                              "another session's wait on a lock the job holds"),
    "max_batch_slowdown": ("--max-batch-slowdown", _number, "X",
                           "a batch's time over its recent median"),
    "share_above_sessions": ("--share-above-sessions", _whole, "N",
                             "other sessions at work before the job shares (one batch at a time)"),
}  # fmt: skip
SWITCHES = {"yield_to_autovacuum": "--yield-to-autovacuum"}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The limit options, in a group of their own."""
    group = parser.add_argument_group(
        "health limits",
        "the job waits while one is exceeded (0 turns one off; defaults: THROTTLE_* settings, "
        "see docs/API.md); with --limits JOB_ID they change that job",
    )
    for name, (option, kind, metavar, what) in OPTIONS.items():
        group.add_argument(option, dest=name, type=kind, metavar=metavar, help=what)
    group.add_argument(
        SWITCHES["yield_to_autovacuum"],
        dest="yield_to_autovacuum",
        action=argparse.BooleanOptionalAction,
        help="wait while autovacuum works on the two tables (default; anti-wraparound vacuums "
        "are always waited for)",
    )


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The limits the command line names, 0 turned into None (off)."""
    return throttle.given(vars(args))


def _value(name: str, value: Any) -> str:
    if name in SWITCHES:
        return SWITCHES[name].replace("--", "--" + "no-" * (not value), 1)
    if value is None:
        return "off"
    return str(int(value)) if value == int(value) else str(value)


def named(name: str, value: Any) -> str:
    """One limit as its option sets it: `--max-lock-wait 0.2`, `--no-yield-to-autovacuum`."""
    if name in SWITCHES:
        return _value(name, value)
    return f"{OPTIONS[name][0]} {_value(name, value)}"


def shown(values: dict[str, Any]) -> str:
    """A job's limits in one line, in throttle.Limits' order."""
    names = [name for name in throttle.Limits.names() if name in values]
    return ", ".join(named(name, values[name]) for name in names)


def changed(before: throttle.Limits, changes: dict[str, Any]) -> str:
    """What --limits changed: `--max-lock-wait 0.05 (was 0.2)`, each limit it named."""
    old = before.as_dict()
    said = []
    for name in throttle.Limits.names():
        if name not in changes:
            continue
        was = "unchanged" if old[name] == changes[name] else f"was {_value(name, old[name])}"
        said.append(f"{named(name, changes[name])} ({was})")
    return ", ".join(said)
