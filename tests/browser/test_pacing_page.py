"""The job page's pacing in Chromium: what a job waits on, its limits, its pace chart.

The wait is real: a streaming standby of a PostgreSQL server of the test's own, its replay
paused, so the job waits on replay lag until an admin turns that limit off on the page.
"""

import tempfile
import time
from pathlib import Path

from app import demo
from app.config import load_settings
from tests.browser.conftest import (
    API,
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


def test_fixed_batches_are_chosen_on_the_start_form(page, server):
    sign_in(page, server)
    page.get_by_text("Options for the next job").click()
    page.get_by_label("Adapt batch size to a 0.3 s target").uncheck()
    page.get_by_role("button", name="Start dry run").click()
    box = page.locator("[data-box=dry-run]")
    expect(box).to_have_attribute("data-status", "succeeded", timeout=30_000)
    job_id = box.get_attribute("data-job-id")
    page.goto(f"{server.url}/admin/#/jobs/{job_id}")
    expect(page.locator("[data-detail=batch_size]")).to_contain_text("1,000, fixed")
    assert server.api().get(f"{API}/{job_id}").json()["adaptive"] is False


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
            expect(page.locator("[data-detail=batch_size]")).to_contain_text("adaptive from 20")
            assert api.get(f"{API}/{job['id']}").json()["throttle"]["signal"] == (
                "replay_lag_bytes"
            )
            assert_accessible(page, "a job waiting on a standby")
            screenshot(page, "throttled")
            time.sleep(3)  # a wait long enough to see on the chart

            # The admin turns the limit off on the page; the job goes on and finishes.
            limits = page.locator("[data-limits]")
            limits.get_by_label("Standby or slot lag (bytes)").fill("0")
            limits.get_by_label("Standby replay lag (s)").fill("0")  # its age grows too
            limits.get_by_role("button", name="Change limits").click()
            expect(limits.locator("[data-limit=max_replay_lag_bytes]")).to_have_text("now off")
            expect(page.locator(".job[data-status=succeeded]")).to_be_visible(timeout=60_000)
            expect(waiting).to_be_hidden()
            audit = page.get_by_role("table", name="Audit trail")
            expect(audit).to_contain_text("max_replay_lag_bytes: 262144 → off")
            expect(audit).to_contain_text("max_replay_lag_seconds: 5 → off")
            expect(audit).to_contain_text("waited: standby replay lag (test_standby)")

            # The chart: both lines drawn, the wait shaded, and the table as long as the API's.
            timeline = api.get(f"{API}/{job['id']}/timeline", params={"slices": 60}).json()
            chart = page.locator("[data-chart]")
            expect(chart.locator("svg polyline.rate")).to_have_count(1)
            expect(chart.locator("svg polyline.size")).to_have_count(1)
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
