"""Server processes for the fault tests, killed at the end of each test."""

import pytest

from tests.e2e.servers import Server


@pytest.fixture
async def servers(database_url):
    """Start app instances on this test's database: `await servers(STALE_AFTER_SECONDS="3")`."""
    started: list[Server] = []

    async def start(**env) -> Server:
        server = Server(database_url, **env)
        started.append(server)
        return await server.ready()

    yield start
    for server in started:
        await server.close()
