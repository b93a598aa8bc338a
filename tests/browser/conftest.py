"""A real Chromium, driven by Playwright, against a real web server, workers and stand-in.

The browser is Debian's `chromium` package (Playwright cannot download its own here):
CHROMIUM_PATH, default /usr/bin/chromium. Without it these tests are skipped, loudly; under
CI=true `make test` installs it first (scripts/test), so they never skip there. When a test
fails, every step's screenshot is kept under var/screenshots/<test>/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.reports.conftest import shop  # noqa: F401  (the report tests' small shop)

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"


def chromium_missing() -> str:
    if shutil.which(CHROMIUM) or Path(CHROMIUM).exists():
        return ""
    return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = chromium_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI=true: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop marked running in this thread until it
    # stops; Django refuses ORM calls under a running loop unless told this is deliberate.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # Chromium still looks up Google's hosts at start; this closed network refuses them.
        yield playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost, EXCLUDE 127.0.0.1"],
        )
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Steps:
    """A screenshot after each named step, written out only if the test fails."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.shots: list[tuple[str, bytes]] = []

    def __call__(self, name: str) -> None:
        self.shots.append((name, self.page.screenshot(full_page=True)))

    def save(self, test_name: str) -> Path:
        folder = SCREENSHOTS / re.sub(r"[^\w.-]+", "_", test_name)
        folder.mkdir(parents=True, exist_ok=True)
        self.shots.append(("at-failure", self.page.screenshot(full_page=True)))
        for index, (name, png) in enumerate(self.shots, start=1):
            (folder / f"{index:02d}-{name}.png").write_bytes(png)
        return folder


@pytest.fixture
def page(browser: Any, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, accept_downloads=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.steps = Steps(page)
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        folder = page.steps.save(request.node.name)
        print(f"\nScreenshots of each step: {folder}")
    context.close()
