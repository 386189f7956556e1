"""Who enters, in the editor's routes: the audience count, the page data the entry block reads,
a new journey's first trigger, and trigger edits saved as a minimal diff."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from designer import Parcours, create_app
from designer.auth import create_user
from engine.audience.membership import rebuild
from engine.config import load_settings
from engine.policy.consent import record_consent
from engine.spec.loader import lint_document
from engine.spec.segments import load_segments
from engine.spec.yamlio import parse_yaml
from engine.store.models import Contact, Event
from tests.web.conftest import PASSWORD, csrf_of
from tests.web.test_editor import bootstrap, post

Login = Callable[[str], FlaskClient]
PLANS = {"ana": "pro", "bo": "pro", "cy": "free", "dee": "pro", "ed": "free"}
SUBSCRIBERS = ("bo", "cy")
AUDIENCE = "/scenarios/cart-abandonment/audience"


def seed(state: Parcours) -> None:
    """Five contacts (three on the pro plan), two newsletter subscribers with their stored
    membership, and one recent order."""
    now = state.clock.now()
    segment = load_segments(state.settings.scenarios_dir / "segments")["newsletter-subscribers"]
    assert segment.condition is not None
    with state.engine.begin() as conn:
        ids = {}
        for name, plan in PLANS.items():
            row = {"external_id": name, "attributes": {"plan": plan}, "email": f"{name}@x.org"}
            ids[name] = conn.execute(Contact.__table__.insert().values(**row)).inserted_primary_key[
                0
            ]
        for name in SUBSCRIBERS:
            record_consent(
                conn, ids[name], "email", "newsletter", "opted_in", "operator", now,
                policy=state.policy(),
            )  # fmt: skip
        order = {
            "contact_id": ids["dee"],
            "name": "order_placed",
            "occurred_at": now - timedelta(days=3),
        }
        conn.execute(Event.__table__.insert().values(**order))
        rebuild(conn, "newsletter-subscribers", segment.condition, now)


@pytest.fixture
def app_on(engine_url: str, tmp_path: Path, workspace: Path) -> Iterator[Flask]:
    """The designer on a fresh database of each kind (SQLite and PostgreSQL)."""
    settings = load_settings(
        {}, database_url=engine_url, data_dir=tmp_path, scenarios_dir=workspace
    )
    app = create_app(settings, {"TESTING": True})
    for role in ("marketer", "viewer"):
        create_user(app.extensions["parcours"].engine, role, role, password=PASSWORD)
    yield app
    app.extensions["parcours"].engine.dispose()


def sign_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    token = csrf_of(client)
    response = client.post(
        "/login", data={"username": role, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    client.csrf = csrf_of(client)  # type: ignore[attr-defined]
    return client


def count(client: FlaskClient, audience: Any) -> Any:
    response = post(client, AUDIENCE, {"audience": audience})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# ------------------------------------------------------------------ the count


def test_the_count_is_the_contacts_the_audience_accepts_on_every_database(app_on: Flask) -> None:
    seed(app_on.extensions["parcours"])
    client = sign_in(app_on, "marketer")
    pro = count(client, {"attribute": "plan", "op": "eq", "value": "pro"})
    assert pro == {"count": 3, "sample": ["ana", "bo", "dee"], "reason": None}
    assert count(client, {"segment": "newsletter-subscribers"})["count"] == 2
    both = {
        "all": [
            {"segment": "newsletter-subscribers"},
            {"attribute": "plan", "op": "eq", "value": "pro"},
        ]
    }
    assert count(client, both) == {"count": 1, "sample": ["bo"], "reason": None}
    assert count(client, {"not": {"segment": "newsletter-subscribers"}})["count"] == 3
    ordered = count(client, {"event": "order_placed", "within": "30d"})
    assert ordered["count"] == 1 and ordered["sample"] == ["dee"]
    assert count(client, None)["count"] == 5  # no audience: everyone


def test_an_expression_is_answered_with_why_it_cannot_be_counted(login: Login) -> None:
    body = count(login("viewer"), {"expr": "contact.score > 10"})
    assert body["count"] is None and body["sample"] == []
    assert body["reason"].startswith("Not counted in advance:")
    assert "expression" in body["reason"].lower()


def test_a_wrong_audience_says_where_and_how_to_fix_it(login: Login) -> None:
    client = login("viewer")
    bad = post(client, AUDIENCE, {"audience": {"all": [{"attribute": "", "op": "eq", "value": 1}]}})
    assert bad.status_code == 422
    error = bad.get_json()["error"]
    assert error["code"] == "audience.invalid" and error["field"] == "audience.all.0.attribute"
    assert "attribute name" in error["message"]
    unknown = post(client, AUDIENCE, {"audience": {"segment": "premum"}})
    assert unknown.status_code == 422
    assert unknown.get_json()["error"] == {
        "code": "segment.unknown",
        "message": "No segment with id 'premum' in segments/.",
        "field": "audience",
    }


def test_the_count_needs_a_session_and_a_csrf_token_like_the_other_editor_posts(
    designer_app: Flask, login: Login
) -> None:
    anonymous = designer_app.test_client()
    response = anonymous.post(
        AUDIENCE, json={"audience": None}, headers={"Accept": "application/json"}
    )
    assert response.status_code in (400, 401)  # no session: no token either
    assert "error" in response.get_json()
    refused = post(login("viewer"), AUDIENCE, {"audience": None}, csrf=False)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "csrf"
    # a viewer's canvas is read only, but sees the count, as it sees the contacts
    assert count(login("viewer"), None)["count"] == 0


def test_bad_json_is_a_json_error(login: Login) -> None:
    client = login("viewer")
    headers = {"X-CSRF-Token": client.csrf, "Content-Type": "application/json"}  # type: ignore[attr-defined]
    broken = client.post(AUDIENCE, data="{not json", headers=headers)
    assert broken.status_code == 400 and broken.get_json()["error"]["code"]
    listed = post(client, AUDIENCE, [1, 2])
    assert listed.status_code == 400
    assert listed.get_json()["error"]["message"] == "Send a JSON object."
    missing = post(client, "/scenarios/nope/audience", {"audience": None})
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


# ------------------------------------------------------------------ the page data


def test_the_page_carries_segments_topics_and_zones_for_the_entry_block(login: Login) -> None:
    data = bootstrap(login("viewer").get("/scenarios/cart-abandonment/edit").get_data(as_text=True))
    assert "premium" in data["segments"] and "newsletter-subscribers" in data["segments"]
    assert data["topics"]["promotions"] == "Offres et promotions"  # the example policy's label
    assert "Europe/Paris" in data["timezones"] and data["timezone"] == "Europe/Paris"
    assert data["urls"]["audience"] == AUDIENCE
    assert {"entry_block", "goal_block", "contacts_match", "trigger_segment_entered"} <= set(
        data["strings"]
    )


# ------------------------------------------------------------------ a new journey's trigger


@pytest.mark.parametrize(
    ("form", "trigger"),
    [
        ({"start": "event", "event": "order_placed"}, [{"event": "order_placed"}]),
        (
            {"start": "segment", "segment": "first-purchase"},
            [{"segment_entered": "first-purchase"}],
        ),
        (
            {"start": "schedule", "at": "08:05", "timezone": "America/New_York"},
            [{"schedule": "5 8 * * *", "timezone": "America/New_York"}],
        ),
        ({"start": "manual"}, [{"manual": True}]),
    ],
)
def test_a_new_journey_starts_as_the_form_says(
    login: Login, workspace: Path, form: dict[str, str], trigger: list[dict[str, Any]]
) -> None:
    client = login("marketer")
    fields = {"id": "fresh", "name": "Fresh", "objective": "other", "priority": "50", **form}
    response = client.post("/scenarios/new", data={**fields, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert response.status_code == 302, response.get_data(as_text=True)
    text = (workspace / "fresh.yaml").read_text()
    data, _positions = parse_yaml(text, None)
    assert data["triggers"] == trigger
    result = lint_document(text, str(workspace / "fresh.yaml"), workspace / "templates")
    assert [p.code for p in result.problems if p.field and p.field.startswith("triggers")] == []


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({"start": "event", "event": ""}, "event", "Name the event"),
        ({"start": "segment", "segment": "premum"}, "segment", "segments"),
        ({"start": "schedule", "at": "25:00"}, "at", "HH:MM"),
        ({"start": "schedule", "timezone": "Mars/Olympus"}, "timezone", "time zone"),
        ({"start": "telepathy"}, "start", "how the journey starts"),
    ],
)
def test_a_wrong_start_is_refused_at_its_field(
    login: Login, workspace: Path, form: dict[str, str], field: str, message: str
) -> None:
    client = login("marketer")
    fields = {"id": "fresh", "name": "Fresh", "objective": "other", "priority": "50", **form}
    response = client.post("/scenarios/new", data={**fields, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert not (workspace / "fresh.yaml").exists()


def test_the_form_offers_the_segments_and_zones(login: Login) -> None:
    html = login("marketer").get("/scenarios/new").get_data(as_text=True)
    assert '<option value="premium"' in html and '<option value="Europe/Paris" selected' in html
    assert 'value="manual" checked' in html  # manual stays the default


# ------------------------------------------------------------------ minimal diffs


def changed_lines(before: str, after: str) -> list[str]:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def render(client: FlaskClient, text: str, doc: dict[str, Any]) -> str:
    response = post(client, "/scenarios/cart-abandonment/render", {"yaml": text, "doc": doc})
    assert response.status_code == 200
    body = response.get_json()
    assert body["valid"], body["problems"]
    return str(body["yaml"])


def test_editing_who_enters_changes_only_those_lines(login: Login, workspace: Path) -> None:
    client = login("marketer")
    text = (workspace / "cart-abandonment.yaml").read_text()
    doc, _positions = parse_yaml(text, None)

    trigger = {**doc, "triggers": [{**doc["triggers"][0], "event": "cart_left"}]}
    assert changed_lines(text, render(client, text, trigger)) == [
        "-  - event: cart_abandoned",
        "+  - event: cart_left",
    ]
    filters = [{"property": "total", "op": "gte", "value": 50}]
    threshold = {**doc, "triggers": [{**doc["triggers"][0], "where": filters}]}
    assert changed_lines(text, render(client, text, threshold)) == [
        "-        value: 20",
        "+        value: 50",
    ]
    cooldown = {**doc, "entry": {**doc["entry"], "cooldown": "30d"}}
    assert changed_lines(text, render(client, text, cooldown)) == [
        "-  cooldown: 7d",
        "+  cooldown: 30d",
    ]
    audience = {**doc, "audience": {"segment": "newsletter-subscribers"}}
    lines = changed_lines(text, render(client, text, audience))
    assert lines == ["+audience:", "+  segment: newsletter-subscribers"]
    exits = {**doc, "exit_on": [*doc["exit_on"], {"segment_exited": "premium"}]}
    assert changed_lines(text, render(client, text, exits)) == ["+  - segment_exited: premium"]
