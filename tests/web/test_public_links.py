"""The links of a marketing email, followed as a contact or a mail provider would: one-click
unsubscribe, the unsubscribe and preference pages, the open pixel and tracked clicks."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from designer import PUBLIC_CSP, Parcours
from engine.delivery.links import sign
from engine.delivery.tracking import (
    CLICK_SALT,
    click_url,
    open_pixel_url,
    preferences_token,
    render_tracking,
    unsubscribe_token,
)
from engine.policy.loading import full_gate_factory
from engine.runtime.clock import VirtualClock
from engine.store.models import Contact, Event, JournalEntry, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle

# A Monday, 11:00 in Paris: no quiet hours.
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
KEY = {"X-Api-Key": "k"}
BASE = "https://mail.example"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
NEWS = """\
format_version: 1
id: june-news
name: June news
objective: other
topic: newsletter
triggers:
  - event: browsed
steps:
  news:
    type: send
    channel: email
    content:
      subject: "June news"
      text: "Our June selection."
"""


@pytest.fixture
def app(designer_app: Flask) -> Flask:
    return designer_app


@pytest.fixture
def state(app: Flask) -> Parcours:
    found: Parcours = app.extensions["parcours"]
    found.clock = VirtualClock(T0)
    return found


@pytest.fixture
def client(app: Flask, state: Parcours) -> FlaskClient:
    return app.test_client()


def subscribed(client: FlaskClient, state: Parcours, external_id: str) -> int:
    """A contact opted in to all email marketing by an operator; returns its id."""
    email = f"{external_id}@example.com"
    put = client.put(f"/api/contacts/{external_id}", json={"email": email}, headers=KEY)
    assert put.status_code in (200, 201), put.get_json()
    consent = {"channel": "email", "topic": "*", "state": "opted_in", "source": "operator"}
    response = client.post(f"/api/contacts/{external_id}/consents", json=consent, headers=KEY)
    assert response.status_code == 201, response.get_json()
    with state.engine.connect() as conn:
        return int(
            conn.execute(select(Contact.id).where(Contact.external_id == external_id)).scalar_one()
        )


def consents(client: FlaskClient, external_id: str) -> dict[str, Any]:
    response = client.get(f"/api/contacts/{external_id}/consents", headers=KEY)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def current(client: FlaskClient, external_id: str) -> dict[str, str]:
    return {c["topic"]: c["state"] for c in consents(client, external_id)["consents"]}


def path(url: str) -> str:
    return url.removeprefix(BASE)


def add_send(state: Parcours, contact_id: int, send_key: str) -> None:
    with state.engine.begin() as conn:
        conn.execute(
            insert(Send).values(
                send_key=send_key, contact_id=contact_id, scenario_id="june-news",
                step_id="news", channel="email", topic="newsletter", kind="marketing",
                status="sent", payload={}, attempts=1, created_at=T0, sent_at=T0,
            )
        )  # fmt: skip


def events(state: Parcours, name: str) -> list[Any]:
    with state.engine.connect() as conn:
        return list(conn.execute(select(Event).where(Event.name == name)).all())


def journal_reasons(state: Parcours, contact_id: int) -> list[str | None]:
    with state.engine.connect() as conn:
        return list(
            conn.execute(
                select(JournalEntry.reason)
                .where(JournalEntry.contact_id == contact_id, JournalEntry.kind == "decision")
                .order_by(JournalEntry.id)
            ).scalars()
        )


def sent_to(state: Parcours, contact_id: int) -> int:
    with state.engine.connect() as conn:
        rows = conn.execute(
            select(Send.id).where(Send.contact_id == contact_id, Send.scenario_id == "june-news")
        )
        return len(rows.all())


# --- one-click unsubscribe ---------------------------------------------------------------------


def test_one_click_unsubscribe_blocks_the_next_marketing_send(
    client: FlaskClient, state: Parcours
) -> None:
    ana, bob = subscribed(client, state, "ana"), subscribed(client, state, "bob")
    # The link as the message carries it (List-Unsubscribe header and footer).
    _, meta = render_tracking(
        {"text": "x"}, ana, "email", "newsletter", "s-ana-1", BASE, state.secret, T0
    )
    # A mail provider's RFC 8058 POST: no cookie, no CSRF token, the one-click body.
    provider = client.application.test_client()  # a client of its own: no cookie at all
    response = provider.post(path(meta["unsubscribe_url"]), data=ONE_CLICK)
    assert response.status_code == 200 and "Unsubscribed" in response.get_data(as_text=True)
    history = consents(client, "ana")["history"]
    last = history[-1]
    assert (last["channel"], last["topic"], last["state"], last["source"]) == (
        "email", "newsletter", "opted_out", "unsubscribe_link",
    )  # fmt: skip
    assert last["evidence"]["send_key"] == "s-ana-1" and last["evidence"]["method"] == "one_click"
    assert last["wording_version"] == "rfc8058/1" and last["ip"] == "127.0.0.1"
    assert [e.properties["topic"] for e in events(state, "unsubscribed")] == ["newsletter"]

    # The next marketing send on that topic: held back for Ana with the consent reason.
    with Session(state.engine) as session, session.begin():
        publish_bundle(session, {"yaml": NEWS, "templates": {}}, now=T0)
    for who in ("ana", "bob"):
        posted = client.post("/api/events", json={"contact": who, "name": "browsed"}, headers=KEY)
        assert posted.status_code == 202
    worker = Worker(state.engine, state.settings, state.clock, full_gate_factory(state.settings))
    worker.run_once(T0)
    assert journal_reasons(state, ana) == ["consent:newsletter:opted_out"]
    assert sent_to(state, ana) == 0
    assert sent_to(state, bob) == 1 and journal_reasons(state, bob) == []  # same journey, sent


def test_one_click_is_idempotent(client: FlaskClient, state: Parcours) -> None:
    ana = subscribed(client, state, "ana")
    token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    first = client.post(f"/u/{token}", data=ONE_CLICK)
    second = client.post(f"/u/{token}", data=ONE_CLICK)
    assert (first.status_code, second.status_code) == (200, 200)
    assert "Already unsubscribed" in second.get_data(as_text=True)
    records = [h for h in consents(client, "ana")["history"] if h["state"] == "opted_out"]
    assert len(records) == 1 and len(events(state, "unsubscribed")) == 1


def test_the_link_still_works_after_31_days_and_is_refused_after_61(
    client: FlaskClient, state: Parcours
) -> None:
    ana, bob = subscribed(client, state, "ana"), subscribed(client, state, "bob")
    ana_token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    bob_token = unsubscribe_token(state.secret, bob, "email", "newsletter", "s2", T0)
    state.clock.set(T0 + timedelta(days=31))  # type: ignore[attr-defined]
    assert client.post(f"/u/{ana_token}", data=ONE_CLICK).status_code == 200
    assert current(client, "ana")["newsletter"] == "opted_out"
    state.clock.set(T0 + timedelta(days=61))  # type: ignore[attr-defined]
    refused = client.post(f"/u/{bob_token}", data=ONE_CLICK)
    assert refused.status_code == 400 and "expired" in refused.get_data(as_text=True)
    assert "newsletter" not in current(client, "bob")  # nothing recorded
    page = client.get(f"/u/{bob_token}")
    assert page.status_code == 400 and "Lien expiré" in page.get_data(as_text=True)


def test_a_tampered_unsubscribe_link_changes_nothing(client: FlaskClient, state: Parcours) -> None:
    ana = subscribed(client, state, "ana")
    token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    other = unsubscribe_token(state.secret, ana + 1, "email", "newsletter", "s1", T0)
    forged = other.split(".")[0] + "." + ".".join(token.split(".")[1:])  # another contact's id
    for bad in (forged, token[:-3], "x" * 5000):
        assert client.post(f"/u/{bad}", data=ONE_CLICK).status_code == 400
        assert client.post(f"/u/{bad}", data={"scope": "topic"}).status_code == 400
    assert current(client, "ana") == {"*": "opted_in"}


# --- the unsubscribe page ----------------------------------------------------------------------


def test_get_asks_and_changes_nothing_then_the_button_unsubscribes(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    token = unsubscribe_token(state.secret, ana, "email", "promotions", "s1", T0)
    page = client.get(f"/u/{token}")
    body = page.get_data(as_text=True)
    assert page.status_code == 200 and "Unsubscribe from “Offres et promotions”?" in body
    assert '<form method="post">' in body and "<script" not in body
    assert page.headers["Content-Security-Policy"] == PUBLIC_CSP
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert current(client, "ana") == {"*": "opted_in"}  # a prefetch unsubscribes nobody
    done = client.post(f"/u/{token}", data={"scope": "topic"})
    text = done.get_data(as_text=True)
    assert done.status_code == 200 and "You are unsubscribed" in text and "désinscrit" in text
    assert current(client, "ana") == {"*": "opted_in", "promotions": "opted_out"}
    last = consents(client, "ana")["history"][-1]
    assert last["wording_version"] == "unsubscribe-page/1" and "promotions" in last["wording"]
    assert last["evidence"]["method"] == "page"
    again = client.post(f"/u/{token}", data={"scope": "topic"})
    assert "Already unsubscribed" in again.get_data(as_text=True)
    assert len(consents(client, "ana")["history"]) == 2


def test_the_page_can_unsubscribe_from_all_email_marketing(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    forged = client.post(f"/u/{token}", data={"scope": "everyone"})
    assert forged.status_code == 400 and current(client, "ana") == {"*": "opted_in"}
    response = client.post(f"/u/{token}", data={"scope": "all"})
    assert response.status_code == 200 and "all our emails" in response.get_data(as_text=True)
    assert current(client, "ana") == {"*": "opted_out"}


def test_the_page_speaks_the_visitors_language_first(client: FlaskClient, state: Parcours) -> None:
    ana = subscribed(client, state, "ana")
    token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    french = client.get(f"/u/{token}", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    body = french.get_data(as_text=True)
    assert '<html lang="fr">' in body
    assert body.index("Vous désinscrire : « Newsletter » ?") < body.index("Unsubscribe from")
    assert "Me désinscrire · Unsubscribe" in body
    english = client.get(f"/u/{token}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<html lang="en">' in english
    assert english.index("Unsubscribe from") < english.index("Vous désinscrire")


# --- preferences -------------------------------------------------------------------------------


def boxes(page: str) -> dict[str, bool]:
    found = re.findall(r'<input type="checkbox" name="topic" value="([^"]+)"( checked)?>', page)
    return {topic: bool(checked) for topic, checked in found}


def test_preferences_show_the_current_state_and_save_each_change(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    url = f"/p/{preferences_token(state.secret, ana, 'email', 's1', T0)}"
    page = client.get(url).get_data(as_text=True)
    assert boxes(page) == {"newsletter": True, "promotions": True, "partners": True}
    saved = client.post(url, data={"topic": ["newsletter"]})
    assert saved.status_code == 200 and "Preferences saved" in saved.get_data(as_text=True)
    assert boxes(saved.get_data(as_text=True)) == {
        "newsletter": True, "promotions": False, "partners": False,
    }  # fmt: skip
    assert current(client, "ana") == {"*": "opted_in", "partners": "opted_out",
                                      "promotions": "opted_out"}  # fmt: skip
    history = consents(client, "ana")["history"]
    assert [h["source"] for h in history[1:]] == ["preference_center"] * 2
    # Saving the same choices again records nothing.
    client.post(url, data={"topic": ["newsletter"]})
    assert len(consents(client, "ana")["history"]) == 3
    # Ticking one back records exactly that one.
    client.post(url, data={"topic": ["newsletter", "partners"]})
    assert current(client, "ana")["partners"] == "opted_in"
    assert len(consents(client, "ana")["history"]) == 4


def test_preferences_after_unsubscribing_from_everything(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    url = f"/p/{preferences_token(state.secret, ana, 'email', 's1', T0)}"
    client.post(url, data={"all_off": "1"})
    assert current(client, "ana") == {"*": "opted_out"}
    page = client.get(url).get_data(as_text=True)
    assert not any(boxes(page).values()) and 'name="all_off" value="1" checked' in page
    # Choosing one topic again gets that topic only.
    client.post(url, data={"topic": ["promotions"]})
    assert boxes(client.get(url).get_data(as_text=True)) == {
        "newsletter": False, "promotions": True, "partners": False,
    }  # fmt: skip


def test_the_unsubscribe_page_links_to_the_preferences(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    page = client.get(f"/u/{token}").get_data(as_text=True)
    link = re.search(r'href="(/p/[^"]+)"', page)
    assert link and client.get(link.group(1)).status_code == 200
    # The unsubscribe token itself does not open the preference page.
    assert client.get(f"/p/{token}").status_code == 400


# --- open pixel and clicks ---------------------------------------------------------------------


def test_the_open_pixel_is_a_gif_and_counts_one_open_per_send(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    add_send(state, ana, "s-open")
    url = path(open_pixel_url(BASE, state.secret, "s-open", T0))
    for _ in range(2):
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype == "image/gif"
        assert (
            response.data.startswith(b"GIF89a") and response.headers["Cache-Control"] == "no-store"
        )
    opened = events(state, "email_opened")
    assert len(opened) == 1 and opened[0].contact_id == ana
    assert opened[0].properties["send_key"] == "s-open" and opened[0].event_key == "open:s-open"
    # A bad token still gets the image, and records nothing.
    assert client.get("/t/o/not-a-token").mimetype == "image/gif"
    assert len(events(state, "email_opened")) == 1


def test_a_click_records_the_event_and_redirects_to_the_signed_address(
    client: FlaskClient, state: Parcours
) -> None:
    ana = subscribed(client, state, "ana")
    add_send(state, ana, "s-click")
    target = "https://shop.example/sale?utm=june&x=é"
    url = path(click_url(BASE, state.secret, "s-click", target, T0))
    response = client.get(url)
    assert response.status_code == 302 and response.headers["Location"].startswith(
        "https://shop.example/sale?utm=june&x="
    )
    assert response.headers["Referrer-Policy"] == "no-referrer"
    client.get(url)  # twice: one event
    client.head(url)  # a link checker: not a click
    clicked = events(state, "email_clicked")
    assert len(clicked) == 1 and clicked[0].contact_id == ana
    assert clicked[0].properties["url"] == target and clicked[0].properties["send_key"] == "s-click"
    # Nothing in the request chooses the destination.
    sneaky = client.get(
        url + "?url=https://evil.example", headers={"Referer": "https://evil.example"}
    )
    assert sneaky.headers["Location"].startswith("https://shop.example/")


def test_a_bad_click_token_gets_a_page_and_never_a_redirect(
    client: FlaskClient, state: Parcours
) -> None:
    url = path(click_url(BASE, state.secret, "s1", "https://shop.example/", T0))
    token = url.rsplit("/", 1)[1]
    # Change the signature's first character: its last one carries bits base64 leaves unused,
    # so changing it may leave the signature as it was.
    payload, signature = token.rsplit(".", 1)
    tampered = f"{payload}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    # A token signed by another workspace's key (another host's link), and one whose payload
    # was replaced by another destination under the genuine signature.
    foreign = sign("another-workspace-key", CLICK_SALT, {"k": "s1", "u": "https://evil.example"})
    evil = sign(state.secret, CLICK_SALT, {"k": "s1", "u": "https://evil.example"}, T0)
    swapped = evil.split(".")[0] + "." + ".".join(token.split(".")[1:])
    script = sign(state.secret, CLICK_SALT, {"k": "s1", "u": "javascript:alert(1)"}, T0)
    for bad in (tampered, foreign, swapped, script, "garbage"):
        response = client.get(f"/t/c/{bad}")
        body = response.get_data(as_text=True)
        assert response.status_code == 400 and "Location" not in response.headers, bad
        assert "Invalid link" in body and "Lien non valide" in body
        assert "evil.example" not in body
    assert events(state, "email_clicked") == []


def test_an_expired_click_shows_its_destination_without_redirecting(
    client: FlaskClient, state: Parcours
) -> None:
    url = path(click_url(BASE, state.secret, "s1", "https://shop.example/old", T0))
    state.clock.set(T0 + timedelta(days=200))  # type: ignore[attr-defined]
    response = client.get(url)
    assert response.status_code == 400 and "Location" not in response.headers
    assert 'href="https://shop.example/old"' in response.get_data(as_text=True)


def test_public_pages_need_no_session_and_set_no_cookie(
    client: FlaskClient, state: Parcours, caplog: pytest.LogCaptureFixture
) -> None:
    ana = subscribed(client, state, "ana")
    fresh = client.application.test_client()
    token = unsubscribe_token(state.secret, ana, "email", "newsletter", "s1", T0)
    with caplog.at_level("DEBUG"):
        for response in (
            fresh.get(f"/u/{token}"),
            fresh.post(f"/u/{token}", data=ONE_CLICK),
            fresh.get(f"/p/{preferences_token(state.secret, ana, 'email', 's1', T0)}"),
        ):
            assert response.status_code == 200
            assert "Set-Cookie" not in response.headers
    assert "ana@example.com" not in caplog.text and "127.0.0.1" not in caplog.text
