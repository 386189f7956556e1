"""Browser tests: the designer served on 127.0.0.1 by a real WSGI server, driven in Debian's
Chromium through Playwright. Under CI=true a missing Chromium or Playwright fails the run.

Screenshots of the main pages go to `var/screenshots/` (kept out of git) to be looked at.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from designer import Parcours, auth, create_app
from designer.auth import create_user
from engine.config import load_settings
from tests.web.conftest import _quick_hash

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PARCOURS_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "correct horse battery"
SHOTS = REPO / "var" / "screenshots"

pytestmark = pytest.mark.browser


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: make test installs it")
    if not Path(CHROMIUM).exists():
        _missing(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield found
        found.close()


@dataclass
class Site:
    url: str
    state: Parcours
    workspace: Path

    def shot(self, page: Any, name: str) -> Path:
        """Save a full-page screenshot of a main page for review."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def site(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The designer on a fresh SQLite database with a copy of the example scenarios, served on
    a free port; users admin, marketer and viewer (password PASSWORD)."""
    workspace = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", workspace)
    path = tmp_path / "site.db"
    with sqlite3.connect(sqlite_template) as source, sqlite3.connect(path) as copy:
        source.backup(copy)  # the run's migrated template (tests/conftest.py)
    url = f"sqlite:///{path}"
    # sign-in flows, not the hash's cost (see tests/web/conftest.py)
    monkeypatch.setattr(auth, "hash_password", _quick_hash)
    auth._dummy_hash.cache_clear()
    settings = load_settings(
        {}, database_url=url, data_dir=tmp_path, scenarios_dir=workspace, api_key="browser-key"
    )
    app = create_app(settings)
    state: Parcours = app.extensions["parcours"]
    for role in ("admin", "marketer", "viewer"):
        create_user(state.engine, role, role, password=PASSWORD)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_port}", state, workspace)
    finally:
        server.shutdown()
        thread.join(5)
        state.engine.dispose()


@pytest.fixture
def page_for(browser: Any, site: Site) -> Iterator[Callable[[str], Any]]:
    """page_for(role) -> a signed-in page; console errors and CSP violations fail the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_as(role: str) -> Any:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-GB")
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(site.url + "/login")
        page.fill("input[name=username]", role)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/scenarios")
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert not errors, f"browser console errors: {errors}"
