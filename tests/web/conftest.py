"""Designer fixtures: an app on a migrated SQLite database with a copy of the example scenarios,
and one user per role (password PASSWORD)."""

from __future__ import annotations

import functools
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from designer import Parcours, auth, create_app
from designer.auth import create_user
from engine.config import load_settings

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
ROLES = ("admin", "marketer", "viewer")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the repository's scenarios folder (examples, templates, policy)."""
    folder = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", folder)
    return folder


@functools.cache
def _quick_hash(password: str) -> str:
    return generate_password_hash(password, method="pbkdf2:sha256:1000")


@pytest.fixture(autouse=True)
def quick_password_hashes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """These tests are about sign-in flows, not the hash's cost: users get a cheap hash (a
    stored hash names its method, so checking it is cheap too). A test marked
    `real_password_hash` keeps the product's, its unknown-user hash included."""
    auth._dummy_hash.cache_clear()  # made with whichever hash this test uses
    if request.node.get_closest_marker("real_password_hash") is None:
        monkeypatch.setattr(auth, "hash_password", _quick_hash)
    yield
    auth._dummy_hash.cache_clear()


@pytest.fixture
def designer_app(tmp_path: Path, workspace: Path, sqlite_template: Path) -> Iterator[Flask]:
    path = tmp_path / "designer.db"
    with sqlite3.connect(sqlite_template) as source, sqlite3.connect(path) as copy:
        source.backup(copy)  # the run's migrated template (tests/conftest.py)
    url = f"sqlite:///{path}"
    settings = load_settings(
        {}, database_url=url, data_dir=tmp_path, scenarios_dir=workspace, api_key="k"
    )
    app = create_app(settings, {"TESTING": True})
    engine = app.extensions["parcours"].engine
    for role in ROLES:
        create_user(engine, role, role, password=PASSWORD)
    yield app
    engine.dispose()


@pytest.fixture
def state(designer_app: Flask) -> Parcours:
    found: Parcours = designer_app.extensions["parcours"]
    return found


def csrf_of(client: FlaskClient) -> str:
    """The session's CSRF token, as a page carries it."""
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def login(designer_app: Flask) -> Callable[[str], FlaskClient]:
    """login(role) -> a client signed in as that role's user; `client.csrf` is its token."""

    def sign_in(role: str) -> FlaskClient:
        client = designer_app.test_client()
        token = csrf_of(client)
        response = client.post(
            "/login", data={"username": role, "password": PASSWORD, "csrf_token": token}
        )
        assert response.status_code == 302, response.get_data(as_text=True)
        client.csrf = csrf_of(client)  # type: ignore[attr-defined]
        return client

    return sign_in
