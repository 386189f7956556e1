"""A withdrawal reaches messages already queued: a marketing email deferred by the SMTP server
(aiosmtpd on 127.0.0.1, a 451) or an SMS refused by the provider fake (a 503), then the contact
withdraws by every path there is (one-click unsubscribe, preference page, the consent API, the
profile's opt-out flag, an inbound STOP, a hard bounce of another message, a spam complaint), and
when the server recovers the retry sends nothing: the message is `cancelled` with the gate's own
reason journaled. Transactional messages queued the same way are still delivered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from channels.sms_callbacks import callback_signature
from designer import Parcours, create_app
from engine.config import load_settings
from engine.delivery.loop import Dispatcher, workspace_dispatcher
from engine.delivery.tracking import preferences_token, unsubscribe_token
from engine.policy.loading import full_gate_factory
from engine.runtime.clock import VirtualClock
from engine.store.models import Contact, Enrollment, JournalEntry, Send
from engine.worker.runner import Worker
from engine.worker.versions import publish_dir
from tests.sms import Provider
from tests.smtp import Smtp, smtp_server

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Paris
KEY = {"X-Api-Key": "k"}
ANNE, PHONE = "anne@example.org", "+33612345678"
EMAIL_SECRET, SMS_SECRET = "email-callback-secret", "sms-callback-secret"
DEFERRED = "451 4.3.0 mailbox busy, try later"
POLICY = """\
format_version: 1
topics:
  promotions: Promotions
  newsletter: Newsletter
consent:
  double_opt_in: [email]
"""


def scenario(name: str, channel: str, kind: str) -> str:
    """A journey that sends one message on `channel` when the event `name` arrives."""
    topic = "topic: promotions\n" if kind == "marketing" else ""
    content = (
        f'      subject: "{name}"\n      text: "Hello from {name}."\n'
        if channel == "email"
        else f'      text: "{name}: hello. STOP 36111"\n'
    )
    return (
        f"format_version: 1\nid: {name}\nname: {name}\nobjective: other\nkind: {kind}\n{topic}"
        f"triggers:\n  - event: {name}\nentry:\n  reentry: always\nsteps:\n  message:\n"
        f"    type: send\n    channel: {channel}\n    content:\n{content}"
    )


JOURNEYS = {
    "promo-email": ("email", "marketing"),
    "receipt-email": ("email", "transactional"),
    "promo-sms": ("sms", "marketing"),
    "receipt-sms": ("sms", "transactional"),
}


class SmsProvider(Provider):
    """The SMS provider fake, which can refuse the next requests with a 503 (kept apart)."""

    refusals: list[int]
    refused: list[dict[str, Any]]

    def do_POST(self) -> None:
        if not self.refusals:
            super().do_POST()
            return
        self.refusals.pop(0)
        self.refused.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Sms:
    url: str
    received: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    refusals: list[int]

    def texts(self) -> list[str]:
        return [str(r["body"].get("text", "")) for r in self.received]


@contextmanager
def sms_provider() -> Iterator[Sms]:
    found = Sms("", [], [], [])
    attributes = {"received": found.received, "refused": found.refused, "refusals": found.refusals}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (SmsProvider,), attributes))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}/v1/messages"
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def mailbox() -> Iterator[Smtp]:
    with smtp_server() as (handler, port):
        handler.port = port  # type: ignore[attr-defined]
        yield handler


@pytest.fixture
def sms() -> Iterator[Sms]:
    with sms_provider() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path, mailbox: Smtp, sms: Sms) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POLICY)
    for name, (channel, kind) in JOURNEYS.items():
        (folder / f"{name}.yaml").write_text(scenario(name, channel, kind))
    (folder / "channels.yaml").write_text(
        "email:\n  provider: smtp\n  host: 127.0.0.1\n"
        f"  port: {mailbox.port}\n"  # type: ignore[attr-defined]
        "  security: none\n  from_address: news@shop.example\n"
        "  callback_secret: ${EMAIL_HOOK_SECRET}\n"
        f"sms:\n  provider: sms_http\n  url: {sms.url}\n  sender: Boutique\n"
        "  callback_secret: ${SMS_HOOK_SECRET}\n"
        "  allow: [127.0.0.1]\n  allow_http: true\n"
    )
    return folder


@pytest.fixture
def app(
    engine_url: str, tmp_path: Path, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    monkeypatch.setenv("EMAIL_HOOK_SECRET", EMAIL_SECRET)
    monkeypatch.setenv("SMS_HOOK_SECRET", SMS_SECRET)
    settings = load_settings(
        {}, database_url=engine_url, data_dir=tmp_path / "data", scenarios_dir=workspace,
        api_key="k", secret_key="s" * 32, public_url="https://shop.example",
    )  # fmt: skip
    app = create_app(settings, {"TESTING": True})
    state: Parcours = app.extensions["parcours"]
    state.clock = VirtualClock(T0)
    with Session(state.engine) as db, db.begin():
        publish_dir(db, workspace)
    yield app
    state.engine.dispose()


class Shop:
    """The workspace as the worker runs it: journeys decided by the full gate, then delivered
    by the delivery loop built from channels.yaml, on a virtual clock."""

    def __init__(self, client: FlaskClient, state: Parcours) -> None:
        self.client, self.state = client, state
        settings = state.settings
        self.worker = Worker(
            state.engine, settings, state.clock, full_gate_factory(settings),
            delivering={"email", "sms"},
        )  # fmt: skip
        made = workspace_dispatcher(state.engine, settings)
        assert made is not None
        self.dispatcher: Dispatcher = made

    def contact(self, external_id: str = "anne", email: str = ANNE, phone: str = PHONE) -> int:
        """A contact opted in to all marketing by email and SMS (an operator's record)."""
        put = self.client.put(f"/api/contacts/{external_id}", headers=KEY,
                              json={"email": email, "phone": phone, "timezone": "Europe/Paris"})  # fmt: skip
        assert put.status_code in (200, 201), put.get_json()
        for channel in ("email", "sms"):
            consent = {"channel": channel, "topic": "*", "state": "opted_in", "source": "operator"}
            posted = self.client.post(f"/api/contacts/{external_id}/consents", json=consent,
                                      headers=KEY)  # fmt: skip
            assert posted.status_code == 201, posted.get_json()
        with self.state.engine.connect() as conn:
            found = conn.execute(select(Contact.id).where(Contact.external_id == external_id))
            return int(found.scalar_one())

    def trigger(self, journey: str, now: datetime, who: str = "anne") -> str:
        """The journey's event arrives and the worker queues its message; the send key."""
        self.state.clock.set(now)  # type: ignore[attr-defined]
        posted = self.client.post("/api/events", json={"contact": who, "name": journey},
                                  headers=KEY)  # fmt: skip
        assert posted.status_code == 202, posted.get_json()
        self.worker.run_once(now)
        with self.state.engine.connect() as conn:
            key = conn.execute(
                select(Send.send_key).where(Send.scenario_id == journey).order_by(Send.id.desc())
            ).scalars().first()  # fmt: skip
        assert key is not None, f"{journey} queued nothing"
        return str(key)

    def deliver(self, now: datetime) -> Any:
        self.state.clock.set(now)  # type: ignore[attr-defined]
        return self.dispatcher.run_once(now)

    def send(self, key: str) -> Any:
        with self.state.engine.connect() as conn:
            return conn.execute(select(Send).where(Send.send_key == key)).one()

    def journal(self, key: str) -> list[Any]:
        with self.state.engine.connect() as conn:
            rows = conn.execute(select(JournalEntry).order_by(JournalEntry.id)).all()
        return [r for r in rows if (r.data or {}).get("send_key") == key]

    def enrollment(self, key: str) -> tuple[str, str | None]:
        with self.state.engine.connect() as conn:
            row = conn.execute(
                select(Enrollment.status, Enrollment.step_id)
                .join(Send, Send.enrollment_id == Enrollment.id)
                .where(Send.send_key == key)
            ).one()
        return row.status, row.step_id


@pytest.fixture
def shop(app: Flask) -> Iterator[Shop]:
    made = Shop(app.test_client(), app.extensions["parcours"])
    yield made
    made.dispatcher.close()


# --- the ways a contact withdraws ----------------------------------------------------------------

Withdraw = Callable[[Shop, int, str, datetime], None]


def one_click(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """The RFC 8058 POST a mail provider makes on the signed link of an earlier email."""
    token = unsubscribe_token(shop.state.secret, contact_id, "email", "promotions", key, now)
    answer = shop.client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200, answer.get_data(as_text=True)


def preference_page(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """Every topic unticked on the preference page."""
    token = preferences_token(shop.state.secret, contact_id, "email", key, now)
    answer = shop.client.post(f"/p/{token}", data={})
    assert answer.status_code == 200, answer.get_data(as_text=True)


def consent_api(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """A global opt-out of email (topic `*`) through the consent API."""
    opt_out = {"channel": "email", "topic": "*", "state": "opted_out", "source": "api"}
    answer = shop.client.post("/api/contacts/anne/consents", json=opt_out, headers=KEY)
    assert answer.status_code == 201, answer.get_json()


def profile_flag(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """The contact's own opt-out flag, set through the contacts API."""
    answer = shop.client.put("/api/contacts/anne", json={"opted_out": True}, headers=KEY)
    assert answer.status_code == 200, answer.get_json()


def hard_bounce(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """Another email to the same address gets a 550: the address is suppressed."""
    other = shop.trigger("promo-email", now)
    mailbox: Smtp = shop.mailbox  # type: ignore[attr-defined]
    mailbox.replies[ANNE] = ["550 5.1.1 user unknown"]
    shop.deliver(now)
    assert shop.send(other).status == "bounced"


def spam_complaint(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """Another email is delivered, then the provider reports a spam complaint about it."""
    other = shop.trigger("promo-email", now)
    shop.deliver(now)
    sent = shop.send(other)
    assert sent.status == "sent"
    body = json.dumps({"message_id": sent.provider_id, "event": "complained"}).encode()
    signature = {"X-Signature": "sha256=" + callback_signature(EMAIL_SECRET, body)}
    answer = shop.client.post("/hooks/email/events", data=body, headers=signature,
                              content_type="application/json")  # fmt: skip
    assert answer.status_code == 200, answer.get_data(as_text=True)


def sms_stop(shop: Shop, contact_id: int, key: str, now: datetime) -> None:
    """The contact replies STOP; the provider forwards it, signed."""
    body = json.dumps({"id": "in-1", "from": PHONE, "text": "STOP"}).encode()
    signature = {"X-Signature": "sha256=" + callback_signature(SMS_SECRET, body)}
    answer = shop.client.post("/hooks/sms/inbound", data=body, headers=signature,
                              content_type="application/json")  # fmt: skip
    assert answer.status_code == 200, answer.get_data(as_text=True)


PATHS: dict[str, tuple[str, Withdraw, str]] = {
    "one-click": ("email", one_click, "consent:promotions:opted_out"),
    "preference-page": ("email", preference_page, "consent:promotions:opted_out"),
    "consent-api": ("email", consent_api, "consent:promotions:opted_out"),
    "profile-flag": ("email", profile_flag, "consent:all:opted_out"),
    "hard-bounce": ("email", hard_bounce, "suppression:hard_bounce"),
    "spam-complaint": ("email", spam_complaint, "suppression:spam_complaint"),
    "sms-stop": ("sms", sms_stop, "consent:promotions:opted_out"),
}


def defer_next(shop: Shop, mailbox: Smtp, sms: Sms, channel: str, count: int) -> None:
    """The server refuses the next `count` messages for now (a 451, or an HTTP 503)."""
    if channel == "email":
        mailbox.replies[ANNE] = [DEFERRED] * count
    else:
        sms.refusals.extend([503] * count)


def arrived(mailbox: Smtp, sms: Sms, channel: str) -> list[str]:
    """What reached the server: email subjects, or SMS texts."""
    if channel == "email":
        return [str(m["Subject"]) for m in mailbox.arrived]
    return sms.texts()


@pytest.mark.parametrize("path", list(PATHS))
def test_a_withdrawal_cancels_the_queued_marketing_message_and_lets_transactional_through(
    shop: Shop, mailbox: Smtp, sms: Sms, path: str
) -> None:
    channel, withdraw, reason = PATHS[path]
    shop.mailbox = mailbox  # type: ignore[attr-defined]
    contact_id = shop.contact()
    promo = shop.trigger(f"promo-{channel}", T0)
    receipt = shop.trigger(f"receipt-{channel}", T0)
    defer_next(shop, mailbox, sms, channel, 2)
    first = shop.deliver(T0)
    assert (first.claimed, first.retried, first.sent) == (2, 2, 0)
    assert shop.send(promo).status == "queued" and shop.send(receipt).status == "queued"
    assert arrived(mailbox, sms, channel) == []
    enrollment = shop.enrollment(promo)

    withdraw(shop, contact_id, promo, T0 + timedelta(seconds=10))
    before = arrived(mailbox, sms, channel)

    # The server has recovered; both messages are due again.
    retry = shop.deliver(T0 + timedelta(minutes=5))
    new = arrived(mailbox, sms, channel)[len(before) :]
    assert not any(f"promo-{channel}" in text for text in new), f"{path}: the promo went out"
    assert any(f"receipt-{channel}" in text for text in new), f"{path}: the receipt was held"
    assert (retry.claimed, retry.cancelled, retry.sent) == (2, 1, 1)
    cancelled = shop.send(promo)
    assert (cancelled.status, cancelled.error) == ("cancelled", reason)
    assert cancelled.lease_owner is None and cancelled.provider_id is None
    assert shop.send(receipt).status == "sent"
    [entry] = [j for j in shop.journal(promo) if j.kind == "cancelled"]
    assert (entry.reason, entry.contact_id, entry.scenario_id, entry.step_id) == (
        reason, contact_id, f"promo-{channel}", "message",
    )  # fmt: skip
    assert entry.data["channel"] == channel
    assert shop.enrollment(promo) == enrollment  # the journey carries on as it was

    # Nothing more later: a cancelled message is never claimed again.
    assert shop.deliver(T0 + timedelta(hours=7)).claimed == 0


def test_a_double_opt_in_confirmation_reaches_a_contact_opted_out_of_everything(
    shop: Shop, mailbox: Smtp
) -> None:
    client = shop.client
    shop.contact()
    assert client.put("/api/contacts/anne", json={"opted_out": True}, headers=KEY).status_code
    opt_out = {"channel": "email", "topic": "*", "state": "opted_out", "source": "api"}
    assert client.post("/api/contacts/anne/consents", json=opt_out, headers=KEY).status_code == 201
    mailbox.replies[ANNE] = [DEFERRED]
    sign_up = {"channel": "email", "topic": "newsletter", "state": "opted_in", "source": "form"}
    answer = client.post("/api/contacts/anne/consents", json=sign_up, headers=KEY)
    assert answer.status_code == 202, answer.get_json()
    key = answer.get_json()["confirmation"]["send_key"]
    assert shop.deliver(T0).retried == 1
    retry = shop.deliver(T0 + timedelta(minutes=5))
    assert (retry.sent, retry.cancelled) == (1, 0)
    assert [str(m["Subject"]) for m in mailbox.arrived] == ["Please confirm your subscription"]
    assert shop.send(key).status == "sent"


def test_the_re_check_reads_consent_and_suppression_once_per_batch(shop: Shop) -> None:
    """The statements a delivery pass runs do not grow with the number of messages it cancels."""
    state = shop.state
    shop.dispatcher.recheck_after = timedelta(0)  # the message kept is asked again at hand-over
    shop.contact("kept", "kept@example.org", "+33600000099")

    def pass_with_withdrawn(count: int, now: datetime) -> int:
        names = [f"c{now.minute}-{n}" for n in range(count)]
        for n, name in enumerate(names):
            shop.contact(name, f"{name}@example.org", f"+3361000{now.minute:02d}{n:03d}")
            shop.trigger("promo-email", now, who=name)
        shop.trigger("promo-email", now, who="kept")
        for name in names:
            opt_out = {"channel": "email", "topic": "*", "state": "opted_out", "source": "api"}
            answer = shop.client.post(f"/api/contacts/{name}/consents", json=opt_out,
                                      headers=KEY)  # fmt: skip
            assert answer.status_code == 201
        statements: list[str] = []

        def count_it(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(state.engine, "before_cursor_execute", count_it)
        try:
            report = shop.deliver(now)
        finally:
            event.remove(state.engine, "before_cursor_execute", count_it)
        assert (report.claimed, report.cancelled, report.sent) == (count + 1, count, 1)
        return len(statements)

    few = pass_with_withdrawn(2, T0 + timedelta(minutes=1))
    many = pass_with_withdrawn(20, T0 + timedelta(minutes=2))
    assert few == many


def test_a_withdrawal_during_the_batch_reaches_the_messages_not_handed_over_yet(
    shop: Shop, mailbox: Smtp
) -> None:
    """Bob opts out while the SMTP server is receiving Anne's email of the same batch."""
    state = shop.state
    from engine.policy.consent import record_consent

    shop.contact()
    bob = shop.contact("bob", "bob@example.org", "+33612345679")
    shop.trigger("promo-email", T0)
    later = shop.trigger("promo-email", T0, who="bob")
    received = mailbox.handle_DATA

    async def opt_out_bob_meanwhile(server: Any, session: Any, envelope: Any) -> str:
        with state.engine.begin() as conn:
            record_consent(conn, bob, "email", "*", "opted_out", "operator", T0)
        return await received(server, session, envelope)

    mailbox.handle_DATA = opt_out_bob_meanwhile  # type: ignore[method-assign]
    # As in a pass slower than a second, which asks each message again at its hand-over.
    shop.dispatcher.recheck_after = timedelta(0)
    report = shop.deliver(T0)
    assert (report.claimed, report.sent, report.cancelled) == (2, 1, 1)
    assert [str(m["To"]) for m in mailbox.arrived] == [ANNE]
    assert (shop.send(later).status, shop.send(later).error) == (
        "cancelled", "consent:promotions:opted_out",
    )  # fmt: skip
    assert [j.reason for j in shop.journal(later) if j.kind == "cancelled"] == [
        "consent:promotions:opted_out"
    ]
    # `parcours outbox` says which messages were cancelled, and why.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env["PARCOURS_DATABASE_URL"] = state.engine.url.render_as_string(hide_password=False)
    env["PARCOURS_DATA_DIR"] = str(state.settings.data_dir)
    shown = subprocess.run(
        [sys.executable, "-c", "from designer.cli import main; main()", "outbox"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = {line.split()[-3]: line for line in shown.stdout.splitlines()}
    assert "cancelled (consent:promotions:opted_out)" in lines["bob"], shown.stdout
    assert " sent " in lines["anne"], shown.stdout
