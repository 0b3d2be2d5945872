"""The job page's pacing in Chromium: what a job waits on, its limits, its pace chart.

The wait is real: a streaming standby of a PostgreSQL server of the test's own, its replay
paused, so the job waits on replay lag until an admin turns that limit off on the page.
The browser runs in Kathmandu's time (UTC+5:45), so a time shown in UTC, or in any zone a
whole number of hours away, cannot pass for the browser's local time.
"""

import math
import re
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from app import demo
from app.config import load_settings
from tests.browser.conftest import (
    API,
    VIEWPORT,
    LiveServer,
    assert_accessible,
    expect,
    in_thread,
    run_async,
    screenshot,
    sign_in,
)
from tests.conftest import SECRET
from tests.pg import OwnServer, Standby

TIMEZONE = "Asia/Kathmandu"


@pytest.fixture
def context(browser):
    """As conftest's, in a time zone a quarter of an hour off any whole-hour one."""
    context = browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id=TIMEZONE)
    yield context
    context.close()


def _local_time(iso: str) -> str:
    """HH:MM:SS of an API timestamp, in the browser's zone."""
    return datetime.fromisoformat(iso).astimezone(ZoneInfo(TIMEZONE)).strftime("%H:%M:%S")


def _replicating(url: str) -> bool:
    import asyncpg

    async def check() -> bool:
        conn = await asyncpg.connect(url)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                )
            )
        finally:
            await conn.close()

    return run_async(check)


def _until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _says_since(text: str | None, job: dict) -> bool:
    """The page's wait line ends with the time the API's current wait began, in local time."""
    wait = job["throttle"]
    return bool(wait and text and text.endswith(f", since {_local_time(wait['since'])}"))


def _half_up(value: float) -> int:
    """As the page's Math.round (Python's round() goes to even)."""
    return math.floor(value + 0.5)


def test_fixed_batches_are_chosen_on_the_start_form(page, server):
    """Ticked by default, the box makes the size a starting one; unticked, batches stay fixed."""
    sign_in(page, server)
    page.get_by_text("Options for the next job").click()
    adapt = page.get_by_label("Adapt batch size to a 0.3 s target")
    size_label = page.locator("label[for=opt-batch-size]")
    expect(adapt).to_be_checked()
    expect(size_label).to_have_text("Starting batch size")
    requests = []
    page.on("request", lambda r: requests.append(r.url) if r.method == "POST" else None)
    adapt.uncheck()
    expect(size_label).to_have_text("Batch size")
    page.get_by_role("button", name="Start dry run").click()
    box = page.locator("[data-box=dry-run]")
    expect(box).to_have_attribute("data-status", "succeeded", timeout=30_000)
    assert len(requests) == 1 and "adaptive=false" in requests[0]
    job_id = box.get_attribute("data-job-id")
    page.goto(f"{server.url}/admin/#/jobs/{job_id}")
    expect(page.locator("[data-detail=batch_size] dd")).to_have_text("Fixed batches of 1,000")
    assert server.api().get(f"{API}/{job_id}").json()["adaptive"] is False


def test_an_admin_changes_a_limit_and_the_audit_trail_says_so(page, server):
    """On a running job, then on the same job stopped; a value the API refuses says why."""
    api = server.api()
    # Small batches 1 s apart: running for some seconds while its limits change; cancelled after.
    params = {"dry_run": "true", "batch_size": 5, "pause_ms": 1000, "adaptive": "false"}
    job = api.post(API, params=params).json()
    sign_in(page, server)
    page.goto(f"{server.url}/admin/#/jobs/{job['id']}")
    box = page.locator("[data-box=job]")
    expect(box).to_have_attribute("data-status", "running")
    limits = page.locator("[data-limits]")
    lock_wait = limits.get_by_label("Others' wait on the job's locks (s)")
    now = limits.locator("[data-limit=max_lock_wait_seconds]")
    change = limits.get_by_role("button", name="Change limits")
    expect(now).to_have_text("now 0.2")
    lock_wait.fill("1.5")
    change.click()
    expect(now).to_have_text("now 1.5")
    expect(lock_wait).to_have_value("")
    audit = page.get_by_role("table", name="Audit trail")
    expect(audit).to_contain_text("limits changed: max_lock_wait_seconds 0.2 → 1.5")
    assert api.get(f"{API}/{job['id']}").json()["limits"]["max_lock_wait_seconds"] == 1.5
    expect(box).to_have_attribute("data-status", "running")  # changed while it ran

    # A value the API refuses: its message and status, where the admin acted; nothing changed.
    lock_wait.fill("-1")
    change.click()
    alert = limits.get_by_role("alert")
    expect(alert).to_contain_text("max_lock_wait_seconds: Input should be greater than or equal")
    expect(alert).to_contain_text("(HTTP 422)")
    expect(now).to_have_text("now 1.5")

    # Changed elsewhere (the API, as the command line does): the next poll shows it, and what
    # the admin typed stays.
    api.post(f"{API}/{job['id']}/limits", params={"max_batch_slowdown": 8}).raise_for_status()
    expect(limits.locator("[data-limit=max_batch_slowdown]")).to_have_text("now 8")
    expect(lock_wait).to_have_value("-1")
    expect(limits.locator("[data-limit=yield_to_autovacuum]")).to_have_text("now on")

    # Stopped, the job keeps its limits and the form (laid anew for its state): 0 turns one off.
    box.get_by_role("button", name="Cancel job").click()
    expect(box).to_have_attribute("data-status", "cancelled")
    limits.get_by_label("Share above this many other sessions").fill("0")
    change.click()
    expect(limits.locator("[data-limit=share_above_sessions]")).to_have_text("now off")
    expect(alert).to_be_hidden()
    expect(now).to_have_text("now 1.5")
    expect(audit).to_contain_text("limits changed: share_above_sessions 2 → off")
    assert_accessible(page, "a stopped job's limits")


def test_the_pace_chart_of_a_finished_job_draws_its_timeline(page, server):
    """Both lines, nothing shaded, and a table row per slice of /timeline with its numbers."""
    api = server.api()
    # 13 batches (whole patients: about 14 sessions each), 300 ms apart: some one-second slices.
    # No batch slowdown limit: one batch slowed by the machine would shade the chart.
    params = {"dry_run": "true", "batch_size": 10, "pause_ms": 300, "adaptive": "false",
              "max_batch_slowdown": 0}  # fmt: skip
    job = api.post(API, params=params).json()
    _until(lambda: api.get(f"{API}/{job['id']}").json()["status"] == "succeeded", 60, "the job")
    timeline = api.get(f"{API}/{job['id']}/timeline", params={"slices": 60}).json()
    slices = timeline["slices"]
    assert len(slices) >= 2 and timeline["throttled"] == []
    sign_in(page, server)
    page.goto(f"{server.url}/admin/#/jobs/{job['id']}")
    expect(page.locator("[data-box=job]")).to_have_attribute("data-status", "succeeded")
    chart = page.locator("[data-chart]")
    pair = r"\d+(?:\.\d)?,\d+(?:\.\d)?"  # x,y to one decimal
    drawn = {"rate": len(slices), "size": sum(x["batch_size"] is not None for x in slices)}
    for line, points in drawn.items():
        path = chart.locator(f"svg path.{line}")
        expect(path).to_have_count(1)
        expect(path).to_have_attribute("d", re.compile(rf"^M{pair}( [ML]{pair})*$"))
        assert len(re.findall(pair, path.get_attribute("d"))) == points
    expect(chart.locator("svg rect.throttled")).to_have_count(0)
    expect(chart.locator(".pace-legend")).to_contain_text("sessions per second (left)")
    expect(page.locator("[data-limits]")).to_have_count(0)  # its limits apply to nothing now

    chart.get_by_text("The numbers").click()
    table = chart.get_by_role("table", name=re.compile("^The job's pace by slice of time"))
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(len(slices))
    for row, x in zip(rows.all(), slices, strict=True):
        size = "—" if x["batch_size"] is None else f"{x['batch_size']:,}"
        cells = [_local_time(x["start"]), f"{_half_up(x['rate_per_second']):,}", size]
        assert row.locator("th, td").all_inner_texts() == [*cells, f"{x['batches']:,}", "no"]
    assert_accessible(page, "a finished job's pace chart and its numbers")


def test_a_job_waiting_on_a_standby_says_so_and_an_admin_lifts_the_limit(page, browser):
    primary = in_thread(OwnServer, Path(tempfile.mkdtemp(prefix="gm-page-")) / "pg")
    standby = None
    try:
        url = in_thread(primary.database)
        run_async(demo.write, url, sessions=12000, seed=71)
        standby = in_thread(Standby, primary)
        _until(lambda: _replicating(url), 30, "the standby to stream")
        settings = load_settings(
            database_url=url,
            jwt_secret=SECRET,
            heartbeat_seconds=0.2,
            throttle_check_seconds=0.2,
            throttle_recheck_seconds=0.5,
            batch_target_seconds=0.05,
            batch_size_min=20,
            _env_file=None,
        )
        with LiveServer(settings) as server:
            api = server.api()
            # Small batches with pauses: a run of some seconds, so its chart shows a shape.
            params = {"dry_run": "false", "batch_size": 20, "pause_ms": 300}
            params |= {"max_replay_lag_bytes": 262144}
            job = api.post(API, params=params | {"share_above_sessions": 0}).json()
            # A few seconds at full pace first, then the standby stops replaying.
            _until(
                lambda: (api.get(f"{API}/{job['id']}").json()["progress"]["percent"] or 0) >= 20,
                30,
                "a fifth of the job",
            )
            run_async(standby.pause_replay)
            sign_in(page, server)
            page.goto(f"{server.url}/admin/#/jobs/{job['id']}")
            waiting = page.locator("[data-box=job] .job-throttle")
            expect(waiting).to_contain_text(
                "Waiting: standby replay lag (test_standby)", timeout=30_000
            )
            expect(waiting).to_contain_text("limit 256.0 kB, since ")
            expect(waiting).to_have_attribute("role", "status")
            expect(waiting).to_have_attribute("aria-live", "polite")
            # The time the wait began, in the browser's time: the API's `since` for this wait
            # (a second signal, the lag's age, may take over and begin a wait of its own).
            _until(
                lambda: _says_since(waiting.text_content(), api.get(f"{API}/{job['id']}").json()),
                10,
                "the page to say since when the job waits, in local time",
            )
            expect(page.locator("[data-detail=batch_size]")).to_contain_text(
                re.compile(r"Adaptive \(now [\d,]+ per batch\), from 20")
            )
            assert_accessible(page, "a job waiting on a standby")
            screenshot(page, "throttled")
            # While it waits, its audit trail and its chart already show the wait.
            audit = page.get_by_role("table", name="Audit trail")
            expect(audit).to_contain_text("throttled: standby replay lag (test_standby)")
            expect(page.locator("[data-chart] svg rect.throttled").first).to_be_attached()
            time.sleep(3)  # a wait long enough to see on the chart

            # The admin turns the limit off on the page; the job goes on and finishes.
            limits = page.locator("[data-limits]")
            limits.get_by_label("Standby or slot lag (bytes)").fill("0")
            limits.get_by_label("Standby replay lag (s)").fill("0")  # its age grows too
            limits.get_by_role("button", name="Change limits").click()
            expect(limits.locator("[data-limit=max_replay_lag_bytes]")).to_have_text("now off")
            expect(page.locator(".job[data-status=succeeded]")).to_be_visible(timeout=60_000)
            expect(waiting).to_be_hidden()
            expect(audit).to_contain_text("limits changed: max_replay_lag_bytes 262144 → off")
            expect(audit).to_contain_text("max_replay_lag_seconds 5 → off")
            expect(audit).to_contain_text("throttled: standby replay lag (test_standby)")
            expect(audit).to_contain_text(re.compile(r"went on after \d+\.\d s"))

            # The chart: both lines drawn, the wait shaded, and the table as long as the API's.
            timeline = api.get(f"{API}/{job['id']}/timeline", params={"slices": 60}).json()
            chart = page.locator("[data-chart]")
            expect(chart.locator("svg path.rate")).to_have_count(1)
            expect(chart.locator("svg path.size")).to_have_count(1)
            expect(chart.locator("svg rect.throttled")).to_have_count(len(timeline["throttled"]))
            # Bytes first; the lag's age may pass its 5 s before the admin acts: a second wait.
            waits = timeline["throttled"]
            assert waits[0]["signal"] == "replay_lag_bytes" and all(w["to"] for w in waits)
            assert {w["signal"] for w in waits} <= {"replay_lag_bytes", "replay_lag_seconds"}
            chart.get_by_text("The numbers").click()
            rows = chart.locator("table tbody tr")
            expect(rows).to_have_count(len(timeline["slices"]))
            assert_accessible(page, "the pace chart")
            screenshot(page, "chart", at=chart)
    finally:
        if standby is not None:
            run_async(standby.resume_replay)
            in_thread(standby.close)
        in_thread(primary.close)
