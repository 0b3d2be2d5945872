"""A plain, obviously-correct sequential model of the migration rules, to judge the engine by.

It imports nothing from `app`: it is written from docs/ENGINE.md alone, so a rule bug in the
engine cannot hide in the expectations. One session at a time, one transaction each, items in
array order. Patients are walked in uuid order and each patient's sessions in (session_date, id)
order, the order docs/ENGINE.md gives for batches; duplicates never cross patients, so this is
the guide's (session_date, id) order for every duplicate decision.
"""

from dataclasses import dataclass, field

WS = " \t\n\r\f\v"
STATS = (
    "sessions_processed",
    "sessions_with_action_items",
    "goals_created",
    "goals_skipped_duplicate",
    "goals_skipped_invalid",
    "errors",
)


@dataclass
class Outcome:
    stats: dict = field(default_factory=lambda: dict.fromkeys(STATS, 0))
    goals: list = field(default_factory=list)  # (patient, therapist, session, desc, cat, date)
    invalid: list = field(default_factory=list)  # (session_id, item_index, reason)
    errors: list = field(default_factory=list)  # session ids
    findings: list = field(default_factory=list)  # (session_id, item_index, kind), in order

    @property
    def patients_with_goals_created(self) -> int:
        return len({goal[0] for goal in self.goals})


def verdict(item):
    """(reason, description, category) for one action item."""
    if not isinstance(item, dict):
        return "item is not an object", None, None
    task = item.get("task")
    if not isinstance(task, str) or task.strip(WS) == "":
        return "missing task", None, None
    if "details" in item and item["details"] is not None and not isinstance(item["details"], str):
        return "details is not a string", None, None
    if (
        "category" in item
        and item["category"] is not None
        and not isinstance(item["category"], str)
    ):
        return "category is not a string", None, None
    description = task.strip(WS)
    details = item.get("details")
    if isinstance(details, str) and details.strip(WS):
        description = f"{description} - {details.strip(WS)}"
    category = item.get("category")
    category = category.strip(WS) or None if isinstance(category, str) else None
    return None, description, category


def is_candidate(notes) -> bool:
    return isinstance(notes, dict) and notes.get("action_items") is not None


def candidates(sessions) -> list:
    """The sessions a migration looks at, in processing order."""
    return sorted(
        (s for s in sessions if is_candidate(s["notes"])),
        key=lambda s: (s["patient_id"], s["session_date"], s["id"]),
    )


def item_count(sessions) -> int:
    """Action items in JSONB: an array's elements, or one for any other value."""
    total = 0
    for s in candidates(sessions):
        items = s["notes"]["action_items"]
        total += len(items) if isinstance(items, list) else 1
    return total


def migrate(sessions, existing, fail_sessions=frozenset()) -> Outcome:
    """sessions: dicts with id, patient_id, therapist_id, session_date, notes (None = SQL NULL).

    existing: iterable of (patient_id, description) already in treatment_goals.
    fail_sessions: sessions whose goal inserts fail in the database.
    """
    out = Outcome()
    seen = set(existing)
    for s in candidates(sessions):
        items = s["notes"]["action_items"]
        stats = dict.fromkeys(STATS, 0)
        new, invalid = [], []
        stats["sessions_processed"] = 1
        if not isinstance(items, list):
            invalid.append((s["id"], None, "action_items is not an array"))
        else:
            stats["sessions_with_action_items"] = int(bool(items))
            for index, item in enumerate(items):
                reason, description, category = verdict(item)
                if reason:
                    invalid.append((s["id"], index, reason))
                elif (s["patient_id"], description) in seen or any(
                    g[3] == description for g in new
                ):
                    stats["goals_skipped_duplicate"] += 1
                else:
                    new.append(
                        (
                            s["patient_id"],
                            s["therapist_id"],
                            s["id"],
                            description,
                            category,
                            s["session_date"],
                        )
                    )
        if new and s["id"] in fail_sessions:
            # A failed session still counts as processed and, with a non-empty array, as a
            # session with action items; its items count in no goal statistic, and its goals
            # do not exist for later sessions.
            out.stats["sessions_processed"] += 1
            out.stats["sessions_with_action_items"] += stats["sessions_with_action_items"]
            out.stats["errors"] += 1
            out.errors.append(s["id"])
            out.findings.append((s["id"], None, "error"))
            continue
        stats["goals_created"] = len(new)
        stats["goals_skipped_invalid"] = len(invalid)
        for name in STATS:
            out.stats[name] += stats[name]
        out.goals.extend(new)
        out.invalid.extend(invalid)
        out.findings.extend((sid, index, "invalid") for sid, index, _ in invalid)
        seen.update((g[0], g[3]) for g in new)
    return out
