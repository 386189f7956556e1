"""Sign-in under attack: growing delays by name and by address, shared through the database,
the same password work for unknown names, failed attempts in the audit log, https-only cookies."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.test import TestResponse

from designer import Parcours, create_app, throttle
from designer import auth as auth_module
from engine.runtime.clock import VirtualClock
from engine.store.models import AuditEntry, SignInThrottle, User
from tests.web.conftest import PASSWORD, csrf_of

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock(state: Parcours) -> VirtualClock:
    state.clock = VirtualClock(T0)
    return state.clock


def attempt(
    client: FlaskClient, username: str, password: str, address: str = "198.51.100.7"
) -> TestResponse:
    token = csrf_of(client)
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        environ_base={"REMOTE_ADDR": address},
    )


def wait_out(response: TestResponse, clock: VirtualClock) -> None:
    assert response.status_code == 429
    clock.advance(timedelta(seconds=int(response.headers["Retry-After"])))


def test_the_real_user_signs_in_after_the_delay_whatever_the_failures(
    designer_app: Flask, clock: VirtualClock
) -> None:
    client = designer_app.test_client()
    wrong = 0
    while wrong < 10:
        r = attempt(client, "admin", "guess")
        if r.status_code == 429:  # the attempt was not even tried: wait, then go on guessing
            assert "try again in" in r.get_data(as_text=True)
            wait_out(r, clock)
            continue
        assert r.status_code == 401
        wrong += 1
    early = attempt(client, "admin", PASSWORD)
    assert early.status_code == 429
    assert int(early.headers["Retry-After"]) > 0
    wait_out(early, clock)
    assert attempt(client, "admin", PASSWORD).status_code == 302
    # a success clears the name: the next mistake (from an address with no failures) is answered
    assert attempt(designer_app.test_client(), "admin", "guess", "192.0.2.9").status_code == 401


def test_a_spray_of_names_from_one_address_is_slowed_by_the_address(
    designer_app: Flask, clock: VirtualClock
) -> None:
    client = designer_app.test_client()
    answered = 0
    for i in range(40):
        if attempt(client, f"name{i}", "guess", "203.0.113.5").status_code == 429:
            break
        answered += 1
    assert answered == throttle.ADDRESS_FREE_FAILURES
    # another address is not slowed, and the real user there signs in
    assert attempt(client, "viewer", PASSWORD, "192.0.2.44").status_code == 302


def test_two_processes_share_the_counters(
    designer_app: Flask, state: Parcours, clock: VirtualClock
) -> None:
    other = create_app(state.settings, {"TESTING": True})
    other.extensions["parcours"].clock = clock
    try:
        apps = [designer_app.test_client(), other.test_client()]
        for i in range(throttle.NAME_FREE_FAILURES):
            assert attempt(apps[i % 2], "marketer", "guess").status_code == 401
        assert attempt(apps[0], "marketer", PASSWORD).status_code == 429
        assert attempt(apps[1], "marketer", PASSWORD).status_code == 429
    finally:
        other.extensions["parcours"].engine.dispose()


@pytest.mark.real_password_hash
def test_unknown_and_disabled_names_cost_one_password_hash_like_known_ones(
    designer_app: Flask, state: Parcours, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = auth_module.check_password_hash

    def counted(stored: str, password: str) -> bool:
        calls.append(stored.split("$", 1)[0])
        return real(stored, password)

    monkeypatch.setattr(auth_module, "check_password_hash", counted)
    client = designer_app.test_client()
    with Session(state.engine) as db, db.begin():
        db.scalars(select(User).where(User.username == "viewer")).one().disabled = True
    for name in ("admin", "nobody", "viewer"):
        calls.clear()
        assert attempt(client, name, "guess", f"192.0.2.{len(name)}").status_code == 401
        assert len(calls) == 1, name
        assert calls[0] == auth_module.hash_password("x").split("$", 1)[0]  # same method, cost


def failures(state: Parcours) -> list[AuditEntry]:
    with Session(state.engine) as db:
        stmt = select(AuditEntry).where(AuditEntry.action == "login_failed")
        return list(db.scalars(stmt.order_by(AuditEntry.id)))


def test_failed_sign_ins_are_audited_with_their_reason_never_the_password(
    designer_app: Flask,
    state: Parcours,
    clock: VirtualClock,
    login: Callable[[str], FlaskClient],
) -> None:
    client = designer_app.test_client()
    attempt(client, "admin", "s3cret-guess")
    attempt(client, "ghost", "s3cret-guess")
    with Session(state.engine) as db, db.begin():
        db.scalars(select(User).where(User.username == "viewer")).one().disabled = True
    attempt(client, "viewer", PASSWORD)
    for _ in range(throttle.NAME_FREE_FAILURES + 1):
        attempt(client, "marketer", "s3cret-guess")
    found = failures(state)
    seen = [(e.username, e.target_id, e.details["reason"]) for e in found]
    assert seen[:3] == [
        ("admin", "admin", "wrong"),
        ("ghost", "ghost", "unknown"),
        ("viewer", "viewer", "disabled"),
    ]
    assert seen[-1] == ("marketer", "marketer", "throttled")
    assert all(e.details["address"] == "198.51.100.7" for e in found)
    assert all("s3cret" not in str(e.details) for e in found)
    admin = login("admin")
    english = admin.get("/audit?lang=en").get_data(as_text=True)
    assert "failed sign-in" in english and "wrong password" in english
    french = admin.get("/audit?lang=fr").get_data(as_text=True)
    assert "connexion refusée" in french and "mot de passe erroné" in french


@pytest.fixture
def https_app(designer_app: Flask, state: Parcours) -> Iterator[Flask]:
    app = create_app(state.settings.evolve(public_url="https://crm.example.com"), {"TESTING": True})
    yield app
    app.extensions["parcours"].engine.dispose()


def cookie_of(response: TestResponse) -> str:
    cookies = [v for k, v in response.headers.items() if k == "Set-Cookie"]
    assert cookies, "no cookie set"
    return cookies[0]


def test_https_public_url_gives_secure_cookies_and_hsts(https_app: Flask) -> None:
    client = https_app.test_client()
    page = client.get("/login", base_url="https://crm.example.com")
    assert "; Secure" in cookie_of(page) and "SameSite=Lax" in cookie_of(page)
    hsts = page.headers["Strict-Transport-Security"]
    assert hsts == "max-age=31536000; includeSubDomains"


def test_http_public_url_keeps_plain_cookies_for_local_development(designer_app: Flask) -> None:
    page = designer_app.test_client().get("/login")
    assert "Secure" not in cookie_of(page) and "SameSite=Lax" in cookie_of(page)
    assert "Strict-Transport-Security" not in page.headers


def test_the_counts_work_alike_on_sqlite_and_postgresql(engine_url: str) -> None:
    from engine.store.db import make_engine

    engine = make_engine(engine_url)
    try:
        waits = []
        for i in range(throttle.NAME_FREE_FAILURES + 1):
            with engine.begin() as conn:
                waits.append(throttle.reserve(conn, "anne", f"192.0.2.{i}", T0))
        assert waits == [0] * throttle.NAME_FREE_FAILURES + [2]
        later = T0 + timedelta(seconds=2)
        with engine.begin() as conn:
            assert throttle.reserve(conn, "anne", "192.0.2.99", later) == 0
            throttle.signed_in(conn, "anne", "192.0.2.99")
        with engine.begin() as conn:
            assert throttle.reserve(conn, "anne", "192.0.2.99", later) == 0
        forgotten = later + throttle.RESET_AFTER + timedelta(seconds=1)
        with engine.begin() as conn:
            assert throttle.reserve(conn, "bob", "192.0.2.1", forgotten) == 0
            names = conn.execute(select(SignInThrottle.value)).scalars().all()
        assert sorted(names) == ["192.0.2.1", "bob"]  # older counts are gone
    finally:
        engine.dispose()


@pytest.mark.parametrize("proxies, seen", [(0, "10.0.0.1"), (1, "203.0.113.9")])
def test_x_forwarded_for_counts_only_behind_configured_proxies(
    designer_app: Flask, state: Parcours, proxies: int, seen: str
) -> None:
    app = create_app(state.settings.evolve(trusted_proxies=proxies), {"TESTING": True})
    try:
        client = app.test_client()
        token = csrf_of(client)
        client.post(
            "/login",
            data={"username": "admin", "password": "guess", "csrf_token": token},
            headers={"X-Forwarded-For": "203.0.113.9"},
            environ_base={"REMOTE_ADDR": "10.0.0.1"},
        )
    finally:
        app.extensions["parcours"].engine.dispose()
    assert [e.details["address"] for e in failures(state)] == [seen]
