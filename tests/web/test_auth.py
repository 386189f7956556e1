"""Sign-in, roles, CSRF and the audit of sign-ins."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import Parcours
from designer.auth import ensure_first_admin
from designer.throttle import NAME_FREE_FAILURES
from engine.runtime.clock import VirtualClock
from engine.store.models import AuditEntry, User
from tests.web.conftest import PASSWORD, csrf_of


def test_signed_out_pages_redirect_to_login_and_json_gets_401(designer_app: Flask) -> None:
    client = designer_app.test_client()
    page = client.get("/scenarios")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/login?next=/scenarios")
    api = client.get("/scenarios", headers={"Accept": "application/json"})
    assert api.status_code == 401
    assert api.get_json()["error"]["code"] == "login"


def test_wrong_password_is_refused_and_a_burst_is_slowed(
    designer_app: Flask, state: Parcours
) -> None:
    state.clock = VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))  # no time passes in between
    client = designer_app.test_client()
    token = csrf_of(client)
    for _ in range(NAME_FREE_FAILURES):
        r = client.post("/login", data={"username": "viewer", "password": "x", "csrf_token": token})
        assert r.status_code == 401
        assert "wrong password" in r.get_data(as_text=True)
    right = {"username": "viewer", "password": PASSWORD, "csrf_token": token}
    slowed = client.post("/login", data=right)
    assert slowed.status_code == 429 and slowed.headers["Retry-After"] == "2"
    assert "try again in 2 seconds" in slowed.get_data(as_text=True)


def test_login_without_csrf_token_is_refused(designer_app: Flask) -> None:
    client = designer_app.test_client()
    r = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert r.status_code == 400


def test_next_never_leaves_the_site(designer_app: Flask) -> None:
    client = designer_app.test_client()
    token = csrf_of(client)
    data = {"username": "admin", "password": PASSWORD, "csrf_token": token}
    r = client.post("/login?next=//evil.example/x", data=data)
    assert r.headers["Location"] == "/scenarios"


def test_sign_in_is_audited(login: Callable[[str], FlaskClient], state: Parcours) -> None:
    login("marketer")
    with Session(state.engine) as db:
        entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "login")).one()
    assert (entry.username, entry.target_kind) == ("marketer", "session")


def test_viewer_cannot_reach_admin_pages(login: Callable[[str], FlaskClient]) -> None:
    assert login("viewer").get("/users").status_code == 403
    assert login("marketer").get("/users").status_code == 403
    assert login("admin").get("/users").status_code == 200


def test_first_admin_gets_a_one_time_password_that_must_be_changed(
    designer_app: Flask, state: Parcours
) -> None:
    with Session(state.engine) as db, db.begin():
        for user in db.scalars(select(User)):
            db.delete(user)
    password = ensure_first_admin(state.engine)
    assert password and ensure_first_admin(state.engine) is None
    client = designer_app.test_client()
    token = csrf_of(client)
    client.post("/login", data={"username": "admin", "password": password, "csrf_token": token})
    assert client.get("/scenarios").headers["Location"] == "/account/password"
    token = csrf_of(client)
    short = {"current": password, "new": "short", "confirm": "short", "csrf_token": token}
    assert client.post("/account/password", data=short).status_code == 400
    good = {"current": password, "new": PASSWORD, "confirm": PASSWORD, "csrf_token": token}
    assert client.post("/account/password", data=good).status_code == 302
    assert client.get("/scenarios").status_code == 200


def test_admin_creates_a_user_with_a_one_time_password(
    login: Callable[[str], FlaskClient],
) -> None:
    admin = login("admin")
    r = admin.post(
        "/users", data={"username": "anne", "role": "marketer", "csrf_token": admin.csrf}
    )
    assert r.status_code == 200
    assert 'data-testid="one-time-password"' in r.get_data(as_text=True)
    missing_token = admin.post("/users", data={"username": "bob", "role": "viewer"})
    assert missing_token.status_code == 400


def test_users_command_creates_accounts(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from designer.cli import cli

    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PARCOURS_DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(cli, ["users", "create", "anne", "--role", "viewer"])
    assert made.exit_code == 0, made.output
    assert "one-time password" in made.output
    given = runner.invoke(
        cli, ["users", "create", "bob", "--password-stdin"], input="correct horse battery\n"
    )
    assert given.exit_code == 0 and "one-time" not in given.output
    short = runner.invoke(cli, ["users", "create", "carl", "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least 10" in short.output
    again = runner.invoke(cli, ["users", "create", "anne"])
    assert again.exit_code == 2 and "already exists" in again.output
    listed = runner.invoke(cli, ["users", "list"])
    assert listed.output.splitlines() == ["anne\tviewer", "bob\tmarketer"]


def test_only_a_page_opened_or_a_change_writes_the_session_cookie(login: Any) -> None:
    """A stylesheet or a poll sent with the previous cookie and answered after a page that
    changed the session (the language, here) must not write the previous session back."""
    browser = login("viewer")

    def cookie_set(path: str, **headers: str) -> bool:
        response = browser.get(path, headers=headers)
        response.close()  # a static file is streamed from disk
        assert response.status_code in (200, 304), (path, response.status_code)
        return any("session=" in c for c in response.headers.getlist("Set-Cookie"))

    assert cookie_set("/scenarios")  # a page opened: the 12 hours start again
    assert not cookie_set("/static/app.css")
    assert not cookie_set("/scenarios", **{"Sec-Fetch-Dest": "empty"})  # a script's fetch
    assert cookie_set("/scenarios?lang=fr", **{"Sec-Fetch-Dest": "empty"})  # a change
    with browser.session_transaction() as session:
        assert session["lang"] == "fr"
