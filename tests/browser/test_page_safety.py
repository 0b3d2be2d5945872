"""What the page must never do: run clinicians' text as code, start two jobs, lose a token's
expiry, swallow a 409, or wipe what an admin is typing while it polls."""

import json
import re
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text

from app import security
from app.db import create_engine
from app.jobs import runner
from tests.browser.conftest import (
    API,
    assert_accessible,
    expect,
    mint,
    run_async,
    screenshot,
    sign_in,
)

MARKUP = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    '"><svg onload="window.__xss=3">',
    '<iframe src="javascript:window.__xss=4"></iframe>',
]


async def _plant(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    patient, therapist = uuid.UUID(int=1), uuid.UUID(int=2)
    items = [
        {"task": MARKUP[0], "category": MARKUP[1], "details": MARKUP[3]},
        {"task": MARKUP[1] + " Read", "category": MARKUP[2]},
        {"task": "   ", "category": MARKUP[0]},
    ]
    try:
        await conn.executemany(
            "INSERT INTO users (id, email, role) VALUES ($1, $2, $3)",
            [(patient, "p@example.org", "patient"), (therapist, "t@example.org", "therapist")],
        )
        await conn.execute(
            "INSERT INTO therapy_sessions (id, patient_id, therapist_id, session_date, "
            "extracted_notes) VALUES ($1, $2, $3, $4, $5::jsonb)",
            uuid.uuid4(),
            patient,
            therapist,
            datetime(2024, 1, 1, tzinfo=UTC),
            json.dumps({"action_items": items}),
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("demo_sessions", [0])
def test_markup_in_action_items_and_token_renders_as_text(page, server, database_url):
    run_async(_plant, database_url)
    allowed = re.compile(
        re.escape(server.url)
        + r"/admin/(assets/[\w.-]+|migrations/goals(/[\w-]+(/\w+)?)?(\?[\w=&%.-]*)?)?$"
    )
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    sign_in(page, server, mint(sub=MARKUP[0]))
    expect(page.locator("#who-sub")).to_have_text(MARKUP[0])

    page.get_by_role("button", name="Start dry run").click()
    preview = page.locator("table", has_text="Goals it would create")
    expect(preview.locator("tbody tr")).to_have_count(2)
    cells = preview.locator("tbody tr").first.locator("td")
    descriptions = sorted(preview.locator("tbody tr td:nth-child(3)").all_inner_texts())
    assert descriptions == sorted([f"{MARKUP[0]} - {MARKUP[3]}", f"{MARKUP[1]} Read"])
    assert {preview.locator("tbody tr").nth(i).locator("td").nth(2).inner_text() for i in (0, 1)}
    assert cells.count() == 3
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="History").click()
    expect(page.locator("table tbody tr").first).to_contain_text(MARKUP[0])
    page.locator("table tbody tr").first.get_by_role("link").first.click()
    expect(page.locator("table", has_text="Audit trail")).to_contain_text("start")

    assert page.evaluate("window.__xss") is None
    # The only SVG is the pace chart the page draws itself; nothing came from the data.
    found = "document.querySelectorAll('img, iframe, svg:not(.pace-svg)').length"
    assert page.evaluate(found) == 0
    assert page.evaluate("document.scripts.length") == 1  # the page's own module
    unexpected = [url for url in requests if not allowed.match(url)]
    assert not unexpected, f"requests to unexpected URLs: {unexpected}"
    assert any("/preview" in url for url in requests)


def test_second_tab_gets_409_with_a_link_to_the_active_job(context, server):
    first, second = context.new_page(), context.new_page()
    errors = []
    for tab in (first, second):
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.bring_to_front()  # a background tab gets no animation frames to act on
        sign_in(tab, server)  # each tab has its own sessionStorage
    first.bring_to_front()
    first.locator("summary", has_text="Options").click()
    # About 3 s of pauses alone: still active when the second tab asks and when it cancels.
    first.get_by_label("Starting batch size").fill("10")
    first.get_by_label("Pause between batches (ms)").fill("300")
    first.get_by_role("button", name="Start dry run").click()
    expect(first.locator(".job[data-box=dry-run]")).to_have_attribute(
        "data-status", re.compile("queued|running")
    )

    second.bring_to_front()
    second.get_by_role("button", name="Start dry run").click()
    alert = second.get_by_role("alert").filter(
        has_text="another migration or rollback job is active"
    )
    expect(alert).to_contain_text("(HTTP 409)")
    [active] = server.api().get(API).json()["items"]
    link = alert.get_by_role("link", name=f"Open the active job {active['id'][:8]}")
    link.click()
    expect(second).to_have_url(re.compile(f"#/jobs/{active['id']}$"))
    box = second.locator(f'.job[data-job-id="{active["id"]}"]')
    expect(box).to_have_attribute("data-status", "running")

    # The job's buttons follow its state, in both tabs: cancel in one, resume, watch it end.
    box.get_by_role("button", name="Cancel job").click()
    expect(box).to_have_attribute("data-status", "cancelled")
    expect(box.locator(".job-note")).to_contain_text("Resume continues where it stopped")
    expect(first.locator(".job[data-box=dry-run]")).to_have_attribute("data-status", "cancelled")
    box.get_by_role("button", name="Resume job").click()
    expect(box).to_have_attribute("data-status", re.compile("queued|running"))
    expect(box).to_have_attribute("data-status", "succeeded")
    first.bring_to_front()
    first.reload()  # the first tab stopped polling when the job ended (cancelled)
    expect(first.locator("#run-migration")).to_be_enabled()
    assert len(server.api().get(API).json()["items"]) == 1
    assert not errors


def test_polling_never_resets_what_the_admin_types(page, server):
    sign_in(page, server)
    polls = []
    page.on(
        "request", lambda r: polls.append(r.url) if re.search(r"/goals/[\w-]{36}$", r.url) else None
    )
    page.locator("summary", has_text="Options").click()
    # About 9 s of pauses alone, far longer than the test watches it; it is cancelled at the end.
    page.get_by_label("Starting batch size").fill("5")
    page.get_by_label("Pause between batches (ms)").fill("500")
    page.get_by_label("Adapt batch size to a 0.3 s target").uncheck()  # keep 5 a batch
    page.get_by_role("button", name="Start dry run").click()
    box = page.locator(".job[data-box=dry-run]")
    expect(box).to_have_attribute("data-status", "running")

    field = page.get_by_label("Stop after failed sessions")
    field.click()
    field.press("Control+a")
    seen = len(polls)
    field.press_sequentially("250", delay=300)
    deadline = time.monotonic() + 10
    while len(polls) < seen + 2:  # the field stays focused across polls
        assert time.monotonic() < deadline, "the page stopped polling"
        page.wait_for_timeout(100)
    expect(box).to_have_attribute("data-status", "running")
    expect(field).to_have_value("250")
    expect(field).to_be_focused()
    expect(page.locator("details.options")).to_have_attribute("open", "")
    assert_accessible(page, "a dry run running")
    screenshot(page, "running")
    box.get_by_role("button", name="Cancel job").click()
    expect(box).to_have_attribute("data-status", "cancelled")
    expect(field).to_have_value("250")


def test_expired_or_refused_token_asks_again_and_clears_storage(page, server):
    message = page.locator("#signin-message")
    stored = "sessionStorage.length"
    sign_in(page, server, mint(ttl=4))
    assert page.evaluate(stored) == 1
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=10_000)
    expect(message).to_contain_text("Your token expired at")
    assert page.evaluate(stored) == 0

    refused = [
        (
            security.mint(secret="another-" + "y" * 40, sub="x", role="admin", ttl_seconds=600),
            "The API refused the token (invalid or expired token)",
        ),
        (mint(role="therapist"), "This token is not an admin's (admin role required)"),
        ("not a token", "This is not a token"),
        (mint(ttl=-60), "This token expired at"),
    ]
    for token, said in refused:
        page.get_by_label("Admin token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(message).to_contain_text(said)
        assert page.evaluate(stored) == 0

    # Signed in, a reload keeps the tab's session; signing out forgets the token.
    page.get_by_label("Admin token").fill(mint())
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_be_visible()
    page.reload()
    expect(page.locator("#who")).to_contain_text("Signed in as admin-1")
    page.get_by_role("button", name="Sign out").click()
    expect(message).to_contain_text("Signed out")
    assert page.evaluate(stored) == 0
    assert page.context.cookies() == []


async def _orphan_job(settings) -> str:
    """A queued job whose process died before running it: created, never claimed, its
    heartbeat 20 s old (the stale timeout in tests is 30 s)."""
    db = create_engine(settings)
    try:
        job_id, _ = await runner.create_job(
            db, settings, kind="migrate", dry_run=True, batch_size=100, requested_by="cli"
        )
        async with db.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE migration_jobs SET heartbeat_at = now() - interval '20 seconds' "
                    "WHERE id = :id"
                ),
                {"id": job_id},
            )
        return str(job_id)
    finally:
        await db.dispose()


def test_a_stuck_job_is_explained_with_the_way_out(page, server, settings):
    sign_in(page, server)
    orphan = run_async(_orphan_job, settings)  # after this page loaded: it does not know yet
    page.get_by_role("button", name="Start dry run").click()
    alert = page.get_by_role("alert").filter(has_text="another migration or rollback job")
    # The age is the server's clock at the 409, seconds after _orphan_job set it to 20 s on a
    # loaded machine: the words and the order of magnitude are the point, not the exact second.
    expect(alert).to_contain_text(re.compile(r"Its last heartbeat was 2\d s ago"))
    expect(alert).to_contain_text(re.compile(r"it is released in about \d+ s"))
    alert.get_by_role("link", name=f"Open the active job {orphan[:8]}").click()
    box = page.locator(f'.job[data-job-id="{orphan}"]')
    expect(box.locator(".job-status")).to_have_text("Dry run queued")
    note = box.locator(".job-note")
    expect(note).to_contain_text("not picked up: the process that started it may have stopped")
    expect(note).to_contain_text("then Resume it")
    box.get_by_role("button", name="Cancel job").click()
    expect(box).to_have_attribute("data-status", "cancelled")
    expect(box.get_by_role("button", name="Resume job")).to_be_visible()
    expect(box.get_by_role("button", name="Cancel job")).to_be_hidden()
