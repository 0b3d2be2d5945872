"""The app in-process with its lifespan, an httpx client, and tokens."""

import asyncio
import time

import httpx
import pytest

from app import security
from app.main import create_app
from tests.conftest import SECRET

BASE = "/admin/migrations/goals"
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


def token(role: str = "admin", sub: str = "admin-1", **kw) -> str:
    return security.mint(secret=SECRET, sub=sub, role=role, ttl_seconds=kw.get("ttl", 600))


def auth(role: str = "admin", sub: str = "admin-1") -> dict:
    return {"Authorization": f"Bearer {token(role, sub)}"}


async def open_client(settings):
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers=auth()
    )
    return app, lifespan, client


@pytest.fixture
async def client(settings):
    app, lifespan, client = await open_client(settings)
    yield client
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


async def wait_for(client, job_id, predicate=lambda j: j["status"] in TERMINAL, seconds=30.0):
    """Poll the job endpoint until `predicate(job)` holds."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(f"{BASE}/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"timed out waiting on job: {job}"
        await asyncio.sleep(0.05)
