"""Double opt-in confirmations travel like any send: a form opt-in on a configured channel
queues the confirmation, the delivery loop hands it to the real provider (aiosmtpd, an SMS
provider fake on 127.0.0.1), a refusal is retried or bounced, and the link in the message that
arrived opts the contact in. Without a provider, the confirmation is in the outbox."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from designer import Parcours, create_app
from engine.config import load_settings
from engine.delivery.loop import DeliveryReport, Dispatcher, retry_delay, workspace_dispatcher
from engine.runtime.clock import VirtualClock
from engine.store.models import Event, Send, Suppression
from tests.sms import sms_server
from tests.smtp import Smtp, smtp_server

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
KEY = {"X-Api-Key": "k"}
ANNE = "anne@example.org"
PHONE = "+33612345678"
POLICY = """\
format_version: 1
topics:
  newsletter: Newsletter
consent:
  double_opt_in: [email, sms]
"""


@pytest.fixture
def smtp() -> Iterator[tuple[Smtp, int]]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def sms_provider() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with sms_server() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POLICY)
    return folder


@pytest.fixture
def mailbox(workspace: Path, smtp: tuple[Smtp, int]) -> Smtp:
    """The workspace's email goes to the aiosmtpd server; what it received."""
    handler, port = smtp
    (workspace / "channels.yaml").write_text(
        "email:\n"
        "  provider: smtp\n"
        "  host: 127.0.0.1\n"
        f"  port: {port}\n"
        "  security: none\n"
        "  from_address: news@shop.example\n"
        "  from_name: La Boutique\n"
    )
    return handler


@pytest.fixture
def app(engine_url: str, tmp_path: Path, workspace: Path) -> Iterator[Flask]:
    settings = load_settings(
        {}, database_url=engine_url, data_dir=tmp_path / "data", scenarios_dir=workspace,
        api_key="k", secret_key="s" * 32, public_url="https://shop.example",
    )  # fmt: skip
    app = create_app(settings, {"TESTING": True})
    app.extensions["parcours"].clock = VirtualClock(T0)
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def state(app: Flask) -> Parcours:
    found: Parcours = app.extensions["parcours"]
    return found


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


Deliver = Callable[[datetime], DeliveryReport]


@pytest.fixture
def deliver(state: Parcours) -> Iterator[Deliver]:
    """deliver(now): one pass of the delivery loop, built as `parcours up` builds it from the
    workspace (once the test has written its channels.yaml)."""
    loops: list[Dispatcher] = []

    def run(now: datetime) -> DeliveryReport:
        if not loops:
            made = workspace_dispatcher(state.engine, state.settings)
            assert made is not None
            loops.append(made)
        return loops[0].run_once(now)

    yield run
    for loop in loops:
        loop.close()


def sign_up(client: FlaskClient, channel: str = "email") -> str:
    """A form opt-in to the newsletter on `channel`; the confirmation's send key."""
    profile = {"email": ANNE, "phone": PHONE, "locale": "en-GB"}
    assert client.put("/api/contacts/anne", json=profile, headers=KEY).status_code == 200
    response = client.post(
        "/api/contacts/anne/consents",
        json={"channel": channel, "topic": "newsletter", "state": "opted_in", "source": "form",
              "wording": "Send me the newsletter", "wording_version": "nl-3"},
        headers=KEY,
    )  # fmt: skip
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["consent"]["state"] == "pending"
    key: str = response.get_json()["confirmation"]["send_key"]
    return key


def the_send(state: Parcours, key: str) -> Any:
    with state.engine.connect() as conn:
        return conn.execute(select(Send).where(Send.send_key == key)).one()


def follow(client: FlaskClient, text: str) -> None:
    """Follow the signed link found in a message, from the contact's browser."""
    [url] = re.findall(r"https://shop\.example/consent/confirm\?token=\S+", text)
    link = urlsplit(url)
    page = client.get(f"{link.path}?{link.query}", environ_base={"REMOTE_ADDR": "192.0.2.44"})
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "Subscription confirmed" in page.get_data(as_text=True)


def consents(client: FlaskClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/api/contacts/anne/consents", headers=KEY).get_json()
    return body


def assert_confirmed(client: FlaskClient, channel: str, key: str) -> None:
    body = consents(client)
    assert [(s["channel"], s["topic"], s["state"]) for s in body["consents"]] == [
        (channel, "newsletter", "opted_in")
    ]
    pending, confirmed = body["history"]
    assert (pending["state"], pending["source"]) == ("pending", "form")
    assert (confirmed["state"], confirmed["source"]) == ("opted_in", "double_opt_in")
    assert confirmed["ip"] == "192.0.2.44"
    assert confirmed["wording"] == "Send me the newsletter"
    assert confirmed["wording_version"] == "nl-3"
    assert confirmed["evidence"]["confirms_record"] == pending["id"]
    assert confirmed["evidence"]["send_key"] == key


def test_the_confirmation_email_reaches_the_smtp_server_and_its_link_opts_in(
    client: FlaskClient, state: Parcours, mailbox: Smtp, deliver: Deliver
) -> None:
    key = sign_up(client)
    send = the_send(state, key)
    assert (send.status, send.provider_id, send.attempts, send.sent_at) == ("queued", None, 0, None)
    assert not mailbox.arrived

    report = deliver(T0 + timedelta(seconds=5))
    assert (report.claimed, report.sent) == (1, 1)
    assert deliver(T0 + timedelta(seconds=6)).claimed == 0  # nothing twice
    [message] = mailbox.arrived
    assert str(message["To"]) == ANNE
    assert str(message["From"]) == "La Boutique <news@shop.example>"
    assert str(message["Subject"]) == "Please confirm your subscription"
    assert message["List-Unsubscribe"] is None  # transactional: no marketing headers
    send = the_send(state, key)
    assert send.status == "sent" and send.provider_id == str(message["Message-ID"])

    follow(client, message.get_body(("plain",)).get_content())
    assert_confirmed(client, "email", key)


def test_the_confirmation_sms_goes_to_the_sms_provider(
    client: FlaskClient,
    state: Parcours,
    workspace: Path,
    sms_provider: tuple[str, list[dict[str, Any]]],
    deliver: Deliver,
) -> None:
    url, received = sms_provider
    (workspace / "channels.yaml").write_text(
        f"sms:\n  provider: sms_http\n  url: {url}\n  sender: Boutique\n"
        "  allow: [127.0.0.1]\n  allow_http: true\n"
    )
    key = sign_up(client, "sms")
    assert the_send(state, key).status == "queued"
    assert deliver(T0).sent == 1
    [request] = received
    assert request["body"]["to"] == PHONE
    assert the_send(state, key).provider_id == "msg-1"
    follow(client, request["body"]["text"])
    assert_confirmed(client, "sms", key)


def test_a_refused_confirmation_is_retried_then_delivered(
    client: FlaskClient, state: Parcours, mailbox: Smtp, deliver: Deliver
) -> None:
    mailbox.replies[ANNE] = ["451 4.3.0 try later"]
    key = sign_up(client)
    assert deliver(T0).retried == 1
    send = the_send(state, key)
    assert (send.status, send.attempts) == ("queued", 1) and "451" in (send.error or "")
    assert send.next_attempt_at == T0 + retry_delay(1, key)
    assert deliver(send.next_attempt_at).sent == 1
    assert (the_send(state, key).status, the_send(state, key).attempts) == ("sent", 2)
    assert len(mailbox.arrived) == 1


def test_a_bounced_confirmation_suppresses_the_address(
    client: FlaskClient, state: Parcours, mailbox: Smtp, deliver: Deliver
) -> None:
    mailbox.replies[ANNE] = ["550 5.1.1 user unknown"]
    key = sign_up(client)
    assert deliver(T0).bounced == 1
    assert the_send(state, key).status == "bounced" and not mailbox.arrived
    with state.engine.connect() as conn:
        suppressed = conn.execute(select(Suppression)).one()
        bounced = conn.execute(select(Event).where(Event.name == "email_bounced")).one()
    assert (suppressed.channel, suppressed.address, suppressed.reason) == (
        "email", ANNE, "hard_bounce",
    )  # fmt: skip
    assert bounced.event_key == f"bounced:{key}"
    assert [s["state"] for s in consents(client)["consents"]] == ["pending"]


def test_without_a_provider_the_confirmation_is_in_the_outbox(
    client: FlaskClient,
    state: Parcours,
    engine_url: str,
    tmp_path: Path,
    workspace: Path,
    deliver: Deliver,
) -> None:
    # Only SMS has a provider: the email confirmation is kept by the outbox.
    (workspace / "channels.yaml").write_text(
        "sms:\n  provider: sms_http\n  url: http://127.0.0.1:9/v1\n  sender: Boutique\n"
        "  allow: [127.0.0.1]\n  allow_http: true\n"
    )
    key = sign_up(client)
    send = the_send(state, key)
    assert (send.status, send.provider_id) == ("sent", f"outbox:{key}")
    assert deliver(T0).claimed == 0

    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(PARCOURS_DATABASE_URL=engine_url, PARCOURS_DATA_DIR=str(tmp_path / "data"),
               PARCOURS_SCENARIOS_DIR=str(workspace))  # fmt: skip
    shown = subprocess.run(
        [sys.executable, "-c", "from designer.cli import main; main()", "outbox", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    [item] = json.loads(shown.stdout)
    assert (item["contact"], item["scenario"], item["channel"], item["status"]) == (
        "anne", "system:double-opt-in", "email", "sent",
    )  # fmt: skip
    assert item["send_key"] == key
    assert item["parts"]["subject"] == "Please confirm your subscription"
    follow(client, item["parts"]["text"])
    assert_confirmed(client, "email", key)


def test_a_broken_channels_file_refuses_the_opt_in_cleanly(
    client: FlaskClient, state: Parcours, workspace: Path
) -> None:
    (workspace / "channels.yaml").write_text("email:\n  provider: smpt\n")
    assert client.put("/api/contacts/anne", json={"email": ANNE}, headers=KEY).status_code == 200
    response = client.post(
        "/api/contacts/anne/consents",
        json={"channel": "email", "topic": "newsletter", "state": "opted_in", "source": "form"},
        headers=KEY,
    )
    assert response.status_code == 503
    assert response.get_json()["code"] == "channels_invalid"
    with state.engine.connect() as conn:
        assert conn.execute(select(Send)).first() is None
    assert consents(client)["consents"] == []
