"""The SMTP email channel against a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from channels import email_mime
from channels.config import resolve_secrets
from channels.email_smtp import SmtpChannel, SmtpSettings, smtp_channel_from_config
from channels.errors import (
    AmbiguousDeliveryError,
    ChannelConfigError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.message import OutboundMessage
from tests.tls import self_signed

NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
SUBJECT = "Été -20 % pour Zoë"
TEXT = "Bonjour Zoë,\n\nÉté : -20 % sur tout.\n.line starting with a dot\n"
HTML = "<p>Bonjour <b>Zoë</b>,</p>\n<p>Été : -20 %</p>\n"
UNSUB = "https://shop.example.com/u/1?t=sig.abc-DEF_123"
README = Path(__file__).resolve().parents[2] / "channels" / "README.md"


# --- the server --------------------------------------------------------------------------------


@dataclass
class Arrived:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any
    tls: bool
    login: bytes | None

    @property
    def email(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed


class Recorder:
    """An aiosmtpd handler that keeps what arrived and can refuse or stall on demand."""

    def __init__(self) -> None:
        self.arrived: list[Arrived] = []
        self.ehlos = 0
        self.rcpt_replies: dict[str, str] = {}
        self.rcpt_delay = 0.0
        self.data_delay = 0.0

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        await asyncio.sleep(self.rcpt_delay)
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.arrived.append(
            Arrived(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                session.peer,
                session.ssl is not None,
                login,
            )
        )
        await asyncio.sleep(self.data_delay)
        return "250 OK queued"


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


class Servers:
    """Starts aiosmtpd servers with the given options; `stop()` stops the running ones."""

    def __init__(self, handler: Recorder) -> None:
        self.handler = handler
        self.running: list[Controller] = []

    def __call__(self, port: int | None = None, **options: Any) -> int:
        port = port or free_port()
        controller = Controller(self.handler, hostname="127.0.0.1", port=port, **options)
        controller.start()
        self.running.append(controller)
        return port

    def stop(self) -> None:
        while self.running:
            self.running.pop().stop()


@pytest.fixture
def serve(recorder: Recorder) -> Iterator[Servers]:
    servers = Servers(recorder)
    yield servers
    servers.stop()


@pytest.fixture
def channels_() -> Iterator[list[SmtpChannel]]:
    made: list[SmtpChannel] = []
    yield made
    for channel in made:
        channel.close()


@pytest.fixture
def make_channel(channels_: list[SmtpChannel]) -> Any:
    def make(port: int, **overrides: Any) -> SmtpChannel:
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "timeout": 5.0,
            "from_address": "news@shop.example.com",
            "from_name": "Boutique Zoë",
            "reply_to": "care@shop.example.com",
            "local_hostname": "sender.example.com",
            "unsubscribe_mailto": "unsubscribe@shop.example.com",
        } | overrides
        channel = SmtpChannel(SmtpSettings(**options), clock=lambda: NOW)
        channels_.append(channel)
        return channel

    return make


def outbound(send_key: str = "v1:e42:welcome:0", **changes: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "send_key": send_key,
        "channel": "email",
        "recipient": {"external_id": "c-42", "email": "zoe@example.org", "name": "Zoë Dupré"},
        "parts": {"subject": SUBJECT, "text": TEXT, "html": HTML},
        "topic": "promotions",
        "kind": "marketing",
        "metadata": {"unsubscribe_url": UNSUB},
    } | changes
    return OutboundMessage(**values)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (certificate, key)."""
    return self_signed(tmp_path_factory.mktemp("tls"), "localhost", ("127.0.0.1",))


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


# --- the message that arrives ------------------------------------------------------------------


def test_marketing_email_arrives_with_every_header_and_both_parts(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    receipt = make_channel(serve()).send(outbound())

    [arrived] = recorder.arrived
    assert arrived.mail_from == "news@shop.example.com"
    assert arrived.rcpt_tos == ["zoe@example.org"]
    assert arrived.content.isascii()  # 7-bit clean: non-ASCII travels encoded
    head = arrived.content.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: =?utf-8?" in head
    msg = arrived.email
    assert msg["Subject"] == SUBJECT
    assert msg["From"].addresses[0].display_name == "Boutique Zoë"
    assert msg["From"].addresses[0].addr_spec == "news@shop.example.com"
    assert msg["To"].addresses[0].display_name == "Zoë Dupré"
    assert msg["Reply-To"] == "care@shop.example.com"
    assert parsedate_to_datetime(msg["Date"]) == NOW
    expected_id = f"<{hashlib.sha256(b'v1:e42:welcome:0').hexdigest()[:32]}@shop.example.com>"
    assert msg["Message-ID"] == expected_id
    assert receipt.provider_id == expected_id and receipt.status == "sent"
    assert msg["List-Unsubscribe"] == f"<{UNSUB}>, <mailto:unsubscribe@shop.example.com>"
    assert msg.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert msg["Precedence"] == "bulk"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Parcours-Send-Key"] == "v1:e42:welcome:0"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    # Text travels in canonical CRLF form; the leading dot survived dot-stuffing.
    assert lf(text.get_content()) == TEXT
    assert lf(html.get_content()) == HTML


def test_message_id_is_stable_across_a_retry_and_differs_between_sends(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    channel = make_channel(serve())
    first = channel.send(outbound("v1:e42:welcome:0"))
    retry = channel.send(outbound("v1:e42:welcome:0"))
    other = channel.send(outbound("v1:e42:welcome:1"))
    ids = [a.email["Message-ID"] for a in recorder.arrived]
    assert ids[0] == ids[1] == first.provider_id == retry.provider_id
    assert ids[2] == other.provider_id != ids[0]


def test_transactional_email_needs_no_unsubscribe_and_is_not_bulk(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    make_channel(serve()).send(outbound(kind="transactional", metadata={}))
    msg = recorder.arrived[0].email
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "Precedence", "Auto-Submitted"):
        assert msg[name] is None, name


@pytest.mark.parametrize(("parts", "content_type"), [
    ({"subject": SUBJECT, "text": TEXT}, "text/plain"),
    ({"subject": SUBJECT, "html": HTML, "text": "  "}, "text/html"),
])  # fmt: skip
def test_a_single_part_is_sent_alone(
    serve: Servers, make_channel: Any, recorder: Recorder, parts: dict[str, str], content_type: str
) -> None:
    make_channel(serve()).send(outbound(parts=parts))
    msg = recorder.arrived[0].email
    assert msg.get_content_type() == content_type
    assert not msg.is_multipart()
    assert lf(msg.get_content()) == (TEXT if content_type == "text/plain" else HTML)


def test_metadata_overrides_the_sender_per_scenario(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    meta = {
        "unsubscribe_url": UNSUB,
        "from_address": "club@club.example.net",
        "from_name": "Le Club",
        "reply_to": "club-care@club.example.net",
        "list_id": "club.example.net",
    }
    make_channel(serve()).send(outbound(metadata=meta))
    arrived = recorder.arrived[0]
    msg = arrived.email
    assert str(msg["From"]) == "Le Club <club@club.example.net>"
    assert msg["Reply-To"] == "club-care@club.example.net"
    assert msg["List-Id"] == "<club.example.net>"
    assert arrived.mail_from == "club@club.example.net"  # no envelope_from configured


def test_a_long_unsubscribe_url_is_not_folded_into_encoded_words(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    url = "https://shop.example.com/unsubscribe/" + "x" * 300 + "?token=" + "A1b2" * 40
    make_channel(serve(), envelope_from="bounces@shop.example.com").send(
        outbound(metadata={"unsubscribe_url": url})
    )
    arrived = recorder.arrived[0]
    assert arrived.mail_from == "bounces@shop.example.com"
    assert f"<{url}>".encode() in arrived.content
    assert arrived.email["List-Unsubscribe"] == f"<{url}>, <mailto:unsubscribe@shop.example.com>"


# --- refused before connecting -----------------------------------------------------------------


def test_marketing_without_unsubscribe_url_is_refused(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    with pytest.raises(PermanentChannelError, match="unsubscribe_url"):
        make_channel(serve()).send(outbound(metadata={}))
    assert recorder.ehlos == 0 and recorder.arrived == []


INJECTIONS = [
    ({"parts": {"subject": "Hi\r\nBcc: x@evil.example", "text": "t"}}, "subject"),
    ({"parts": {"subject": "Hi\nBcc: x@evil.example", "text": "t"}}, "subject"),
    ({"parts": {"subject": "Hi\rBcc: x@evil.example", "text": "t"}}, "subject"),
    ({"parts": {"subject": "Hi\n", "text": "t"}}, "subject"),
    ({"parts": {"subject": "Hi\x00there", "text": "t"}}, "subject"),
    ({"parts": {"subject": "Hi\u2028Bcc: x@evil.example", "text": "t"}}, "subject"),
    ({"parts": {"subject": "=?UTF-8?Q?=0A?=Bcc: x@evil.example", "text": "t"}}, "Subject"),
    ({"parts": {"subject": "a =?utf-8?q?=0D=0ABcc:_x@evil.example?= b", "text": "t"}}, "Subject"),
    ({"recipient": {"email": "zoe@example.org\r\nBcc: x@evil.example"}}, "recipient.email"),
    (
        {"recipient": {"email": "zoe@example.org", "name": "Zoë\r\nBcc: x@evil.example"}},
        "recipient.name",
    ),
    (
        {"metadata": {"unsubscribe_url": UNSUB, "from_name": "Shop\nBcc: x@evil.example"}},
        "from_name",
    ),
    (
        {
            "metadata": {
                "unsubscribe_url": UNSUB,
                "reply_to": "a@shop.example.com\r\nBcc: x@evil.example",
            }
        },
        "reply_to",
    ),
    ({"metadata": {"unsubscribe_url": UNSUB + "\r\nBcc: x@evil.example"}}, "unsubscribe_url"),
    ({"send_key": "k\r\nBcc: x@evil.example"}, "send_key"),
]


@pytest.mark.parametrize(("changes", "field"), INJECTIONS)
def test_header_injection_is_refused_and_nothing_reaches_the_server(
    serve: Servers, make_channel: Any, recorder: Recorder, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(PermanentChannelError, match=re.escape(field)) as caught:
        make_channel(serve()).send(outbound(**changes))
    assert "evil" not in str(caught.value)  # errors name the field, not the value
    assert recorder.ehlos == 0 and recorder.arrived == []


def test_the_serialised_bytes_are_checked_even_if_an_input_check_misses(
    serve: Servers, make_channel: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Second layer: this CPython folds a decoded encoded-word newline into a real header break."""

    def unchecked_set(msg: EmailMessage, name: str, value: Any) -> None:
        msg[name] = value

    monkeypatch.setattr(email_mime, "_set", unchecked_set)
    subject = "=?UTF-8?Q?=0A?=Bcc: x@evil.example"
    with pytest.raises(PermanentChannelError, match="serialised headers differ"):
        make_channel(serve()).send(outbound(parts={"subject": subject, "text": "t"}))
    assert recorder.ehlos == 0 and recorder.arrived == []


@pytest.mark.parametrize("address", [
    "not-an-address", "zoe@", "@example.org", "zoe@localhost", '"zoe"@example.org', "zoe@exa mple.org",
    "zoe@example.org, eve@evil.example", "Zoë <zoe@example.org>", "zoë@example.org", "zoe@-example.org", "zoe..x@example.org",
])  # fmt: skip
def test_invalid_recipient_addresses_are_refused(
    serve: Servers, make_channel: Any, recorder: Recorder, address: str
) -> None:
    with pytest.raises(PermanentChannelError, match=r"recipient\.email"):
        make_channel(serve()).send(outbound(recipient={"email": address}))
    assert recorder.ehlos == 0


def test_an_internationalised_domain_is_sent_as_punycode(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    make_channel(serve()).send(outbound(recipient={"email": "zoe@bücher.example"}))
    assert recorder.arrived[0].rcpt_tos == ["zoe@xn--bcher-kva.example"]


@pytest.mark.parametrize(
    "url",
    [
        "http://shop.example.com/u/1",
        "https://shop.example.com/u/a b",
        "mailto:u@shop.example.com",
        "https:///nohost",
    ],
)
def test_the_unsubscribe_url_must_be_https(serve: Servers, make_channel: Any, url: str) -> None:
    with pytest.raises(PermanentChannelError, match="https"):
        make_channel(serve()).send(outbound(metadata={"unsubscribe_url": url}))


# --- replies and failures ----------------------------------------------------------------------


def test_550_is_a_hard_bounce_and_the_connection_stays_usable(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    recorder.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: user unknown"
    channel = make_channel(serve())
    with pytest.raises(PermanentChannelError, match=r"550 5\.1\.1") as caught:
        channel.send(outbound(recipient={"email": "gone@example.org"}))
    assert not isinstance(caught.value, ChannelConfigError)
    assert caught.value.bounce  # the address goes on the suppression list
    assert "gone@example.org" not in str(caught.value)  # addresses stay out of error text
    channel.send(outbound())
    assert [a.rcpt_tos for a in recorder.arrived] == [["zoe@example.org"]]
    assert recorder.ehlos == 1  # the same connection carried on after RSET


def test_451_is_transient(serve: Servers, make_channel: Any, recorder: Recorder) -> None:
    recorder.rcpt_replies["zoe@example.org"] = "451 4.3.0 try later"
    with pytest.raises(TransientChannelError, match="451") as caught:
        make_channel(serve()).send(outbound())
    assert not isinstance(caught.value, AmbiguousDeliveryError)
    assert recorder.arrived == []


def test_greylisting_suggests_when_to_retry(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    recorder.rcpt_replies["zoe@example.org"] = "450 4.7.1 greylisted, come back later"
    with pytest.raises(TransientChannelError) as caught:
        make_channel(serve()).send(outbound())
    assert caught.value.retry_after == 300.0


def test_no_server_listening_is_transient(make_channel: Any) -> None:
    with pytest.raises(TransientChannelError, match="cannot connect") as caught:
        make_channel(free_port()).send(outbound())
    assert caught.value.retry_after is not None


def test_a_timeout_before_the_data_is_transient_not_ambiguous(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    recorder.rcpt_delay = 1.5
    with pytest.raises(TransientChannelError, match="RCPT TO") as caught:
        make_channel(serve(), timeout=0.4).send(outbound())
    assert not isinstance(caught.value, AmbiguousDeliveryError)
    assert recorder.arrived == []


def test_a_timeout_after_the_data_is_ambiguous(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    recorder.data_delay = 1.5
    with pytest.raises(AmbiguousDeliveryError, match="may have been accepted"):
        make_channel(serve(), timeout=0.4).send(outbound())
    assert len(recorder.arrived) == 1  # the server did receive it: a blind resend would duplicate


def test_one_connection_is_reused_and_rebuilt_when_the_server_drops_it(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    port = serve()
    channel = make_channel(port)
    channel.send(outbound("k1"))
    channel.send(outbound("k2"))
    assert recorder.ehlos == 1
    assert recorder.arrived[0].peer == recorder.arrived[1].peer
    # Restart the server: the open connection dies; the next send reconnects transparently.
    serve.stop()
    serve(port)
    channel.send(outbound("k3"))
    assert recorder.ehlos == 2
    assert [a.email["X-Parcours-Send-Key"] for a in recorder.arrived] == ["k1", "k2", "k3"]


# --- TLS and AUTH ------------------------------------------------------------------------------


def test_starttls_with_a_trusted_certificate_delivers_over_tls(
    serve: Servers, make_channel: Any, recorder: Recorder, certificate: tuple[Path, Path]
) -> None:
    port = serve(tls_context=server_tls(certificate), require_starttls=True)
    make_channel(port, security="starttls", ca_file=str(certificate[0])).send(outbound())
    [arrived] = recorder.arrived
    assert arrived.tls
    assert arrived.email["Subject"] == SUBJECT


def test_implicit_tls_delivers(
    serve: Servers, make_channel: Any, recorder: Recorder, certificate: tuple[Path, Path]
) -> None:
    port = serve(ssl_context=server_tls(certificate))
    make_channel(port, security="ssl", ca_file=str(certificate[0])).send(outbound())
    assert len(recorder.arrived) == 1


def test_an_untrusted_certificate_is_a_configuration_error(
    serve: Servers, make_channel: Any, recorder: Recorder, certificate: tuple[Path, Path]
) -> None:
    port = serve(tls_context=server_tls(certificate), require_starttls=True)
    with pytest.raises(ChannelConfigError, match="not trusted"):
        make_channel(port, security="starttls").send(outbound())  # system trust store only
    assert recorder.arrived == []


def test_starttls_missing_is_refused_rather_than_sending_in_clear(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    with pytest.raises(ChannelConfigError, match="STARTTLS"):
        make_channel(serve(), security="starttls").send(outbound())
    assert recorder.ehlos == 1 and recorder.arrived == []


class Accounts:
    def __init__(self) -> None:
        self.mechanisms: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.mechanisms.append(mechanism)
        ok = isinstance(auth_data, LoginPassword) and auth_data == (b"parcours", b"s3cret-pw")
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_with_the_right_password_delivers(
    serve: Servers, make_channel: Any, recorder: Recorder, mechanism: str
) -> None:
    accounts = Accounts()
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    port = serve(authenticator=accounts, auth_require_tls=False, auth_exclude_mechanism=[other])
    make_channel(port, username="parcours", password="s3cret-pw").send(outbound())
    assert accounts.mechanisms == [mechanism]
    assert recorder.arrived[0].login == b"parcours"


def test_auth_with_a_wrong_password_is_a_configuration_error(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    port = serve(authenticator=Accounts(), auth_require_tls=False)
    with pytest.raises(ChannelConfigError, match="535") as caught:
        make_channel(port, username="parcours", password="wrong-pw-123").send(outbound())
    assert isinstance(caught.value, PermanentChannelError)
    assert "wrong-pw-123" not in str(caught.value)
    assert recorder.arrived == []


def test_the_password_never_shows_in_repr() -> None:
    settings = SmtpSettings(
        host="smtp.example.com",
        from_address="a@shop.example.com",
        username="u",
        password="hunter2-secret",
    )
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(SmtpChannel(settings))


def test_auth_in_clear_is_refused_off_loopback() -> None:
    with pytest.raises(ChannelConfigError, match="unencrypted"):
        SmtpSettings(
            host="smtp.example.com",
            from_address="a@shop.example.com",
            security="none",
            username="u",
            password="p",
        )


def test_smtp_is_not_an_idempotent_provider() -> None:
    assert SmtpChannel.info.name == "email"
    assert SmtpChannel.info.idempotent_provider is False


def test_close_sends_quit_and_a_later_send_reconnects(
    serve: Servers, make_channel: Any, recorder: Recorder
) -> None:
    channel = make_channel(serve())
    channel.send(outbound("k1"))
    channel.close()
    channel.close()  # idempotent
    channel.send(outbound("k2"))
    assert recorder.ehlos == 2 and len(recorder.arrived) == 2


# --- configuration -----------------------------------------------------------------------------


def test_resolve_secrets_substitutes_nested_references() -> None:
    config = {
        "password": "${SMTP_PASSWORD}",
        "nested": {"list": ["a-${USER_}-b", 3]},
        "port": 587,
        "literal": "$${NOT_A_REF}",
    }
    resolved = resolve_secrets(config, {"SMTP_PASSWORD": "pw", "USER_": "me"})
    assert resolved == {
        "password": "pw",
        "nested": {"list": ["a-me-b", 3]},
        "port": 587,
        "literal": "${NOT_A_REF}",
    }
    assert config["password"] == "${SMTP_PASSWORD}"  # the input is left alone


def test_an_unset_variable_names_the_key_and_the_variable() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        resolve_secrets({"smtp": {"password": "${SMTP_PASSWORD}"}}, {"OTHER": "x"})
    assert "smtp.password" in str(caught.value) and "SMTP_PASSWORD" in str(caught.value)


@pytest.mark.parametrize("value", ["${hunter2 secret}", "${hunter2-secret", "${}"])
def test_a_malformed_reference_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ChannelConfigError, match="password") as caught:
        resolve_secrets({"password": value}, {})
    assert "hunter2" not in str(caught.value)


def test_smtp_channel_from_config_reads_a_plain_mapping(
    serve: Servers, recorder: Recorder, channels_: list[SmtpChannel]
) -> None:
    port = serve(authenticator=Accounts(), auth_require_tls=False)
    config = {
        "host": "127.0.0.1",
        "port": "${SMTP_PORT}",
        "security": "none",
        "username": "parcours",
        "password": "${SMTP_PASSWORD}",
        "timeout": 5,
        "from_address": "news@shop.example.com",
        "from_name": "Boutique",
    }
    channel = smtp_channel_from_config(
        config, {"SMTP_PORT": str(port), "SMTP_PASSWORD": "s3cret-pw"}
    )
    channels_.append(channel)
    assert channel.settings.port == port and channel.settings.password == "s3cret-pw"
    channel.send(outbound())
    assert recorder.arrived[0].login == b"parcours"


def test_config_errors_are_reported_together_with_hints_and_without_secrets() -> None:
    config = {
        "hots": "smtp.example.com",
        "port": "many",
        "password": "${PW}",
        "from_address": "news@shop.example.com",
    }
    with pytest.raises(ChannelConfigError) as caught:
        smtp_channel_from_config(config, {"PW": "topsecret-value"})
    message = str(caught.value)
    assert "unknown key 'hots' (did you mean 'host'?)" in message
    assert "'port' must be a number" in message
    assert "'host' is required" in message
    assert "topsecret-value" not in message


def test_every_configuration_key_is_documented() -> None:
    readme = README.read_text(encoding="utf-8")
    for setting in fields(SmtpSettings):
        assert f"| `{setting.name}` |" in readme, setting.name
