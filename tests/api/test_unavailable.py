"""PostgreSQL stopped under the running service, then started again: 503s, then recovery.

A server of the test's own (tests/pg.py) is stopped with pg_ctl while the app holds
pooled connections to it, and started again; no request may answer 500, and the API must
come back without a restart.
"""

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app import http_errors
from app.config import load_settings
from tests.api.conftest import BASE, open_client, wait_for
from tests.conftest import SECRET, _with_database
from tests.pg import OwnServer


@pytest.fixture
async def own_server():
    # Not under pytest's tmp_path: concurrent pytest runs on one machine prune each other's.
    pgdata = Path(tempfile.mkdtemp(prefix="gm-own-")) / "pg"
    server = await asyncio.to_thread(OwnServer, pgdata)
    url = await asyncio.to_thread(server.database)
    yield server, url
    await asyncio.to_thread(server.close)


@pytest.fixture
async def app_client(own_server):
    server, url = own_server
    settings = load_settings(
        database_url=url, jwt_secret=SECRET, heartbeat_seconds=0.1, _env_file=None
    )
    app, lifespan, client = await open_client(settings)
    yield server, app, client
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


def _every_operation(app) -> list[tuple[str, str]]:
    """(method, path) of every documented route, with a job id filled in."""
    job = str(uuid.uuid4())
    return [
        (method.upper(), path.replace("{job_id}", job))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]


async def _wait_ready(client, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while (response := await client.get("/ready")).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the API did not recover"
        await asyncio.sleep(0.1)


async def test_every_route_answers_503_while_postgresql_is_down_and_recovers(app_client):
    server, app, client = app_client
    assert (await client.get("/ready")).status_code == 200
    assert (await client.get(BASE)).status_code == 200  # the pool now holds a live connection
    operations = _every_operation(app)
    assert len(operations) >= 13

    await asyncio.to_thread(server.stop)
    for method, path in operations:
        response = await client.request(method, path)
        if path == "/health":
            assert response.status_code == 200
            continue
        assert response.status_code == 503, (method, path, response.text)
        assert response.headers["Retry-After"] == str(http_errors.RETRY_AFTER_SECONDS)
        assert response.json()["detail"] == http_errors.UNREACHABLE, (method, path)

    await asyncio.to_thread(server.start)
    await _wait_ready(client)
    started = await client.post(BASE, params={"dry_run": "true"})
    assert started.status_code == 202, started.text
    assert (await wait_for(client, started.json()["id"]))["status"] == "succeeded"


async def test_a_request_cut_off_by_the_shutdown_answers_503(app_client, own_server):
    server, app, client = app_client
    _, url = own_server
    locker = await asyncpg.connect(url)
    await locker.execute("BEGIN; LOCK TABLE migration_jobs IN ACCESS EXCLUSIVE MODE")
    request = asyncio.create_task(client.get(BASE))
    watcher = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + 30
        while not await watcher.fetchval(
            "SELECT count(*) > 0 FROM pg_stat_activity "
            "WHERE application_name = 'goal-migration' AND wait_event_type = 'Lock'"
        ):
            assert time.monotonic() < deadline, "the request never reached the database"
            await asyncio.sleep(0.05)
    finally:
        await watcher.close()

    await asyncio.to_thread(server.stop)  # ends the waiting request's session mid-statement
    response = await asyncio.wait_for(request, timeout=60)
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": http_errors.UNREACHABLE}
    locker.terminate()

    await asyncio.to_thread(server.start)
    await _wait_ready(client)
    assert (await client.get(BASE)).status_code == 200


async def test_a_database_refusing_connections_answers_503_and_recovers(
    client, database_url, server_url
):
    """ALLOW_CONNECTIONS false answers SQLSTATE 55000 at connect: unreachable, not our fault."""
    app = client._transport.app
    assert (await client.get(BASE)).status_code == 200
    name = make_url(database_url).database
    admin = await asyncpg.connect(_with_database(server_url, "postgres"))
    try:
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        # The pool's connections end too, so every request must open a new one.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        for method, path in _every_operation(app):
            response = await client.request(method, path)
            if path == "/health":
                continue
            assert response.status_code == 503, (method, path, response.text)
            assert response.headers["Retry-After"] == str(http_errors.RETRY_AFTER_SECONDS)
            assert response.json()["detail"] == http_errors.UNREACHABLE, (method, path)
        await admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    finally:
        await admin.close()
    await _wait_ready(client)
    assert (await client.get(BASE)).status_code == 200
