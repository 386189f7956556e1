"""The on-site "next best offer": a published journey queues banners, the website shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import Parcours
from designer.onsite import MESSAGES
from engine.delivery.onsite import safe_link
from engine.runtime.clock import VirtualClock
from engine.spec.loader import scenario_bundle
from engine.store.models import Event, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
API = {"X-Api-Key": "k"}
SITE = "https://shop.example"
SITE_KEY = "site-key-123"
SCENARIO = """\
format_version: 1
id: onsite-offer
name: On-site offer
objective: basket
triggers:
  - event: product_viewed
entry:
  reentry: always
steps:
  banner:
    type: send
    channel: onsite
    content:
      title: "Hello {{ contact.first_name }}"
      body: "Ten percent off {{ event.product }}"
      url: "https://shop.example/p/{{ event.product }}"
"""
CHANNELS = f"""\
onsite:
  provider: outbox
  site_key: ${{ONSITE_TEST_KEY}}
  origins: ["{SITE}"]
"""


@pytest.fixture
def app(designer_app: Flask, state: Parcours, workspace: Path, monkeypatch: Any) -> Flask:
    monkeypatch.setenv("ONSITE_TEST_KEY", SITE_KEY)
    (workspace / "channels.yaml").write_text(CHANNELS, encoding="utf-8")
    path = workspace / "onsite-offer.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    with Session(state.engine) as session, session.begin():
        publish_bundle(session, scenario_bundle(path), str(path), now=T0)
    state.clock = VirtualClock(T0)
    return designer_app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def view(client: FlaskClient, state: Parcours, contact: str, product: str, at: datetime) -> None:
    """The website reports a product view; the worker runs the journey, which queues a banner."""
    assert isinstance(state.clock, VirtualClock)
    state.clock.set(at)
    r = client.put(f"/api/contacts/{contact}", json={"first_name": "Ada"}, headers=API)
    assert r.status_code == 200, r.get_data(as_text=True)
    event = {"contact": contact, "name": "product_viewed", "properties": {"product": product}}
    r = client.post("/api/events", json=event, headers=API)
    assert r.status_code == 202 and r.get_json()["recorded"] == 1
    Worker(state.engine, state.settings).run_once(at)


def offer(client: FlaskClient, contact: str = "c1", **headers: str) -> Any:
    return client.get(
        f"/onsite/offer?contact={contact}", headers={"X-Site-Key": SITE_KEY, **headers}
    )


def events(state: Parcours, name: str) -> list[Event]:
    with Session(state.engine) as session:
        return list(session.scalars(select(Event).where(Event.name == name)))


def test_the_newest_offer_is_shown_once_then_the_next(client: FlaskClient, state: Parcours) -> None:
    view(client, state, "c1", "boots", T0)
    view(client, state, "c1", "scarf", T0 + timedelta(hours=1))
    first = offer(client)
    assert first.status_code == 200
    shown = first.get_json()["offer"]
    assert shown["title"] == "Hello Ada"
    assert shown["body"] == "Ten percent off scarf"  # the newest first
    assert shown["url"] == "https://shop.example/p/scarf"
    assert shown["image"] is None
    second = offer(client).get_json()["offer"]
    assert second["body"] == "Ten percent off boots"
    assert offer(client).get_json() == {"offer": None}
    impressions = events(state, "onsite_shown")
    assert sorted(e.event_key or "" for e in impressions) == sorted(
        [f"shown:{shown['id']}", f"shown:{second['id']}"]
    )
    with Session(state.engine) as session:
        statuses = set(session.scalars(select(Send.status).where(Send.channel == "onsite")))
    assert statuses == {"delivered"}


def test_an_unknown_contact_gets_no_offer_and_is_not_created(
    client: FlaskClient, state: Parcours
) -> None:
    view(client, state, "c1", "boots", T0)
    assert offer(client, "someone-else").get_json() == {"offer": None}
    r = client.get("/api/contacts/someone-else", headers=API)
    assert r.status_code == 404


def test_an_old_offer_is_not_shown(client: FlaskClient, state: Parcours) -> None:
    view(client, state, "c1", "boots", T0)
    assert isinstance(state.clock, VirtualClock)
    state.clock.set(T0 + timedelta(days=7, minutes=1))
    assert offer(client).get_json() == {"offer": None}
    assert events(state, "onsite_shown") == []


def test_an_opted_out_contact_is_shown_no_marketing(client: FlaskClient, state: Parcours) -> None:
    view(client, state, "c1", "boots", T0)
    r = client.put("/api/contacts/c1", json={"opted_out": True}, headers=API)
    assert r.status_code == 200
    assert offer(client).get_json() == {"offer": None}


def test_a_wrong_or_missing_site_key_is_refused(client: FlaskClient, state: Parcours) -> None:
    view(client, state, "c1", "boots", T0)
    wrong = offer(client, **{"X-Site-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.get_json()["code"] == "unauthorized"
    assert client.get("/onsite/offer?contact=c1").status_code == 401
    assert events(state, "onsite_shown") == []
    by_param = client.get(f"/onsite/offer?contact=c1&key={SITE_KEY}")
    assert by_param.get_json()["offer"]["body"] == "Ten percent off boots"


def test_cors_answers_only_the_listed_origins(client: FlaskClient, state: Parcours) -> None:
    allowed = offer(client, Origin=SITE)
    assert allowed.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in allowed.headers["Vary"]
    other = offer(client, Origin="https://evil.example")
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        "/onsite/click",
        headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == SITE
    assert "X-Site-Key" in preflight.headers["Access-Control-Allow-Headers"]


def test_a_click_is_recorded_once_and_returns_the_link(
    client: FlaskClient, state: Parcours
) -> None:
    view(client, state, "c1", "boots", T0)
    shown = offer(client).get_json()["offer"]
    body = {"offer": shown["id"], "contact": "c1", "key": SITE_KEY}
    r = client.post("/onsite/click", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.get_json() == {"url": "https://shop.example/p/boots"}
    assert client.post("/onsite/click", json=body).status_code == 200
    clicks = events(state, "onsite_clicked")
    assert [e.event_key for e in clicks] == [f"click:{shown['id']}"]
    assert clicks[0].properties["scenario_id"] == "onsite-offer"


def test_a_click_on_another_contacts_offer_is_not_found(
    client: FlaskClient, state: Parcours
) -> None:
    view(client, state, "c1", "boots", T0)
    shown = offer(client).get_json()["offer"]
    body = {"offer": shown["id"], "contact": "c2", "key": SITE_KEY}
    r = client.post("/onsite/click", json=body)
    assert r.status_code == 404
    assert events(state, "onsite_clicked") == []
    r = client.post("/onsite/click", json={**body, "key": "nope", "contact": "c1"})
    assert r.status_code == 401


def test_without_a_site_key_the_endpoint_is_closed(
    client: FlaskClient, workspace: Path, state: Parcours
) -> None:
    (workspace / "channels.yaml").write_text("onsite:\n  provider: outbox\n", encoding="utf-8")
    r = offer(client)
    assert r.status_code == 503
    assert r.get_json()["code"] == "onsite_not_configured"


def test_a_click_may_come_as_a_form(client: FlaskClient, state: Parcours) -> None:
    view(client, state, "c1", "boots", T0)
    shown = offer(client).get_json()["offer"]
    form = {"offer": shown["id"], "contact": "c1", "key": SITE_KEY}
    r = client.post("/onsite/click", data=form)
    assert r.get_json() == {"url": "https://shop.example/p/boots"}
    assert len(events(state, "onsite_clicked")) == 1


def test_only_web_links_are_handed_to_the_page() -> None:
    assert safe_link("https://shop.example/p/1") == "https://shop.example/p/1"
    assert safe_link("/p/1") == "/p/1"
    assert safe_link("javascript:alert(1)") is None
    assert safe_link("//evil.example/x") is None
    assert safe_link("data:text/html,x") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"offer": "s1"}, "contact"),
        ({"offer": "s1", "contact": "   "}, "contact"),
        ({"offer": "s1", "contact": "c" * 256}, "contact"),
        ({"offer": "s1", "contact": 7}, "contact"),
        ({"contact": "c1"}, "offer"),
        ({"contact": "c1", "offer": ""}, "offer"),
        ({"contact": "c1", "offer": "o" * 201}, "offer"),
    ],
)
def test_a_wrong_click_is_refused_at_its_field(
    client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/onsite/click", json={**body, "key": SITE_KEY})
    assert r.status_code == 422, r.get_data(as_text=True)
    assert r.get_json()["errors"] == [{"field": field, "message": MESSAGES[field]}]


@pytest.mark.parametrize("contact", ["", "%20%20", "c" * 256])
def test_an_offer_for_no_contact_is_refused(client: FlaskClient, contact: str) -> None:
    r = offer(client, contact)
    assert r.status_code == 422 and r.get_json()["errors"][0]["field"] == "contact"
