"""GET /metrics: scraped while a real job runs, switched off, on a port of its own, database away.

The job totals come from the job table, so they must equal what the API says the job did;
labels must never carry a patient or session id, and nothing may carry an action item's text.
"""

import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import demo
from app.config import load_settings
from tests import helpers
from tests.api.conftest import BASE, open_client, wait_for
from tests.conftest import SECRET
from tests.expected import model_outcome

ITEM_OUTCOMES = {
    "created": "goals_created",
    "duplicate": "goals_skipped_duplicate",
    "invalid": "goals_skipped_invalid",
}


def parse(body: str) -> dict[str, list]:
    """Samples by name, each as (labels, value); the exposition parser must accept it all."""
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, name: str, **labels) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [v for lab, v in samples.get(name, []) if labels.items() <= lab.items()]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def served(settings):
    """The app with its lifespan: an admin's client, and a scraper that has no token."""
    app, lifespan, client = await open_client(settings)
    scraper = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    yield client, scraper
    await scraper.aclose()
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


async def scrape(scraper) -> tuple[str, dict]:
    response = await scraper.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, parse(response.text)


async def test_metrics_follow_a_running_job_and_end_at_its_statistics(served, db, database_url):
    client, scraper = served
    await demo.write(database_url, sessions=400, seed=71)
    failing = set(await helpers.sessions_with_items(db, 6))
    expected = await model_outcome(db, fail_sessions=failing)
    await helpers.fail_goal_inserts_for(db, failing)
    response = await client.post(
        BASE, params={"dry_run": "false", "batch_size": 20, "pause_ms": 200, "adaptive": "false"}
    )
    job_id = response.json()["id"]
    labels = {"job_id": job_id, "kind": "migrate", "dry_run": "false"}

    await wait_for(client, job_id, lambda j: j["stats"]["sessions_processed"] > 0)
    _, first = await scrape(scraper)
    assert value(first, "goal_migration_database_up") == 1
    assert value(first, "goal_migration_job_status", **labels, status="running") == 1
    assert value(first, "goal_migration_last_heartbeat_timestamp_seconds", **labels) > 1.7e9
    before = value(first, "goal_migration_sessions_processed_total", **labels)
    batches = value(first, "goal_migration_batch_duration_seconds_count", **labels)

    await wait_for(
        client,
        job_id,
        lambda j: j["stats"]["sessions_processed"] > before or j["status"] != "running",
    )
    _, second = await scrape(scraper)
    assert value(second, "goal_migration_sessions_processed_total", **labels) > before
    assert value(second, "goal_migration_batch_duration_seconds_count", **labels) > batches
    assert sum(
        value(second, "goal_migration_items_total", **labels, outcome=o) for o in ITEM_OUTCOMES
    ) > sum(value(first, "goal_migration_items_total", **labels, outcome=o) for o in ITEM_OUTCOMES)

    job = await wait_for(client, job_id)
    assert job["status"] == "succeeded" and job["stats"] == expected.stats
    assert job["stats"]["errors"] > 0
    body, last = await scrape(scraper)
    stats = job["stats"]
    for outcome, stat in ITEM_OUTCOMES.items():
        assert value(last, "goal_migration_items_total", **labels, outcome=outcome) == stats[stat]
    in_failed = (await helpers.get(db, job_id))["items_in_failed_sessions"]
    assert in_failed > 0
    assert (
        value(last, "goal_migration_items_total", **labels, outcome="failed_session") == in_failed
    )
    processed = value(last, "goal_migration_sessions_processed_total", **labels)
    assert processed == stats["sessions_processed"]
    assert value(last, "goal_migration_sessions_failed_total", **labels) == stats["errors"]
    total = value(last, "goal_migration_candidate_sessions", **labels)
    assert total == job["progress"]["sessions_total"]
    for status in ("queued", "running", "cancelling", "succeeded", "failed", "interrupted"):
        want = 1 if status == "succeeded" else 0
        assert value(last, "goal_migration_job_status", **labels, status=status) == want
    # only an active job's heartbeat is reported: an ended one's is stale by design
    assert "goal_migration_last_heartbeat_timestamp_seconds" not in last
    assert value(last, "goal_migration_batch_duration_seconds_sum", **labels) > 0
    assert value(last, "goal_migration_batch_size", **labels) > 0
    assert "process_cpu_seconds_total" in last and "python_info" in last

    # No label is an id of the clinical data, and no text of it is anywhere in the answer.
    ids = await helpers.data_ids(db)
    label_values = {v for samples in last.values() for lab, _ in samples for v in lab.values()}
    assert job_id in label_values and not label_values & ids
    texts = await helpers.clinical_texts(db)
    assert texts and not [t for t in texts if t in body]


async def test_a_rollback_reports_the_goals_it_deleted(served, database_url):
    client, scraper = served
    await demo.write(database_url, sessions=150, seed=72)
    migrated = (await client.post(BASE, params={"dry_run": "false", "batch_size": 50})).json()
    migrated = await wait_for(client, migrated["id"])
    rollback = (
        await client.post(f"{BASE}/{migrated['id']}/rollback", params={"dry_run": "false"})
    ).json()
    rollback = await wait_for(client, rollback["id"])
    _, samples = await scrape(scraper)
    labels = {"job_id": rollback["id"], "kind": "rollback", "dry_run": "false"}
    deleted = value(samples, "goal_migration_rollback_goals_total", **labels, outcome="deleted")
    assert deleted == rollback["stats"]["goals_deleted"] == migrated["stats"]["goals_created"]
    assert (
        value(samples, "goal_migration_rollback_target_goals", **labels)
        == (rollback["progress"]["goals_total"])
    )
    assert value(samples, "goal_migration_job_status", **labels, status="succeeded") == 1
    # the migration it took back is still reported, beside it
    assert value(samples, "goal_migration_items_total", job_id=migrated["id"], outcome="created")


async def test_metrics_switched_off_are_not_served(settings):
    app, lifespan, client = await open_client(settings.model_copy(update={"metrics": False}))
    try:
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/health")).status_code == 200
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_metrics_on_their_own_port_are_served_there_only(settings, database_url):
    await demo.write(database_url, sessions=60, seed=73)
    own_port = settings.model_copy(update={"metrics_port": 0, "metrics_host": "127.0.0.1"})
    app, lifespan, client = await open_client(own_port)
    try:
        assert (await client.get("/metrics")).status_code == 404
        job = (await client.post(BASE, params={"dry_run": "true"})).json()
        job = await wait_for(client, job["id"])
        port = app.state.metrics_exporter.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            response = await scraper.get("/metrics")
        assert response.status_code == 200
        samples = parse(response.text)
        labels = {"job_id": job["id"], "dry_run": "true"}
        assert value(samples, "goal_migration_database_up") == 1
        assert (
            value(samples, "goal_migration_items_total", **labels, outcome="created")
            == (job["stats"]["goals_created"])
        )
        assert value(samples, "goal_migration_batch_duration_seconds_count", **labels) >= 1
    finally:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
    with pytest.raises(httpx.TransportError):  # the port is given back on shutdown
        async with httpx.AsyncClient() as scraper:
            await scraper.get(f"http://127.0.0.1:{port}/metrics")


async def test_a_scrape_answers_while_the_database_is_away():
    away = load_settings(
        database_url="postgresql://nobody@127.0.0.1:9/nowhere", jwt_secret=SECRET, _env_file=None
    )
    app, lifespan, client = await open_client(away)
    handler = Records()
    logging.getLogger("app").addHandler(handler)
    try:
        for _ in range(2):
            _, samples = await scrape(client)
            assert value(samples, "goal_migration_database_up") == 0
            assert "goal_migration_job_status" not in samples
            assert "process_cpu_seconds_total" in samples
        events = [getattr(r, "event", None) for r in handler.records]
        assert events.count("metrics.database_unavailable") == 1  # once per outage
    finally:
        logging.getLogger("app").removeHandler(handler)
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


async def test_a_job_sharing_the_database_shows_its_reason(served, database_url):
    client, scraper = served
    await demo.write(database_url, sessions=400, seed=72)
    async with helpers.clinicians_at_work(database_url, 2, every=0.05):
        params = {"dry_run": "false", "batch_size": 20, "pause_ms": 100, "adaptive": "false"}
        job = (await client.post(BASE, params=params | {"share_above_sessions": 1})).json()
        labels = {"job_id": job["id"], "kind": "migrate", "dry_run": "false"}
        job = await wait_for(client, job["id"], lambda j: j["throttle"] is not None)
        assert job["throttle"]["signal"] == "clinicians_active" and job["throttle"]["sharing"]
        _, samples = await scrape(scraper)
        assert value(samples, "goal_migration_throttled", **labels, reason="clinicians_active") == 1
        assert value(samples, "goal_migration_throttled", **labels, reason="replay_lag_bytes") == 0
    await wait_for(client, job["id"])
    _, samples = await scrape(scraper)
    assert not [
        s for s in samples.get("goal_migration_throttled", []) if s[0]["job_id"] == job["id"]
    ]
