"""The admin page in Debian's Chromium, driven by Playwright, against the app on 127.0.0.1.

Each test gets its own database (cloned from the Alembic template), small demo data and the app
served by uvicorn in a thread on a socket this fixture binds and hands over. One Chromium serves
this package (and is gone before the asyncio tests of the next package run); every test gets a
fresh browser context (its own sessionStorage).
"""

import asyncio
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from app import demo, security
from app.main import create_app
from tests.conftest import SECRET, drop_database, new_database

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
API = "/admin/migrations/goals"
VIEWPORT = {"width": 1280, "height": 860}
# No internet here: keep Chromium from trying to reach Google's services at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the dev extra is not installed
    expect = sync_playwright = None
if CHROMIUM is None:
    SKIP_REASON = "no chromium on PATH (apt-get install chromium; .ci/run installs it)"
elif sync_playwright is None:
    SKIP_REASON = "the playwright package is missing (pip install -e '.[dev]')"
else:
    SKIP_REASON = ""
_SKIPPED = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items):
    """Without chromium, leave these tests out; pytest_terminal_summary says why, once."""
    if not SKIP_REASON:
        return
    here = Path(__file__).parent
    skipped = [item for item in items if here in item.path.parents]
    if skipped:
        items[:] = [item for item in items if item not in skipped]
        config.hook.pytest_deselected(items=skipped)
        config.stash[_SKIPPED] = len(skipped)


def pytest_terminal_summary(terminalreporter, config):
    if config.stash.get(_SKIPPED, 0):
        terminalreporter.write_line(
            f"SKIPPED {config.stash[_SKIPPED]} browser tests of the admin page: {SKIP_REASON}",
            yellow=True,
        )


def in_thread(function, *args, **kwargs):
    """Call `function` in a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def run_async(coroutine_function, *args, **kwargs):
    """Run a coroutine to its end, off this thread (see in_thread)."""
    return in_thread(lambda: asyncio.run(coroutine_function(*args, **kwargs)))


def mint(sub: str = "admin-1", role: str = "admin", ttl: int = 600) -> str:
    return security.mint(secret=SECRET, sub=sub, role=role, ttl_seconds=ttl)


class LiveServer:
    """The app, served by uvicorn in a thread on a socket bound here (never bind-close-rebind)."""

    def __init__(self, settings):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread ended before it started"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()

    def api(self, token: str | None = None) -> httpx.Client:
        """A plain HTTP client on the same API, to compare what the page shows with it."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or mint('checker')}"},
            timeout=10,
        )


@pytest.fixture(scope="package")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def database_url(server_url, template_db):
    """As tests/conftest.py's, with its asyncio.run calls moved off Playwright's thread."""
    url = in_thread(new_database, server_url, template_db)
    yield url
    in_thread(drop_database, url)


@pytest.fixture
def demo_sessions() -> int:
    """How many demo sessions a test loads; override in a test module or with parametrize."""
    return 200


@pytest.fixture
def server(browser, settings, database_url, demo_sessions):
    if demo_sessions:
        run_async(demo.write, database_url, sessions=demo_sessions, seed=12)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport=VIEWPORT, locale="en-GB")
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str, at=None) -> None:
    """Save the viewport for docs/ when SCREENSHOTS=1 (normal runs rewrite nothing).

    `at`: a locator to show near the top; otherwise the top of the page.
    """
    if os.environ.get("SCREENSHOTS") != "1":
        return
    if at is None:
        page.evaluate("window.scrollTo(0, 0)")
    else:
        at.evaluate("e => window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 24)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def assert_accessible(page, state: str) -> None:
    """axe-core on the current state: no serious or critical violations."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"accessibility violations in {state}: {bad}"


def sign_in(page, server, token: str | None = None) -> None:
    """Open the page and sign in the way a person does: paste the token, press Sign in."""
    page.goto(server.url + "/admin/")
    page.get_by_label("Admin token").fill(token or mint())
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Sections").wait_for()
