"""The contact search, the contact page and the pressure dashboard, on data the engine wrote."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from designer import Parcours, create_app
from designer.auth import create_user
from engine.audience.ingest import (
    clean_contact,
    clean_event,
    contact_ids,
    record_events,
    upsert_contacts,
)
from engine.config import load_settings
from engine.policy.consent import record_consent, suppress
from engine.policy.loading import full_gate_factory
from engine.policy.pressure import record_sends
from engine.runtime.clock import VirtualClock
from engine.store.models import JournalEntry, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle
from tests.web.conftest import PASSWORD, csrf_of

# A Monday, 11:00 in Paris (the workspace zone): no quiet hours.
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
FLASH_SALE = """\
format_version: 1
id: flash-sale
name: Flash sale
objective: other
topic: promotions
triggers:
  - event: browsed
steps:
  offer:
    type: send
    channel: sms
    content:
      text: "Vente flash aujourd'hui. STOP au 36111"
"""
WORDING = "I agree to receive text messages about offers (version 3)."


@pytest.fixture
def clock(state: Parcours) -> VirtualClock:
    state.clock = VirtualClock(T0)
    return state.clock  # type: ignore[return-value]


def add_contacts(engine: Engine, *rows: dict[str, Any]) -> dict[str, int]:
    with engine.begin() as conn:
        upsert_contacts(conn, [clean_contact(r) for r in rows], T0 - timedelta(days=3))
        return contact_ids(conn, [r["external_id"] for r in rows], T0)


def data_block(page: str, element_id: str) -> Any:
    match = re.search(
        rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S
    )
    assert match, f"no JSON block #{element_id}"
    return json.loads(match.group(1))


# ---------------------------------------------------------------- access and search


@pytest.mark.parametrize("path", ["/contacts", "/contacts/anyone", "/pressure"])
def test_signed_out_is_sent_to_sign_in(designer_app: Flask, path: str) -> None:
    response = designer_app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_viewer_reads_every_page(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    add_contacts(state.engine, {"external_id": "ana", "email": "ana@example.com"})
    viewer = login("viewer")
    for path, text in [("/contacts", "ana@example.com"), ("/contacts/ana", "Pressure barometer"),
                       ("/pressure", "Marketing sends per day")]:  # fmt: skip
        response = viewer.get(path)
        assert response.status_code == 200, path
        assert text in response.get_data(as_text=True), path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_search_by_email_external_id_and_phone(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    add_contacts(
        state.engine,
        {"external_id": "CRM-1001", "email": "Marie.Curie@example.com", "phone": "+33612345678"},
        {"external_id": "CRM-2002", "email": "pierre@example.com"},
        {"external_id": "web_3003", "email": "irene@example.org"},
    )
    viewer = login("viewer")

    def found(q: str) -> list[str]:
        page = viewer.get("/contacts", query_string={"q": q}).get_data(as_text=True)
        return re.findall(r'href="/contacts/([^"]+)"', page)

    assert found("marie.curie@EXAMPLE.com") == ["CRM-1001"]  # email, any case
    assert found("pierre@") == ["CRM-2002"]  # email prefix
    assert found("CRM-2002") == ["CRM-2002"]  # exact external id
    assert sorted(found("CRM-")) == ["CRM-1001", "CRM-2002"]  # external id prefix
    assert found("06 12 34 56 78") == ["CRM-1001"]  # the national number
    assert found("06.12.34") == ["CRM-1001"]  # its beginning
    assert found("+3361") == ["CRM-1001"]
    assert found("web%") == []  # a wildcard is a character, not a pattern
    assert found("nobody") == []
    assert sorted(found("")) == ["CRM-1001", "CRM-2002", "web_3003"]  # no query: everyone


def test_contacts_are_paginated_by_fifty(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    add_contacts(state.engine, *({"external_id": f"p{i:03d}"} for i in range(60)))
    viewer = login("viewer")
    first = viewer.get("/contacts").get_data(as_text=True)
    second = viewer.get("/contacts?page=2").get_data(as_text=True)
    ids = (
        re.findall(r'href="/contacts/(p\d+)"', first),
        re.findall(r'href="/contacts/(p\d+)"', second),
    )
    assert (len(ids[0]), len(ids[1])) == (50, 10)
    assert not set(ids[0]) & set(ids[1])
    assert "page=2" in first


# ---------------------------------------------------------------- the contact page


def test_contact_page_shows_evidence_barometer_and_decision(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    engine, policy = state.engine, state.policy()
    ids = add_contacts(
        engine,
        {"external_id": "ana", "email": "ana@example.com", "phone": "+33611111111",
         "first_name": "Ana", "tags": "vip"},
        {"external_id": "bob", "email": "bob@example.com", "phone": "+33622222222"},
    )  # fmt: skip
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": FLASH_SALE, "templates": {}}, now=T0)
    with engine.begin() as conn:
        # Ana's evidence: an SMS opt-in to the newsletter only (promotions stay unknown).
        record_consent(
            conn, ids["ana"], "sms", "newsletter", "opted_in", "form", T0 - timedelta(days=2),
            wording=WORDING, wording_version="v3", ip="203.0.113.7", policy=policy,
        )  # fmt: skip
        suppress(conn, "email", "ana@example.com", "hard_bounce", "import", T0 - timedelta(days=1))
        # Two SMS an hour ago weigh 3 each: 6 is over the policy's 4.5.
        sent = T0 - timedelta(hours=1)
        record_sends(conn, [(ids["ana"], "sms", sent), (ids["ana"], "sms", sent)], T0, policy)
        event = {"contact": "ana", "name": "browsed", "occurred_at": T0.isoformat()}
        record_events(conn, [clean_event(event, T0)], T0)
    worker = Worker(engine, state.settings, state.clock, full_gate_factory(state.settings, policy))
    worker.run_once(T0)

    page = login("viewer").get("/contacts/ana").get_data(as_text=True)
    assert "203.0.113.7" in page and WORDING in page and "v3" in page  # consent evidence
    assert 'data-testid="barometer-state">Over-pressure<' in page
    assert "hard_bounce" in page  # the suppression
    # The gate held the flash sale back: no consent to SMS promotions (checked before pressure).
    assert "Send held back" in page and "consent:promotions:unknown" in page
    assert "Flash sale" in page  # the journey, by name
    french = login("viewer").get("/contacts/ana?lang=fr").get_data(as_text=True)
    assert "Surpression" in french and "Baromètre de pression" in french
    other = login("viewer").get("/contacts/bob").get_data(as_text=True)
    assert "203.0.113.7" not in other and 'data-testid="barometer-state">Equilibrium<' in other


def test_unknown_contact_is_a_404_page(
    login: Callable[[str], FlaskClient], clock: VirtualClock
) -> None:
    response = login("viewer").get("/contacts/nobody-here")
    assert response.status_code == 404
    body = response.get_data(as_text=True)
    assert "Contact not found" in body and "nobody-here" in body and "Traceback" not in body


def test_timeline_pages_back_without_gaps(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    add_contacts(state.engine, {"external_id": "ana"})
    # 250 events, some sharing an instant: paging must neither skip nor repeat one.
    events = [
        {"contact": "ana", "name": f"visit_{i:03d}",
         "occurred_at": (T0 - timedelta(minutes=i // 3)).isoformat()}
        for i in range(250)
    ]  # fmt: skip
    with state.engine.begin() as conn:
        record_events(conn, [clean_event(e, T0) for e in events], T0)
    viewer = login("viewer")
    seen: list[str] = []
    url: str | None = "/contacts/ana"
    while url:
        page = viewer.get(url).get_data(as_text=True)
        seen += re.findall(r"<code>(visit_\d+)</code>", page)
        more = re.search(r'href="(/contacts/ana\?before=[^"]+)"', page)
        url = more.group(1).replace("&amp;", "&") if more else None
    assert len(seen) == 250 and len(set(seen)) == 250


VIP_ONLY = (
    FLASH_SALE.replace("id: flash-sale", "id: vip-preview")
    .replace("name: Flash sale", "name: VIP preview")
    .replace("steps:", "audience:\n  tag: vip\nsteps:")
)


def test_refused_entry_shows_on_the_timeline(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    add_contacts(state.engine, {"external_id": "bob", "email": "bob@example.com"})
    with Session(state.engine) as session, session.begin():
        publish_bundle(session, {"yaml": VIP_ONLY, "templates": {}}, now=T0)
    with state.engine.begin() as conn:
        event = {"contact": "bob", "name": "browsed", "occurred_at": T0.isoformat()}
        record_events(conn, [clean_event(event, T0)], T0)
    worker = Worker(state.engine, state.settings, state.clock)
    worker.run_once(T0)
    with state.engine.connect() as conn:
        refused = conn.execute(select(JournalEntry.kind, JournalEntry.enrollment_id)).all()
    assert [tuple(r) for r in refused] == [("skipped_entry", None)]  # no enrollment to go by

    viewer = login("viewer")
    page = viewer.get("/contacts/bob").get_data(as_text=True)
    assert "Entry refused" in page and "Not in the audience" in page
    assert "VIP preview" in page  # the journey, by name, though the contact never entered it
    french = viewer.get("/contacts/bob?lang=fr").get_data(as_text=True)
    assert "Entrée refusée" in french and "Hors de l&#39;audience" in french


# ---------------------------------------------------------------- the dashboard


def fill_dashboard(state: Parcours) -> None:
    """Known data: four contacts with known barometers, sends and held-back decisions."""
    engine, policy = state.engine, state.policy()
    ids = add_contacts(
        engine,
        {"external_id": "over", "phone": "+33600000001"},
        {"external_id": "calm", "email": "calm@example.com"},
        {"external_id": "faded", "phone": "+33600000002"},
        {"external_id": "new", "email": "new@example.com"},
        {"external_id": "gone", "email": "gone@example.com", "opted_out": "true"},
    )
    with engine.begin() as conn:
        hour_ago = T0 - timedelta(hours=1)
        record_sends(conn, [(ids["over"], "sms", hour_ago)] * 2, T0, policy)  # 6: over
        record_sends(conn, [(ids["calm"], "email", hour_ago)] * 2, T0, policy)  # 2: equilibrium
        # Over a month ago: stored as over, decayed since (6 / 2**(30/7) ≈ 0.3): under now.
        month_ago = T0 - timedelta(days=30)
        record_sends(conn, [(ids["faded"], "sms", month_ago)] * 2, month_ago, policy)
        sends = [
            ("email", "marketing", T0 - timedelta(hours=2)),
            ("email", "marketing", T0 - timedelta(hours=1)),
            ("email", "marketing", T0),
            # 00:30 in Paris: today there, although still yesterday in UTC.
            ("email", "marketing", datetime(2025, 6, 1, 22, 30, tzinfo=UTC)),
            ("sms", "marketing", T0 - timedelta(days=1)),
            ("sms", "marketing", T0 - timedelta(days=1, hours=1)),
            ("email", "transactional", T0),  # never counts against a cap
            ("email", "marketing", T0 - timedelta(days=40)),  # out of the period
        ]
        conn.execute(insert(Send), [
            {"send_key": f"k{i}", "contact_id": ids["calm"], "scenario_id": "s", "step_id": "x",
             "channel": channel, "kind": kind, "created_at": at}
            for i, (channel, kind, at) in enumerate(sends)
        ])  # fmt: skip
        decisions = [
            ("cap:email-week", T0 - timedelta(hours=3)),
            ("cap:email-week", T0 - timedelta(hours=2)),
            ("cap:email-week", T0 - timedelta(minutes=5)),
            ("quiet:sms-night", T0 - timedelta(days=1)),
            ("consent:promotions:unknown", T0 - timedelta(days=40)),  # out of the period
        ]
        conn.execute(insert(JournalEntry), [
            {"at": at, "kind": "decision", "contact_id": ids["calm"], "reason": reason}
            for reason, at in decisions
        ] + [{"at": T0, "kind": "send", "contact_id": ids["calm"], "reason": "allowed"}])  # fmt: skip


def check_dashboard(client: FlaskClient) -> None:
    response = client.get("/pressure")
    assert response.status_code == 200
    data = data_block(response.get_data(as_text=True), "pressure-data")
    counts = data["barometer"]["counts"]
    # "new" and "gone" have no reading: equilibrium, as conditions and caps read them.
    assert counts["*"] == {"under": 1, "equilibrium": 3, "over": 1}
    assert counts["sms"] == {"under": 1, "equilibrium": 0, "over": 1}
    assert counts["email"] == {"under": 0, "equilibrium": 1, "over": 0}
    sends = data["sends"]
    assert len(sends["days"]) == 30 and sends["days"][-1] == "2025-06-02"
    assert sends["series"]["email"][-1] == 4 and sum(sends["series"]["email"]) == 4
    assert sends["series"]["sms"][-2:] == [2, 0]
    assert sends["totals"][-1] == 4
    assert sends["reachable"] == 4  # "gone" opted out
    week = next(c for c in sends["caps"] if c["id"] == "email-week")
    assert week["per_contact"] == pytest.approx(3 / 7) and week["ceiling"] == pytest.approx(12 / 7)
    assert week["peak"] == pytest.approx(4 / (12 / 7), abs=1e-3)
    day = next(c for c in sends["caps"] if c["id"] == "marketing-day")
    assert day["per_contact"] == 4 and day["ceiling"] == 16
    assert [(r["reason"], r["count"]) for r in data["reasons"]] == [
        ("cap:email-week", 3),
        ("quiet:sms-night", 1),
    ]
    assert data["stats"] == {
        "over_now": 1, "sends_today": 4, "blocked_today": 3, "share_blocked": round(3 / 7, 4)
    }  # fmt: skip


def test_dashboard_counts_what_was_inserted(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    fill_dashboard(state)
    check_dashboard(login("viewer"))


@pytest.fixture
def app_on(engine_url: str, tmp_path: Path, workspace: Path) -> Iterator[Flask]:
    """The designer on a fresh database of each kind (SQLite and PostgreSQL)."""
    settings = load_settings(
        {}, database_url=engine_url, data_dir=tmp_path, scenarios_dir=workspace
    )
    app = create_app(settings, {"TESTING": True})
    app.extensions["parcours"].clock = VirtualClock(T0)
    create_user(app.extensions["parcours"].engine, "viewer", "viewer", password=PASSWORD)
    yield app
    app.extensions["parcours"].engine.dispose()


def test_dashboard_aggregates_on_every_database(app_on: Flask) -> None:
    fill_dashboard(app_on.extensions["parcours"])
    client = app_on.test_client()
    token = csrf_of(client)
    client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": token})
    check_dashboard(client)
    assert client.get("/contacts/over").status_code == 200  # the contact page too
    assert "calm" in client.get("/contacts?q=calm@").get_data(as_text=True)


def test_contact_page_shows_computed_attributes_and_the_purchases_behind_them(
    login: Callable[[str], FlaskClient], state: Parcours, clock: VirtualClock
) -> None:
    add_contacts(state.engine, {"external_id": "ana", "email": "ana@example.com"})
    orders = [
        {"contact": "ana", "name": "order_placed", "properties": {"total": total},
         "occurred_at": (T0 - timedelta(days=days)).isoformat()}
        for total, days in ((120, 400), (35.5, 2))
    ]  # fmt: skip
    with state.engine.begin() as conn:
        record_events(conn, [clean_event(o, T0) for o in orders], T0)
    page = login("viewer").get("/contacts/ana").get_data(as_text=True)
    assert 'data-testid="lifecycle">Repeat customer<' in page
    assert "155.50" in page and "35.50" in page and "outside the window" in page
    french = login("viewer").get("/contacts/ana?lang=fr").get_data(as_text=True)
    assert "Client récurrent" in french and "Attributs calculés" in french
