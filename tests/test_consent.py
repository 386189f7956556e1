"""The consent ledger, suppressions, double opt-in and signed links, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, func, insert, select

from designer import Parcours, create_app
from designer.cli import cli
from engine.audience.ingest import clean_contact, upsert_contacts
from engine.config import SETTINGS, load_settings
from engine.delivery.links import ExpiredLink, InvalidLink, secret_key, sign, verify
from engine.errors import IngestError, NotFound
from engine.policy.consent import (
    DOI_SALT,
    ConsentInvalid,
    confirm_double_opt_in,
    consent_history,
    consent_snapshot,
    consent_states,
    effective_consent,
    is_suppressed,
    record_consent,
    request_double_opt_in,
    subscribe,
    suppress,
    suppressed_addresses,
)
from engine.policy.loader import load_policy_file
from engine.policy.model import Policy
from engine.runtime.clock import VirtualClock
from engine.runtime.state import ContactView
from engine.store.db import make_engine
from engine.store.models import ConsentRecord, ConsentState, Contact, Pressure, Send, Suppression
from tests.problems import problem_error

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
KEY = "test-api-key"
AUTH = {"X-Api-Key": KEY}
SECRET = "s3cret-for-tests-only-0123456789"
POLICY_YAML = """\
format_version: 1
topics:
  newsletter: "News <b>letter</b>"
  promotions: Promotions
consent:
  defaults: {email: opt_in, sms: opt_in, push: opt_out}
  double_opt_in: [email]
  expiry: 365d
"""
POLICY = Policy(
    topics={"newsletter": "Newsletter", "promotions": "Promotions"},
    consent_defaults={"email": "opt_in", "sms": "opt_in", "push": "opt_out"},
    double_opt_in=frozenset({"email"}),
    consent_expiry=timedelta(days=365),
)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    engine = make_engine(engine_url)
    yield engine
    engine.dispose()


def add_contact(engine: Engine, external_id: str = "c1", **fields: Any) -> int:
    fields.setdefault("email", f"{external_id}@example.com")
    row = clean_contact({"external_id": external_id, **fields})
    with engine.begin() as conn:
        upsert_contacts(conn, [row], T0)
        return int(
            conn.execute(select(Contact.id).where(Contact.external_id == external_id)).scalar_one()
        )


def view(engine: Engine, contact_id: int) -> ContactView:
    with engine.connect() as conn:
        row = conn.execute(select(Contact).where(Contact.id == contact_id)).one()
    return ContactView(row.id, row.external_id, row.email, row.phone)


def rows(engine: Engine, model: Any, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(model).where(*where)).all())


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


# --- the ledger --------------------------------------------------------------------------------


def test_records_append_and_the_state_follows_the_latest(engine: Engine) -> None:
    cid = add_contact(engine)
    with engine.begin() as conn:
        first = record_consent(
            conn, cid, "sms", "newsletter", "opted_in", "form", T0,
            wording="Yes, text me the newsletter", wording_version="sms-v3", ip="203.0.113.9",
            evidence={"form": "footer"}, policy=POLICY,
        )  # fmt: skip
    with engine.begin() as conn:
        second = record_consent(
            conn, cid, "sms", "newsletter", "opted_out", "sms_stop", T0 + timedelta(days=2),
            evidence={"keyword": "STOP"}, policy=POLICY,
        )  # fmt: skip
    assert second > first
    with engine.connect() as conn:
        history = consent_history(conn, cid)
        states = consent_states(conn, cid, T0 + timedelta(days=3))
    assert [(h["id"], h["state"], h["source"]) for h in history] == [
        (first, "opted_in", "form"),
        (second, "opted_out", "sms_stop"),
    ]
    # The first record is kept as it was: the history is the proof.
    assert history[0]["wording"] == "Yes, text me the newsletter"
    assert history[0]["wording_version"] == "sms-v3"
    assert history[0]["ip"] == "203.0.113.9"
    assert history[0]["evidence"] == {"form": "footer"}
    assert history[0]["expires_at"] == (T0 + timedelta(days=365)).isoformat()
    assert history[1]["expires_at"] is None
    assert states == [
        {
            "channel": "sms",
            "topic": "newsletter",
            "state": "opted_out",
            "since": (T0 + timedelta(days=2)).isoformat(),
            "expires_at": None,
            "record_id": second,
        }
    ]


def test_a_backdated_record_does_not_override_a_newer_choice(engine: Engine) -> None:
    cid = add_contact(engine)
    with engine.begin() as conn:
        newer = record_consent(
            conn, cid, "sms", "promotions", "opted_out", "operator", T0, policy=POLICY
        )
        record_consent(
            conn, cid, "sms", "promotions", "opted_in", "import", T0 - timedelta(days=30),
            policy=POLICY,
        )  # fmt: skip
        snapshot = consent_snapshot(conn, [cid])
    assert snapshot[cid] == {("sms", "promotions"): ("opted_out", None)}
    assert [s.record_id for s in rows(engine, ConsentState)] == [newer]
    assert count(engine, ConsentRecord) == 2


def test_bad_input_is_refused_with_the_field_at_fault(engine: Engine) -> None:
    cid = add_contact(engine)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "fax"}, "channel"),
        ({"channel": "*"}, "channel"),
        ({"topic": "partners"}, "topic"),
        ({"state": "maybe"}, "state"),
        ({"state": "expired"}, "state"),
        ({"source": "rumour"}, "source"),
        ({"source": "unsubscribe_link", "state": "opted_in"}, "source"),
        ({"source": "double_opt_in", "state": "opted_out"}, "source"),
        ({"ip": "not-an-ip"}, "ip"),
        ({"wording_version": "v" * 65}, "wording_version"),
        ({"wording": "a\x00b"}, "wording"),
        ({"evidence": {"x": float("nan")}}, "evidence"),
        ({"state": "opted_out", "expires_at": T0 + timedelta(days=1)}, "expires_at"),
        ({"expires_at": T0}, "expires_at"),
        ({"channel": "email", "source": "form"}, "state"),  # double opt-in: use subscribe()
        ({"channel": "email", "source": "api"}, "state"),
    ]
    base: dict[str, Any] = {
        "channel": "sms", "topic": "newsletter", "state": "opted_in", "source": "operator",
    }  # fmt: skip
    for change, field in cases:
        args = {**base, **change}
        options = {k: v for k, v in args.items() if k not in base}
        with engine.begin() as conn, pytest.raises(ConsentInvalid) as caught:
            record_consent(
                conn, cid, args["channel"], args["topic"], args["state"], args["source"], T0,
                policy=POLICY, **options,
            )  # fmt: skip
        assert caught.value.field == field, (change, str(caught.value))
        assert isinstance(caught.value, IngestError)
    with engine.begin() as conn, pytest.raises(NotFound):
        record_consent(conn, cid + 999, "sms", "newsletter", "opted_in", "api", T0, policy=POLICY)
    assert count(engine, ConsentRecord) == 0
    # What a double opt-in channel accepts without confirmation: an operator or an import.
    with engine.begin() as conn:
        record_consent(conn, cid, "email", "*", "opted_in", "import", T0, policy=POLICY)
        record_consent(conn, cid, "email", "*", "opted_out", "form", T0, policy=POLICY)


def test_the_snapshot_is_one_query_for_a_batch(engine: Engine) -> None:
    ids = [add_contact(engine, f"c{i}") for i in range(3)]
    with engine.begin() as conn:
        record_consent(conn, ids[0], "sms", "*", "opted_out", "sms_stop", T0, policy=POLICY)
        record_consent(conn, ids[0], "email", "promotions", "pending", "form", T0, policy=POLICY)
        record_consent(conn, ids[1], "push", "newsletter", "opted_in", "api", T0, policy=POLICY)
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.connect() as conn:
            snapshot = consent_snapshot(conn, [*ids, ids[0]])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len([s for s in statements if "consent_states" in s]) == 1
    assert snapshot == {
        ids[0]: {("sms", "*"): ("opted_out", None), ("email", "promotions"): ("pending", None)},
        ids[1]: {("push", "newsletter"): ("opted_in", T0 + timedelta(days=365))},
        ids[2]: {},
    }


# --- effective consent (pure) --------------------------------------------------------------------

LATER = T0 + timedelta(days=30)
EXPIRED_AT = T0 - timedelta(seconds=1)

TRUTH_TABLE = [
    # (records, channel, topic, allowed, reason)
    ({}, "email", "newsletter", False, "consent:newsletter:unknown"),
    ({}, "push", "newsletter", True, "consent:newsletter:opt_out_mode"),
    ({}, "onsite", "promotions", False, "consent:promotions:unknown"),  # no default: opt_in
    ({("email", "newsletter"): ("opted_in", None)}, "email", "newsletter", True,
     "consent:newsletter:opted_in"),
    ({("email", "newsletter"): ("opted_in", LATER)}, "email", "newsletter", True,
     "consent:newsletter:opted_in"),
    ({("email", "newsletter"): ("opted_in", EXPIRED_AT)}, "email", "newsletter", False,
     "consent:newsletter:expired"),
    ({("email", "newsletter"): ("opted_in", T0)}, "email", "newsletter", False,
     "consent:newsletter:expired"),  # expiry is exclusive: at that instant it has lapsed
    ({("email", "newsletter"): ("opted_out", None)}, "email", "newsletter", False,
     "consent:newsletter:opted_out"),
    ({("email", "newsletter"): ("pending", None)}, "email", "newsletter", False,
     "consent:newsletter:pending"),
    ({("push", "newsletter"): ("pending", None)}, "push", "newsletter", False,
     "consent:newsletter:pending"),  # unconfirmed blocks even where unknown would not
    ({("push", "newsletter"): ("opted_out", None)}, "push", "newsletter", False,
     "consent:newsletter:opted_out"),
    ({("push", "newsletter"): ("opted_in", EXPIRED_AT)}, "push", "newsletter", False,
     "consent:newsletter:expired"),
    # Another topic or channel says nothing about this one.
    ({("email", "promotions"): ("opted_in", None)}, "email", "newsletter", False,
     "consent:newsletter:unknown"),
    ({("sms", "newsletter"): ("opted_out", None)}, "push", "newsletter", True,
     "consent:newsletter:opt_out_mode"),
    # "*": a channel-wide opt-out beats a topic opt-in ...
    ({("email", "*"): ("opted_out", None), ("email", "newsletter"): ("opted_in", None)},
     "email", "newsletter", False, "consent:newsletter:opted_out"),
    ({("push", "*"): ("opted_out", None)}, "push", "newsletter", False,
     "consent:newsletter:opted_out"),
    # ... otherwise the topic's own record beats "*".
    ({("email", "*"): ("opted_in", None), ("email", "newsletter"): ("opted_out", None)},
     "email", "newsletter", False, "consent:newsletter:opted_out"),
    ({("email", "*"): ("opted_in", None), ("email", "newsletter"): ("pending", None)},
     "email", "newsletter", False, "consent:newsletter:pending"),
    ({("email", "*"): ("pending", None), ("email", "newsletter"): ("opted_in", None)},
     "email", "newsletter", True, "consent:newsletter:opted_in"),
    ({("email", "*"): ("opted_in", EXPIRED_AT), ("email", "newsletter"): ("opted_in", LATER)},
     "email", "newsletter", True, "consent:newsletter:opted_in"),
    ({("email", "*"): ("opted_in", None)}, "email", "promotions", True,
     "consent:promotions:opted_in"),
    ({("email", "*"): ("opted_in", EXPIRED_AT)}, "email", "promotions", False,
     "consent:promotions:expired"),
    # A marketing send without a topic needs the channel-wide consent.
    ({("email", "newsletter"): ("opted_in", None)}, "email", None, False, "consent:*:unknown"),
    ({("email", "*"): ("opted_in", None)}, "email", None, True, "consent:*:opted_in"),
    ({("email", "*"): ("opted_in", None)}, "email", "*", True, "consent:*:opted_in"),
]  # fmt: skip


@pytest.mark.parametrize(("records", "channel", "topic", "allowed", "reason"), TRUTH_TABLE)
def test_effective_consent(
    records: dict[tuple[str, str], tuple[str, datetime | None]],
    channel: str,
    topic: str | None,
    allowed: bool,
    reason: str,
) -> None:
    assert effective_consent(records, channel, topic, T0, POLICY) == (allowed, reason)


def test_every_reason_is_covered_by_the_truth_table() -> None:
    reasons = {row[4].rsplit(":", 1)[1] for row in TRUTH_TABLE}
    assert reasons == {"unknown", "opt_out_mode", "opted_in", "opted_out", "pending", "expired"}


def test_an_opt_in_expires_with_the_policy(engine: Engine) -> None:
    cid = add_contact(engine)
    with engine.begin() as conn:
        record_consent(conn, cid, "sms", "newsletter", "opted_in", "api", T0, policy=POLICY)
        custom = record_consent(
            conn, cid, "sms", "promotions", "opted_in", "api", T0,
            expires_at=T0 + timedelta(days=10), policy=POLICY,
        )  # fmt: skip
        record_consent(
            conn, cid, "push", "newsletter", "opted_in", "api", T0, policy=Policy()
        )  # no expiry in that policy
        snapshot = consent_snapshot(conn, [cid])[cid]
    assert custom
    assert snapshot[("sms", "newsletter")] == ("opted_in", T0 + timedelta(days=365))
    assert snapshot[("push", "newsletter")] == ("opted_in", None)
    day = timedelta(days=1)
    assert effective_consent(snapshot, "sms", "newsletter", T0 + 364 * day, POLICY)[0]
    assert effective_consent(snapshot, "sms", "newsletter", T0 + 366 * day, POLICY) == (
        False,
        "consent:newsletter:expired",
    )
    assert effective_consent(snapshot, "sms", "promotions", T0 + 11 * day, POLICY) == (
        False,
        "consent:promotions:expired",
    )
    with engine.connect() as conn:
        states = {
            (s["channel"], s["topic"]): s["state"] for s in consent_states(conn, cid, T0 + 20 * day)
        }
    assert states == {
        ("sms", "newsletter"): "opted_in",
        ("sms", "promotions"): "expired",
        ("push", "newsletter"): "opted_in",
    }
    # A fresh opt-in renews it.
    with engine.begin() as conn:
        record_consent(
            conn, cid, "sms", "promotions", "opted_in", "api", T0 + 20 * day, policy=POLICY
        )
        snapshot = consent_snapshot(conn, [cid])[cid]
    assert effective_consent(snapshot, "sms", "promotions", T0 + 21 * day, POLICY)[0]


# --- suppression -------------------------------------------------------------------------------


def test_suppression_is_idempotent_and_keeps_the_first_reason(engine: Engine) -> None:
    cid = add_contact(engine, email="anne@example.com")
    with engine.begin() as conn:
        assert suppress(conn, "email", " Anne@Example.COM ", "hard_bounce", "provider", T0, cid)
    with engine.begin() as conn:
        again = suppress(
            conn, "email", "anne@example.com", "spam_complaint", "fbl", T0 + timedelta(hours=1)
        )
    assert again is False
    [row] = rows(engine, Suppression)
    assert (row.channel, row.address, row.reason, row.source, row.contact_id) == (
        "email", "anne@example.com", "hard_bounce", "provider", cid,
    )  # fmt: skip
    assert row.at == T0


def test_each_address_kind_blocks_its_channels(engine: Engine) -> None:
    anne = add_contact(engine, "anne", email="anne@example.com", phone="+33 6 12 34 56 78")
    bob = add_contact(engine, "bob", email="bob@example.com", phone="+33611111111")
    carl = add_contact(engine, "carl", email="carl@example.com", phone="+33622222222")
    dora = add_contact(engine, "dora", email="dora@example.com", phone="+33633333333")
    with engine.begin() as conn:
        suppress(conn, "email", "anne@example.com", "hard_bounce", "provider", T0)
        suppress(conn, "sms", "+33 6.12-34 56 78", "unsubscribe", "sms_stop", T0)  # normalised
        suppress(conn, "push", f"contact:{bob}", "operator", "operator", T0)
        suppress(conn, "*", f"contact:{carl}", "erasure", "erasure", T0)
        suppress(conn, "*", "+33633333333", "spam_complaint", "provider", T0)
    contacts = {i: view(engine, i) for i in (anne, bob, carl, dora)}
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with engine.connect() as conn:
            suppressed = suppressed_addresses(conn, contacts)  # a map id → contact works too
            assert suppressed_addresses(conn, list(contacts.values())) == suppressed
            assert suppressed_addresses(conn, []) == {}
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len([s for s in statements if "suppressions" in s]) == 2

    def check(cid: int, channel: str) -> str | None:
        return is_suppressed(suppressed, channel, contacts[cid])

    assert check(anne, "email") == "suppression:hard_bounce"
    assert check(anne, "sms") == "suppression:unsubscribe"
    assert check(anne, "call") is None  # the sms suppression is for sms only
    assert check(anne, "push") is None
    assert check(bob, "push") == "suppression:operator"
    assert check(bob, "email") is None
    for channel in ("email", "sms", "call", "push", "onsite", "mail", "webhook"):
        assert check(carl, channel) == "suppression:erasure"
    assert check(dora, "sms") == "suppression:spam_complaint"
    assert check(dora, "call") == "suppression:spam_complaint"
    assert check(dora, "email") is None
    assert is_suppressed({}, "email", contacts[anne]) is None


def test_suppression_refuses_bad_input(engine: Engine) -> None:
    cases = [
        ("fax", "a@example.com", "hard_bounce", "channel"),
        ("email", "a@example.com", "bored", "reason"),
        ("sms", "a@example.com", "unsubscribe", "address"),  # an email cannot be an sms address
        ("email", "+33612345678", "unsubscribe", "address"),
        ("push", "a@example.com", "unsubscribe", "address"),
        ("email", "not an address", "unsubscribe", "address"),
        ("email", "contact:abc", "unsubscribe", "address"),
    ]
    for channel, address, reason, field in cases:
        with engine.begin() as conn, pytest.raises(ConsentInvalid) as caught:
            suppress(conn, channel, address, reason, "operator", T0)
        assert caught.value.field == field, (channel, address, reason)
    assert count(engine, Suppression) == 0


# --- signed links and the secret ----------------------------------------------------------------


def test_signed_links_round_trip_and_refuse_tampering() -> None:
    token = sign(SECRET, "one", {"r": 1}, now=T0)
    assert verify(SECRET, "one", token, timedelta(days=30), now=T0 + timedelta(days=29)) == {"r": 1}
    assert verify(SECRET, "one", token, None) == {"r": 1}
    with pytest.raises(ExpiredLink):
        verify(SECRET, "one", token, timedelta(days=30), now=T0 + timedelta(days=30, seconds=1))
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad, secret, salt in [
        (tampered, SECRET, "one"),
        (token, SECRET, "two"),  # another purpose
        (token, SECRET + "x", "one"),  # another key
        ("", SECRET, "one"),
        ("not.a.token", SECRET, "one"),
        ("ünïcode", SECRET, "one"),
    ]:
        with pytest.raises(InvalidLink) as caught:
            verify(secret, salt, bad, timedelta(days=30), now=T0)
        assert not isinstance(caught.value, ExpiredLink)


def test_the_secret_key_is_the_setting_or_a_private_file(tmp_path: Path) -> None:
    assert "SECRET_KEY" in {s.name for s in SETTINGS}
    given = load_settings({"PARCOURS_SECRET_KEY": "from-env"}, data_dir=tmp_path / "a")
    assert secret_key(given) == "from-env"
    assert not (tmp_path / "a").exists()
    settings = load_settings({}, data_dir=tmp_path / "b")
    first = secret_key(settings)
    path = tmp_path / "b" / "secret_key"
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key(settings) == first  # kept, not regenerated
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret_key"]  # no stray temp file


# --- double opt-in through the web app -----------------------------------------------------------


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def app(engine_url: str, tmp_path: Path, clock: VirtualClock) -> Iterator[Flask]:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "policy.yaml").write_text(POLICY_YAML, encoding="utf-8")
    settings = load_settings(
        {},
        database_url=engine_url,
        api_key=KEY,
        secret_key=SECRET,
        data_dir=tmp_path / "data",
        scenarios_dir=scenarios,
    )
    app = create_app(settings, {"TESTING": True})
    app.extensions["parcours"].clock = clock
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def parcours(app: Flask) -> Parcours:
    found: Parcours = app.extensions["parcours"]
    return found


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def put_contact(client: FlaskClient, external_id: str = "c1", **profile: Any) -> None:
    profile.setdefault("email", f"{external_id}@example.com")
    response = client.put(f"/api/contacts/{external_id}", json=profile, headers=AUTH)
    assert response.status_code == 200, response.get_json()


def post_consent(client: FlaskClient, external_id: str = "c1", **body: Any) -> Any:
    body = {
        "channel": "email",
        "topic": "newsletter",
        "state": "opted_in",
        "source": "form",
        **body,
    }
    return client.post(f"/api/contacts/{external_id}/consents", json=body, headers=AUTH)


def current(client: FlaskClient, external_id: str = "c1") -> dict[tuple[str, str], str]:
    body = client.get(f"/api/contacts/{external_id}/consents", headers=AUTH).get_json()
    return {(s["channel"], s["topic"]): s["state"] for s in body["consents"]}


def confirmation_link(parcours: Parcours, send_key: str) -> tuple[Any, str]:
    with parcours.engine.connect() as conn:
        send = conn.execute(select(Send).where(Send.send_key == send_key)).one()
    [url] = re.findall(r"https?://\S+", send.payload["parts"]["text"])
    return send, url


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    return problem_error(response, status, field)


def test_double_opt_in_end_to_end(
    client: FlaskClient, parcours: Parcours, clock: VirtualClock
) -> None:
    put_contact(client, locale="en-GB")
    response = post_consent(
        client, wording="Send me the newsletter", wording_version="nl-2", ip="198.51.100.7",
        headers={"Host": "evil.example"},
    )  # fmt: skip
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["consent"]["state"] == "pending"
    record_id = body["consent"]["id"]
    assert body["confirmation"] == {"send_key": f"doi:{record_id}"}
    assert current(client) == {("email", "newsletter"): "pending"}

    send, url = confirmation_link(parcours, f"doi:{record_id}")
    assert (send.channel, send.kind, send.status, send.scenario_id, send.step_id) == (
        "email", "transactional", "sent", "system:double-opt-in", "confirm",
    )  # fmt: skip
    assert send.created_at == T0 and send.enrollment_id is None
    parts = send.payload["parts"]
    assert set(parts) == {"subject", "text", "html"}
    assert parts["subject"] == "Please confirm your subscription"
    # The link comes from the configuration, never from the request's Host header.
    assert url.startswith("http://127.0.0.1:8080/consent/confirm?token=")
    assert url.replace("&", "&amp;") in parts["html"]
    assert "News &lt;b&gt;letter&lt;/b&gt;" in parts["html"]

    clock.advance(timedelta(days=3))
    link = urlsplit(url)
    page = client.get(f"{link.path}?{link.query}", environ_base={"REMOTE_ADDR": "192.0.2.44"})
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert page.mimetype == "text/html"
    assert "Subscription confirmed" in text and "Inscription confirmée" in text
    assert "News &lt;b&gt;letter&lt;/b&gt;" in text  # autoescaped
    assert page.headers["Cache-Control"] == "no-store"
    assert current(client) == {("email", "newsletter"): "opted_in"}

    history = client.get("/api/contacts/c1/consents", headers=AUTH).get_json()["history"]
    assert [(h["state"], h["source"]) for h in history] == [
        ("pending", "form"),
        ("opted_in", "double_opt_in"),
    ]
    confirmed = history[1]
    assert confirmed["ip"] == "192.0.2.44"
    assert confirmed["at"] == (T0 + timedelta(days=3)).isoformat()
    assert confirmed["wording_version"] == "nl-2"  # what they were told travels with the proof
    assert confirmed["evidence"]["confirms_record"] == record_id
    assert confirmed["evidence"]["send_key"] == f"doi:{record_id}"
    assert confirmed["expires_at"] == (T0 + timedelta(days=368)).isoformat()
    assert history[0]["ip"] == "198.51.100.7"

    # A second click (or a mail scanner) changes nothing.
    again = client.get(f"{link.path}?{link.query}")
    assert again.status_code == 200
    assert count(parcours.engine, ConsentRecord) == 2

    # Signing up again while opted in neither demotes to pending nor sends a second message.
    response = post_consent(client)
    assert response.status_code == 200
    assert response.get_json()["already"] is True
    assert count(parcours.engine, Send) == 1
    assert current(client) == {("email", "newsletter"): "opted_in"}


def test_a_french_contact_gets_the_message_in_french(
    client: FlaskClient, parcours: Parcours
) -> None:
    put_contact(client, locale="fr-FR")
    key = post_consent(client).get_json()["confirmation"]["send_key"]
    send, _ = confirmation_link(parcours, key)
    assert send.payload["parts"]["subject"] == "Confirmez votre inscription"


def test_bad_links_get_a_400_page(
    client: FlaskClient, parcours: Parcours, clock: VirtualClock
) -> None:
    put_contact(client)
    key = post_consent(client).get_json()["confirmation"]["send_key"]
    _, url = confirmation_link(parcours, key)
    token = url.split("token=", 1)[1]
    tampered = token[:-3] + ("x" if token[-3] != "x" else "y") + token[-2:]
    for path in (
        f"/consent/confirm?token={tampered}",
        "/consent/confirm",
        "/consent/confirm?token=",
        f"/consent/confirm?token={'a' * 5000}",
        f"/consent/confirm?token={sign('another key', DOI_SALT, {'r': 1}, T0)}",
        f"/consent/confirm?token={sign(SECRET, 'another purpose', {'r': 1}, T0)}",
        f"/consent/confirm?token={sign(SECRET, DOI_SALT, {'r': 999, 'c': 1}, T0)}",
        f"/consent/confirm?token={sign(SECRET, DOI_SALT, ['not', 'a', 'dict'], T0)}",
    ):
        page = client.get(path)
        assert page.status_code == 400, path
        text = page.get_data(as_text=True)
        assert page.mimetype == "text/html"
        assert "Invalid link" in text and "Lien non valide" in text
        assert "Traceback" not in text
    assert current(client) == {("email", "newsletter"): "pending"}

    clock.advance(timedelta(days=30, seconds=1))
    page = client.get(f"/consent/confirm?token={token}")
    assert page.status_code == 400
    assert "Link expired" in page.get_data(as_text=True)
    assert current(client) == {("email", "newsletter"): "pending"}


def test_an_old_link_cannot_undo_an_opt_out(client: FlaskClient, parcours: Parcours) -> None:
    put_contact(client)
    key = post_consent(client).get_json()["confirmation"]["send_key"]
    _, url = confirmation_link(parcours, key)
    response = post_consent(client, state="opted_out", source="preference_center")
    assert response.status_code == 201
    page = client.get(urlsplit(url).path + "?" + urlsplit(url).query)
    assert page.status_code == 400
    assert current(client) == {("email", "newsletter"): "opted_out"}


def test_confirm_double_opt_in_directly(engine: Engine) -> None:
    cid = add_contact(engine, phone="+33612345678")
    policy = Policy(topics={"newsletter": "N"}, double_opt_in=frozenset({"email", "sms", "push"}))
    with engine.begin() as conn:
        sms = request_double_opt_in(
            conn, cid, "sms", "newsletter", T0, SECRET, "https://shop.example/", policy=policy
        )
        with pytest.raises(ConsentInvalid):  # push has no address to carry a link
            subscribe(conn, cid, "push", "newsletter", "api", T0, secret=SECRET,
                      base_url="https://x", policy=policy)  # fmt: skip
    assert sms.url.startswith("https://shop.example/consent/confirm?token=")
    [send] = rows(engine, Send)
    assert send.channel == "sms" and set(send.payload["parts"]) == {"text"}
    token = sms.url.split("token=", 1)[1]
    with engine.begin() as conn, pytest.raises(ExpiredLink):
        confirm_double_opt_in(conn, token, SECRET, T0 + timedelta(days=2), None, policy=policy,
                              max_age=timedelta(days=1))  # fmt: skip
    with engine.begin() as conn:
        assert confirm_double_opt_in(conn, token, SECRET, T0, "2001:db8::1", policy=policy) == (
            cid, "sms", "newsletter",
        )  # fmt: skip
    [state] = rows(engine, ConsentState)
    assert state.state == "opted_in"
    assert rows(engine, ConsentRecord, ConsentRecord.id == state.record_id)[0].ip == "2001:db8::1"
    # No email on file: no confirmation can be sent.
    nomail = add_contact(engine, "nomail", email=None)
    with engine.begin() as conn, pytest.raises(ConsentInvalid) as caught:
        request_double_opt_in(conn, nomail, "email", "newsletter", T0, SECRET, "https://x",
                              policy=policy)  # fmt: skip
    assert caught.value.field == "email"


def test_the_confirmation_is_queued_on_a_delivered_channel(engine: Engine) -> None:
    cid = add_contact(engine, phone="+33612345678")
    policy = Policy(topics={"newsletter": "N"}, double_opt_in=frozenset({"email", "sms"}))
    with engine.begin() as conn:
        email = request_double_opt_in(conn, cid, "email", "newsletter", T0, SECRET, "https://x",
                                      policy=policy, delivering={"email"})  # fmt: skip
        sms = request_double_opt_in(conn, cid, "sms", "newsletter", T0, SECRET, "https://x",
                                    policy=policy, delivering={"email"})  # fmt: skip
    assert (email.status, sms.status) == ("queued", "sent")
    queued, kept = rows(engine, Send)
    # Queued like a journey's message: the delivery loop claims it and counts its attempts.
    assert (queued.send_key, queued.status, queued.provider_id, queued.attempts) == (
        email.send_key, "queued", None, 0,
    )  # fmt: skip
    assert queued.sent_at is None and queued.next_attempt_at is None
    assert (kept.status, kept.provider_id, kept.attempts) == ("sent", f"outbox:{sms.send_key}", 1)


# --- the API -----------------------------------------------------------------------------------


def test_consent_routes_need_the_api_key(client: FlaskClient) -> None:
    put_contact(client)
    for method, path in [
        ("post", "/api/contacts/c1/consents"),
        ("get", "/api/contacts/c1/consents"),
        ("post", "/api/suppressions"),
    ]:
        response = getattr(client, method)(path, json={}, headers={"X-Api-Key": "wrong"})
        assert_error(response, 401, "X-Api-Key")
        response = getattr(client, method)(path, json={})
        assert_error(response, 401, "X-Api-Key")


def test_consent_api_records_and_refuses(client: FlaskClient) -> None:
    put_contact(client, phone="+33612345678")
    response = post_consent(client, channel="sms", source="api", wording="Oui")
    assert response.status_code == 201
    assert response.get_json()["consent"]["state"] == "opted_in"
    assert "confirmation" not in response.get_json()
    response = post_consent(client, channel="email", topic="*", state="opted_out",
                            source="unsubscribe_link")  # fmt: skip
    assert response.status_code == 201
    assert current(client) == {("sms", "newsletter"): "opted_in", ("email", "*"): "opted_out"}

    assert_error(post_consent(client, "nobody"), 404)
    assert_error(client.get("/api/contacts/nobody/consents", headers=AUTH), 404)
    assert_error(post_consent(client, channel="fax"), 422, "channel")
    assert_error(post_consent(client, topic="partners"), 422, "topic")
    assert_error(post_consent(client, state="maybe"), 422, "state")
    assert_error(post_consent(client, source="rumour"), 422, "source")
    assert_error(post_consent(client, topic=None), 422, "topic")
    assert_error(post_consent(client, topic=7), 422, "topic")
    assert_error(post_consent(client, ip="nope"), 422, "ip")
    assert_error(post_consent(client, evidence=[1]), 422, "evidence")
    assert_error(post_consent(client, expires_at="tomorrow"), 422, "expires_at")
    assert_error(
        post_consent(client, channel="sms", expires_at="2020-01-01T00:00:00Z"), 422, "expires_at"
    )
    assert_error(post_consent(client, expires_at="2030-01-01T00:00:00Z"), 422, "expires_at")
    response = client.post("/api/contacts/c1/consents", data="x", headers=AUTH)
    assert_error(response, 415)
    response = client.post("/api/contacts/c1/consents", json=[1], headers=AUTH)
    assert_error(response, 422)


def test_policy_errors_are_a_clean_503(client: FlaskClient, parcours: Parcours) -> None:
    put_contact(client)
    (parcours.settings.scenarios_dir / "policy.yaml").write_text("format_version: 2\nbogus: 1\n")
    assert_error(post_consent(client), 503)


def test_suppression_api(client: FlaskClient, parcours: Parcours) -> None:
    put_contact(client, email="anne@example.com")
    body = {"channel": "email", "address": "Anne@Example.com", "reason": "spam_complaint"}
    response = client.post("/api/suppressions", json={**body, "contact": "c1"}, headers=AUTH)
    assert response.status_code == 201
    found = response.get_json()
    assert found["created"] is True
    assert found["suppression"]["address"] == "anne@example.com"
    assert found["suppression"]["source"] == "api"
    response = client.post("/api/suppressions", json=body, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["created"] is False
    assert count(parcours.engine, Suppression) == 1
    listed = client.get("/api/contacts/c1/consents", headers=AUTH).get_json()["suppressions"]
    assert [s["reason"] for s in listed] == ["spam_complaint"]

    assert_error(
        client.post("/api/suppressions", json={**body, "reason": "x"}, headers=AUTH), 422, "reason"
    )
    assert_error(
        client.post("/api/suppressions", json={**body, "channel": "fax"}, headers=AUTH),
        422,
        "channel",
    )
    assert_error(
        client.post("/api/suppressions", json={**body, "channel": "sms"}, headers=AUTH),
        422,
        "address",
    )
    assert_error(
        client.post("/api/suppressions", json={**body, "address": None}, headers=AUTH),
        422,
        "address",
    )
    assert_error(
        client.post("/api/suppressions", json={**body, "contact": "nobody"}, headers=AUTH),
        422,
        "contact",
    )


# --- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def run(engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key in list(os.environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "policy.yaml").write_text(POLICY_YAML, encoding="utf-8")
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(scenarios))
    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_cli_consent_suppress_and_contact_show(run: Any, engine: Engine) -> None:
    cid = add_contact(engine, "c1", email="anne@example.com", phone="+33612345678")
    result = run("consent", "set", "c1", "sms", "newsletter", "opted_in", "--wording", "Oui, SMS")
    assert result.exit_code == 0, result.output
    assert "c1: sms/newsletter opted_in" in result.output
    result = run("consent", "set", "c1", "email", "*", "opted_out", "--source", "unsubscribe_link")
    assert result.exit_code == 0, result.output

    result = run("consent", "set", "c1", "email", "newsletter", "opted_in", "--source", "form")
    assert result.exit_code == 1
    assert "double opt-in" in result.output
    result = run("consent", "set", "nobody", "sms", "newsletter", "opted_in")
    assert result.exit_code == 1 and "no contact with external id 'nobody'" in result.output
    result = run("consent", "set", "c1", "sms", "gossip", "opted_in")
    assert result.exit_code == 1 and "unknown topic 'gossip'" in result.output
    assert "Traceback" not in result.output

    result = run("consent", "history", "c1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "sms/newsletter" in lines[0] and "operator" in lines[0]
    assert "wording: Oui, SMS" in result.output
    assert "email/*" in result.output and "unsubscribe_link" in result.output
    history = json.loads(run("consent", "history", "c1", "--json").output)
    assert [h["state"] for h in history] == ["opted_in", "opted_out"]
    assert history[0]["evidence"]["cli_user"]

    result = run("suppress", "email", "ANNE@example.com", "--reason", "hard_bounce")
    assert result.exit_code == 0 and "suppressed" in result.output
    result = run("suppress", "email", "anne@example.com", "--reason", "hard_bounce")
    assert "already suppressed" in result.output
    result = run("suppress", "sms", "anne@example.com", "--reason", "hard_bounce")
    assert result.exit_code == 1 and "cannot be suppressed on channel sms" in result.output

    with engine.begin() as conn:
        conn.execute(insert(Pressure).values(
            contact_id=cid, channel="*", score=7.5, state="over",
            updated_at=datetime.now(UTC),  # contact show decays the score to the present
            signals=[{"event": "spam_complaint", "weight": 10}, "sends: 4 in 7d"],
        ))  # fmt: skip
    result = run("contact", "show", "c1")
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in (
        "contact c1", "anne@example.com", "sms/newsletter", "opted_in", "email/*",
        "opted_out", "suppressions", "hard_bounce", "pressure", "over", "score 7.50",
        '"spam_complaint"', "sends: 4 in 7d",
    ):  # fmt: skip
        assert expected in out, expected
    details = json.loads(run("contact", "show", "c1", "--json").output)
    assert set(details) == {
        "contact",
        "consents",
        "history",
        "suppressions",
        "pressure",
        "quiet_days",
        "computed",
        "identifiers",
        "merges",
    }
    assert details["contact"]["external_id"] == "c1"
    overall = details["pressure"]["overall"]
    assert overall["state"] == "over" and overall["score"] > 7.4
    assert {"event": "spam_complaint", "weight": 10} in overall["signals"]
    assert [s["address"] for s in details["suppressions"]] == ["anne@example.com"]
    result = run("contact", "show", "nobody")
    assert result.exit_code == 1


def test_the_workspace_policy_file_parses() -> None:
    path = Path(__file__).resolve().parents[1] / "scenarios" / "policy.yaml"
    if path.exists():
        policy = load_policy_file(path)
        assert set(policy.double_opt_in) <= {"email", "sms"}  # channels that can carry a link
