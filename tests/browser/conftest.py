"""A real browser on the docs: Debian's Chromium, headless, driven by Playwright.

`make e2e-browser` runs this folder; it installs Playwright from PyPI (requirements-browser.txt)
and Chromium from Debian's archive. Playwright never downloads a browser here: it drives the
one at E2E_CHROMIUM. `make test` leaves the folder out (see tests/conftest.py).

Settings, from the environment:

    E2E_CHROMIUM     the browser to drive (default /usr/lib/chromium/chromium, Debian's binary)
    E2E_REPORT_DIR   where each test's screenshot and the server's log go (default a new
                     temporary folder, printed when the first test starts)
"""

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.servers import gunicorn_serving

CHROMIUM = Path(os.environ.get("E2E_CHROMIUM") or "/usr/lib/chromium/chromium")
# Past the route check below, the browser cannot look up any host name either: whatever it
# might try on its own (updates, safe browsing) fails here as it would offline.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
# Long enough for a loaded 2-core CI machine, short enough to fail fast.
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def report_dir(pytestconfig) -> Path:
    configured = os.environ.get("E2E_REPORT_DIR")
    folder = Path(configured or tempfile.mkdtemp(prefix="devlab-e2e-browser-"))
    folder.mkdir(parents=True, exist_ok=True)
    plugins = pytestconfig.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        message = f"Browser test: screenshots and the server's log go to {folder}"
        plugins.get_plugin("terminalreporter").write_line(message)
    return folder


@pytest.fixture(scope="session")
def chromium():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"No Chromium at {CHROMIUM}: apt-get install chromium, or set E2E_CHROMIUM.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[OFFLINE])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def devlab(app, report_dir):
    """gunicorn serving DevLab on the test database (`app` migrated it); yields its base URL."""
    with gunicorn_serving(report_dir / "gunicorn.log", WEB_CONCURRENCY="2") as base:
        yield base


class Traffic:
    """What a page asked for and said: every request is routed through `route`, which lets
    through only those to DevLab's own origin and aborts (and records) any other. The page
    works offline: Swagger UI's files come from DevLab itself."""

    def __init__(self, origin: str):
        self.origin = origin
        self.to_devlab: list[str] = []
        self.elsewhere: list[str] = []
        # Errors and warnings in the console (there are none today), and uncaught exceptions.
        self.console_problems: list[str] = []

    def route(self, route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            self.to_devlab.append(f"{route.request.method} {parts.path}")
            route.continue_()
        else:
            self.elsewhere.append(url)
            route.abort("blockedbyclient")

    def console(self, message) -> None:
        if message.type in ("error", "warning"):
            where = f"{message.location['url']}:{message.location['lineNumber']}"
            self.console_problems.append(f"{message.type}: {message.text} ({where})")

    def page_error(self, error) -> None:
        self.console_problems.append(f"uncaught: {error}")


@pytest.fixture
def docs(chromium, devlab, report_dir, request):
    """A fresh browser profile on /docs; yields (page, Traffic). A full-page screenshot named
    after the test is kept in the report folder, also when the test fails."""
    context = chromium.new_context(service_workers="block")
    traffic = Traffic(devlab)
    context.route("**/*", traffic.route)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("console", traffic.console)
    page.on("pageerror", traffic.page_error)
    page.goto(f"{devlab}/docs")
    try:
        yield page, traffic
    finally:
        page.screenshot(path=report_dir / f"{request.node.name}.png", full_page=True)
        context.close()
