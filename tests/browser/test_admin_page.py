"""The admin page as an admin uses it: sign in, preview, confirm and run, history, undo, verify."""

import re
import time

from tests.browser.conftest import API, assert_accessible, expect, mint, screenshot, sign_in


def numbers(text: str) -> int:
    return int(text.replace(",", ""))


def shown_stats(box) -> dict:
    return {
        dd.get_attribute("data-stat"): numbers(dd.inner_text())
        for dd in box.locator("dd[data-stat]").all()
    }


def plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def goals(n: int) -> str:
    return plural(n, "goal", "goals")


def nav(page, name: str) -> None:
    page.get_by_role("navigation", name="Sections").get_by_role("link", name=name).click()


def jobs(api) -> list[dict]:
    return api.get(API).json()["items"]


def test_preview_confirm_run_history_undo_verify(page, server):
    api = server.api()
    page.goto(server.url + "/admin/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert_accessible(page, "sign in")
    screenshot(page, "sign-in")
    page.get_by_label("Admin token").fill(mint("ops-ana"))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_contain_text("Signed in as ops-ana")
    expect(page.locator("#who-exp")).to_contain_text("token expires")

    # Nothing migrated yet: the verify page says so in words.
    nav(page, "Verify")
    verdict = page.locator(".verdict")
    expect(verdict).to_contain_text("Not every action item is accounted for:")
    missing = api.get(f"{API}/verify").json()["goals_missing"]
    expect(verdict).to_contain_text(f"{missing:,} goals are missing")
    expect(verdict).to_contain_text("No real run has succeeded yet")
    nav(page, "Migrate")

    # Preview: a throttled dry run (its pauses alone, about 3 s, outlast the first poll a second
    # after the start), so its progress is seen while it runs.
    page.locator("summary", has_text="Options").click()
    page.get_by_label("Starting batch size").fill("10")
    page.get_by_label("Pause between batches (ms)").fill("300")
    page.get_by_label("Adapt batch size to a 0.3 s target").uncheck()  # keep 10 a batch
    page.evaluate(
        """() => { window.seenPercents = [];
        new MutationObserver(() => document.querySelectorAll('progress').forEach(p =>
          window.seenPercents.push(p.value))).observe(document.body,
          {subtree: true, attributes: true, childList: true, characterData: true}); }"""
    )
    page.get_by_role("button", name="Start dry run").dblclick()  # one job, not two
    expect(page.locator(".job[data-status]").first).to_be_visible()
    [dry] = jobs(api)
    assert dry["dry_run"] is True and dry["batch_size"] == 10 and dry["pause_ms"] == 300
    dry_box = page.locator(f'.job[data-job-id="{dry["id"]}"]')
    expect(dry_box.locator(".job-status")).to_have_text(re.compile("Dry run finished"))
    seen = page.evaluate("window.seenPercents")
    assert any(0 < p < 100 for p in seen), f"no progress seen while running: {seen}"
    dry = api.get(f"{API}/{dry['id']}").json()
    assert shown_stats(dry_box) == dry["stats"]
    assert dry_box.locator("progress").evaluate("p => p.value") == 100
    found = page.locator(
        "section", has=page.get_by_role("heading", name=re.compile("What dry run"))
    )
    preview_rows = found.locator("table").first.locator("tbody tr")
    expect(preview_rows).to_have_count(10)
    first_goal = api.get(f"{API}/{dry['id']}/preview", params={"limit": 1}).json()["items"][0]
    expect(preview_rows.first).to_contain_text(first_goal["description"])
    invalid = api.get(f"{API}/{dry['id']}/issues", params={"kind": "invalid"}).json()
    assert invalid["total"] > 0
    expect(found.locator("table").nth(1)).to_contain_text(invalid["items"][0]["reason"])
    assert len(jobs(api)) == 1
    assert_accessible(page, "dry run finished")
    screenshot(page, "preview")

    # Confirm and run: the button and the confirmation name the dry run's numbers.
    s = dry["stats"]
    run = page.locator("#run-migration")
    expected = (
        f"Create {goals(s['goals_created'])} for "
        f"{plural(dry['patients_with_goals_created'], 'patient', 'patients')} from "
        f"{plural(s['sessions_with_action_items'], 'session', 'sessions')}…"
    )
    expect(run).to_have_text(expected)
    page.get_by_label("Pause between batches (ms)").fill("0")
    run.click()
    dialog = page.get_by_role("dialog", name="Run the migration?")
    expect(dialog).to_contain_text(f"create {goals(s['goals_created'])} for")
    duplicates = plural(s["goals_skipped_duplicate"], "duplicate", "duplicates")
    invalid_items = plural(s["goals_skipped_invalid"], "invalid item", "invalid items")
    expect(dialog).to_contain_text(f"skip {duplicates} and {invalid_items}")
    assert_accessible(page, "confirmation")
    screenshot(page, "confirm")
    dialog.get_by_role("button", name=f"Create {goals(s['goals_created'])}").dblclick()
    expect(dialog).to_be_hidden()
    real = jobs(api)[0]
    assert len(jobs(api)) == 2 and real["dry_run"] is False
    assert real["confirmed_from"] == dry["id"]
    run_box = page.locator(f'.job[data-job-id="{real["id"]}"]')
    expect(run_box.locator(".job-status")).to_have_text(re.compile("Migration finished"))
    expect(run_box.locator("progress")).to_have_js_property("value", 100)
    expect(run_box.locator("[data-figure=percent]")).to_have_text("100.0%")
    real = api.get(f"{API}/{real['id']}").json()
    assert real["status"] == "succeeded" and real["prediction"]["matched"] is True
    assert shown_stats(run_box) == real["stats"] == dry["stats"]
    expect(run_box.locator(".job-prediction")).to_contain_text("Matched the prediction of dry run")
    expect(run).to_be_disabled()
    assert_accessible(page, "run finished")
    screenshot(page, "run", at=page.locator("section", has_text="2. Confirm and run"))

    # Verify: every item accounted for, with the API's numbers.
    nav(page, "Verify")
    expect(page.locator(".verdict")).to_contain_text("Every action item is accounted for")
    verify = api.get(f"{API}/verify").json()
    for key in ("total_action_items", "goals_from_migrations", "sessions_with_action_items"):
        expect(page.locator(f'[data-number="{key}"]')).to_have_text(f"{verify[key]:,}")
    assert_accessible(page, "verify")
    screenshot(page, "verify")

    # History: both jobs, who started them, their statistics.
    nav(page, "History")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Migration")
    expect(rows.first).to_contain_text("succeeded")
    expect(rows.first).to_contain_text("ops-ana")
    expect(rows.first).to_contain_text("as predicted")
    expect(rows.nth(1)).to_contain_text(f"would create {s['goals_created']:,}")
    assert_accessible(page, "history")
    screenshot(page, "history")

    # Undo: preview the rollback, confirm, watch it, see the run marked rolled back.
    rows.first.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Migration {real['id'][:8]}")
    expect(page.locator("table", has_text="Audit trail")).to_contain_text("start")
    page.get_by_role("button", name="Preview rollback").click()
    outcome = page.locator(".outcome")
    expect(outcome).to_contain_text(
        f"The preview says: delete {goals(s['goals_created'])} this run created"
    )
    assert real["rolled_back_by"] is None
    page.get_by_role("button", name=f"Delete {goals(s['goals_created'])}…").click()
    dialog = page.get_by_role("dialog", name="Roll back this migration?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=f"Delete {goals(s['goals_created'])}").click()
    expect(outcome).to_contain_text(f"Rolled back: {goals(s['goals_created'])} deleted")
    expect(page.locator(".job-status").first).to_contain_text("then rolled back")
    real = api.get(f"{API}/{real['id']}").json()
    assert real["rolled_back_by"] is not None
    expect(page.locator("[data-detail=rolled_back_by]")).to_contain_text(real["rolled_back_by"][:8])
    assert_accessible(page, "rolled back")
    screenshot(page, "undo", at=page.locator("section", has_text="Undo this run"))
    kinds = [(j["kind"], j["dry_run"]) for j in jobs(api)]
    assert kinds == [("rollback", False), ("rollback", True), ("migrate", False), ("migrate", True)]


def _migrated(api) -> dict:
    job = api.post(API, params={"dry_run": "false"}).json()
    for _ in range(600):
        job = api.get(f"{API}/{job['id']}").json()
        if job["status"] == "succeeded":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job did not finish: {job}")


def test_undoing_a_run_a_later_run_relied_on_offers_both_ways_out(page, server):
    api = server.api()
    first, later = _migrated(api), _migrated(api)
    assert later["stats"]["goals_created"] == 0 and later["stats"]["goals_skipped_duplicate"] > 0
    sign_in(page, server)
    page.goto(f"{server.url}/admin/#/jobs/{first['id']}")
    page.get_by_role("button", name="Preview rollback").click()
    created = goals(first["stats"]["goals_created"])
    page.get_by_role("button", name=f"Delete {created}…").click()
    page.get_by_role("dialog", name="Roll back this migration?").get_by_role(
        "button", name=f"Delete {created}"
    ).click()
    # Refused: the later run counted these goals as duplicates. The page says so, names it,
    # and offers to roll both back together, or this one alone and migrate again.
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("counted goals of this job as duplicates")
    expect(alert.get_by_role("link", name=later["id"][:8])).to_be_visible()
    assert_accessible(page, "rollback refused")
    screenshot(page, "rollback-refused", at=page.locator("section", has_text="Undo this run"))
    alert.get_by_role("button", name="Preview rolling back together with 1 later run").click()
    expect(page.locator(".outcome")).to_contain_text(f"delete {created} these 2 runs created")
    page.get_by_role("button", name=f"Delete {created}…").click()
    page.get_by_role("dialog", name="Roll back these 2 migrations?").get_by_role(
        "button", name=f"Delete {created}"
    ).click()
    expect(page.locator(".outcome")).to_contain_text(f"Rolled back: {created} deleted")
    rollback = jobs(api)[0]
    assert rollback["kind"] == "rollback" and not rollback["dry_run"]
    assert rollback["target_job_ids"] == [first["id"], later["id"]]
