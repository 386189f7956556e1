"""Scenario list, live view, publish with its impact, pause / resume, versions, audit, roles."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import Parcours
from engine.spec.lint import NOT_SCENARIOS
from engine.store.models import AuditEntry, JournalEntry, ScenarioRecord, ScenarioVersion

Login = Callable[[str], FlaskClient]
API = {"X-Api-Key": "k"}


def _sign_up(app: Flask, contact: str) -> None:
    """A contact created and signed up through the JSON API, then one worker pass."""
    from engine.worker.runner import Worker

    state: Parcours = app.extensions["parcours"]
    api = app.test_client()
    r = api.put(f"/api/contacts/{contact}", json={"email": f"{contact}@example.com"}, headers=API)
    assert r.status_code in (200, 201), r.get_data(as_text=True)
    r = api.post("/api/events", json={"contact": contact, "name": "signed_up"}, headers=API)
    assert r.status_code in (200, 201, 202), r.get_data(as_text=True)
    Worker(state.engine, state.settings).run_once(state.clock.now() + timedelta(seconds=1))


def _publish(client: FlaskClient, scenario_id: str) -> None:
    r = client.post(f"/scenarios/{scenario_id}/publish", data={"csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert r.status_code == 302, r.get_data(as_text=True)


def test_list_shows_every_example_as_draft_until_published(login: Login, workspace: Path) -> None:
    marketer = login("marketer")
    page = marketer.get("/scenarios").get_data(as_text=True)
    for path in workspace.glob("*.yaml"):
        if path.name not in NOT_SCENARIOS:
            assert f'data-testid="row-{path.stem}"' in page
    assert page.count('class="badge draft"') == 7
    _publish(marketer, "welcome-series")
    page = marketer.get("/scenarios?status=live").get_data(as_text=True)
    assert 'data-testid="row-welcome-series"' in page
    assert 'data-testid="row-cart-abandonment"' not in page
    searched = marketer.get("/scenarios?q=cart").get_data(as_text=True)
    assert 'data-testid="row-cart-abandonment"' in searched
    assert 'data-testid="row-welcome-series"' not in searched


def test_publish_page_shows_the_diff_and_contacts_inside(
    login: Login, workspace: Path, state: Parcours, designer_app: Flask
) -> None:
    marketer = login("marketer")
    _publish(marketer, "welcome-series")
    _sign_up(designer_app, "c1")
    path = workspace / "welcome-series.yaml"
    text = path.read_text()
    assert "name: Welcome series" in text
    path.write_text(text.replace("name: Welcome series", "name: Welcome journey", 1))
    page = marketer.get("/scenarios/welcome-series/publish").get_data(as_text=True)
    assert "+name: Welcome journey" in page
    assert "-name: Welcome series" in page
    assert 'data-testid="impact"' in page
    assert "stay on version 1" in page
    _publish(marketer, "welcome-series")
    with Session(state.engine) as db:
        numbers = db.scalars(
            select(ScenarioVersion.number).where(ScenarioVersion.scenario_id == "welcome-series")
        ).all()
        actions = db.scalars(select(AuditEntry.action).where(AuditEntry.action == "publish")).all()
    assert sorted(numbers) == [1, 2]
    assert len(actions) == 2
    versions = marketer.get("/scenarios/welcome-series/versions").get_data(as_text=True)
    assert 'data-testid="version-2"' in versions and "+name: Welcome journey" in versions


def test_a_file_with_errors_cannot_be_published(login: Login, workspace: Path) -> None:
    marketer = login("marketer")
    path = workspace / "birthday.yaml"
    path.write_text(path.read_text().replace("type: send", "type: sned", 1))
    r = marketer.post("/scenarios/birthday/publish", data={"csrf_token": marketer.csrf})  # type: ignore[attr-defined]
    assert r.status_code == 302
    assert "/edit" in r.headers["Location"]
    assert "problems" in marketer.get("/scenarios").get_data(as_text=True)


def test_pause_and_resume_are_audited_and_viewers_cannot(login: Login, state: Parcours) -> None:
    marketer = login("marketer")
    _publish(marketer, "birthday")
    viewer = login("viewer")
    assert (
        viewer.post("/scenarios/birthday/pause", data={"csrf_token": viewer.csrf}).status_code
        == 403
    )  # type: ignore[attr-defined]
    assert marketer.post("/scenarios/birthday/pause", data={}).status_code == 400  # no CSRF token
    r = marketer.post("/scenarios/birthday/pause", data={"csrf_token": marketer.csrf})  # type: ignore[attr-defined]
    assert r.status_code == 302
    with Session(state.engine) as db:
        assert db.get(ScenarioRecord, "birthday").status == "paused"  # type: ignore[union-attr]
    marketer.post("/scenarios/birthday/resume", data={"csrf_token": marketer.csrf})  # type: ignore[attr-defined]
    with Session(state.engine) as db:
        assert db.get(ScenarioRecord, "birthday").status == "live"  # type: ignore[union-attr]
        actions = db.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.target_id == "birthday")
            .order_by(AuditEntry.id)
        ).all()
    assert actions == ["publish", "pause", "resume"]
    audit = viewer.get("/audit?target=birthday").get_data(as_text=True)
    assert audit.count("marketer") >= 3


def test_live_view_counts_contacts_per_step(
    login: Login, state: Parcours, designer_app: Flask
) -> None:
    marketer = login("marketer")
    _publish(marketer, "welcome-series")
    for i in range(3):
        _sign_up(designer_app, f"c{i}")
    page = marketer.get("/scenarios/welcome-series").get_data(as_text=True)
    assert 'data-testid="total-active">3<' in page
    block = re.search(r'id="canvas-data">(.*?)</script>', page, re.S)
    assert block
    canvas = json.loads(block.group(1))
    assert next(iter(canvas["doc"]["steps"])) == "welcome"  # file order: the first step starts
    assert canvas["counts"]["welcome"]["sent"] == 3


def test_live_view_shows_sends_cancelled_at_dispatch(
    login: Login, state: Parcours, designer_app: Flask
) -> None:
    marketer = login("marketer")
    _publish(marketer, "welcome-series")
    for i in range(3):
        _sign_up(designer_app, f"c{i}")
    with Session(state.engine) as db:
        sent = db.scalars(
            select(JournalEntry).where(
                JournalEntry.scenario_id == "welcome-series", JournalEntry.kind == "send"
            )
        ).first()
        assert sent is not None
        # the row the delivery loop writes when a contact withdrew before the message left
        db.add(JournalEntry(
            at=sent.at, kind="cancelled", enrollment_id=sent.enrollment_id,
            contact_id=sent.contact_id, scenario_id=sent.scenario_id,
            version_id=sent.version_id, step_id=sent.step_id,
            reason="consent:all:opted_out", data={"channel": "email"},
        ))  # fmt: skip
        db.commit()
    page = marketer.get("/scenarios/welcome-series").get_data(as_text=True)
    block = re.search(r'id="canvas-data">(.*?)</script>', page, re.S)
    assert block
    counts = json.loads(block.group(1))["counts"]["welcome"]
    assert counts["sent"] == 3
    assert counts["cancelled:consent:all:opted_out"] == 1


def test_unknown_scenario_is_a_404_page(login: Login) -> None:
    r = login("viewer").get("/scenarios/nope")
    assert r.status_code == 404
    assert "Traceback" not in r.get_data(as_text=True)


OWN_CREDENTIALS = ("api", "public", "hooks.", "metrics_view.")  # keys, signed links, tokens


def test_every_designer_route_declares_a_role(designer_app: Flask) -> None:
    open_endpoints = {"static", "auth.login", "home"}
    for rule in designer_app.url_map.iter_rules():
        endpoint = rule.endpoint
        # the API, public pages, provider callbacks and /metrics have their own credentials
        if endpoint in open_endpoints or endpoint.startswith(OWN_CREDENTIALS):
            continue
        view = designer_app.view_functions[endpoint]
        assert getattr(view, "required_role", None), f"{rule.rule} ({endpoint}) has no role"


def test_every_designer_page_needs_a_sign_in(designer_app: Flask) -> None:
    client = designer_app.test_client()
    for rule in designer_app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint in {"static", "auth.login", "home"} or endpoint.startswith(OWN_CREDENTIALS):
            continue
        url = rule.rule.replace("<scenario_id>", "welcome-series").replace("<int:user_id>", "1")
        url = url.replace("<int:contact_id>", "1")
        url = url.replace("<external_id>", "c1").replace("<path:filename>", "x")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            r = client.open(url, method=method, headers={"Accept": "text/html"})
            assert r.status_code in (302, 400), f"{method} {url} answered {r.status_code}"


def _urls(app: Flask) -> list[tuple[str, str, str]]:
    """(method, url, required role) of every designer route, with sample arguments."""
    out = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        role = getattr(view, "required_role", None)
        if role is None:
            continue
        url = rule.rule.replace("<scenario_id>", "welcome-series").replace("<int:user_id>", "1")
        url = url.replace("<int:contact_id>", "1")
        url = url.replace("<external_id>", "c1")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, url, role))
    return out


def test_each_role_is_refused_what_it_may_not_do(designer_app: Flask, login: Login) -> None:
    clients = {"viewer": login("viewer"), "marketer": login("marketer")}
    checked = 0
    for method, url, role in _urls(designer_app):
        refused = {"marketer": ["viewer"], "admin": ["viewer", "marketer"]}.get(role, [])
        for who in refused:
            client = clients[who]
            headers = {"X-CSRF-Token": client.csrf}  # type: ignore[attr-defined]
            r = client.open(
                url, method=method, headers=headers, json={} if method != "GET" else None
            )
            assert r.status_code == 403, f"{who} {method} {url} answered {r.status_code}"
            checked += 1
    assert checked >= 12  # every marketer and admin route, at least


def test_unreadable_yaml_is_never_saved_over_the_file(login: Login, workspace: Path) -> None:
    marketer = login("marketer")
    path = workspace / "birthday.yaml"
    before = path.read_text()
    loaded = marketer.get("/scenarios/birthday/edit").get_data(as_text=True)
    digest = re.search(r'"hash":\s*"([0-9a-f]+)"', loaded)
    assert digest
    r = marketer.post(
        "/scenarios/birthday/save",
        json={"yaml": before + "\n  broken: [\n", "hash": digest.group(1)},
        headers={"X-CSRF-Token": marketer.csrf},  # type: ignore[attr-defined]
    )
    assert r.status_code == 422
    assert r.get_json()["error"]["code"] == "yaml.syntax"
    assert "line" in r.get_json()["error"]["message"]
    assert path.read_text() == before
