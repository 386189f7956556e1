"""SMS: segment counting, STOP replies, the HTTP provider channel against a real local server,
and the provider's callbacks (delivery reports, inbound replies, signatures)."""

from __future__ import annotations

import base64
import email.utils
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from channels import OutboundMessage, PermanentChannelError, TransientChannelError
from channels.errors import AmbiguousDeliveryError, ChannelConfigError
from channels.sms_http import (
    InboundMapping,
    ReportMapping,
    SmsHttpChannel,
    SmsHttpSettings,
    SmsPayloadError,
    callback_signature,
    parse_delivery_report,
    parse_inbound,
    payload_from_body,
    sms_channel_from_config,
    verify_callback_signature,
)
from channels.sms_text import GSM7_BASIC, STOP_KEYWORDS, is_stop_reply, sms_encoding, sms_length

# ------------------------------------------------------------------ segments and encodings


@pytest.mark.parametrize(
    ("text", "length", "segments", "per_segment"),
    [
        ("", 0, 0, 160),
        ("a" * 160, 160, 1, 160),
        ("a" * 161, 161, 2, 153),
        ("a" * 153 * 2, 306, 2, 153),
        ("a" * (153 * 2 + 1), 307, 3, 153),
        ("€", 2, 1, 160),
        ("€" * 80, 160, 1, 160),  # 80 extension characters fill one segment exactly
        ("a" * 159 + "€", 161, 2, 153),  # the escape pushes it over
        # 306 septets, but the escape pair may not straddle segments 1 and 2: three segments
        ("a" * 152 + "€" + "a" * 152, 306, 3, 153),
    ],
)
def test_gsm7_length_and_segments(text: str, length: int, segments: int, per_segment: int) -> None:
    assert sms_length(text) == {
        "encoding": "GSM-7",
        "length": length,
        "segments": segments,
        "per_segment": per_segment,
    }


@pytest.mark.parametrize(
    ("text", "length", "segments"),
    [
        ("ê" * 70, 70, 1),
        ("ê" * 71, 71, 2),
        ("ê" * 67 * 2, 134, 2),
        ("ê" * (67 * 2 + 1), 135, 3),
        ("😀", 2, 1),  # one emoji = a surrogate pair = two UTF-16 units
        ("😀" * 35, 70, 1),
        ("😀" * 35 + "a", 71, 2),
        # 134 units, but the pair may not straddle segments 1 and 2: three segments
        ("ê" * 66 + "😀" + "ê" * 66, 134, 3),
    ],
)
def test_ucs2_length_and_segments(text: str, length: int, segments: int) -> None:
    facts = sms_length(text)
    assert (facts["encoding"], facts["length"], facts["segments"]) == ("UCS-2", length, segments)
    assert facts["per_segment"] == (70 if segments == 1 else 67)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Zoë", "UCS-2"),  # ë is not in GSM 03.38
        ("Été", "GSM-7"),  # É and é both are
        ("Ça va", "GSM-7"),  # upper-case Ç is in the table...
        ("ça va", "UCS-2"),  # ...lower-case ç is not
        ("fête", "UCS-2"),  # nor any circumflex
        ("éèùìòÇØøåÅÄÖÑÜäöñüàÆæßÉ", "GSM-7"),
        ("{[~^|\\]}€", "GSM-7"),  # the extension table
        ("Merci 🙂", "UCS-2"),
    ],
)
def test_encoding_follows_the_gsm_table(text: str, encoding: str) -> None:
    assert sms_encoding(text) == encoding
    assert sms_length(text)["encoding"] == encoding


def test_accented_letters_of_the_basic_set_count_one_septet_each() -> None:
    letters = "éèùìòÇØåÅÄÖÑÜäöñüà"
    assert set(letters) <= GSM7_BASIC
    assert sms_length(letters)["length"] == len(letters) == 18


def test_extension_characters_count_two_septets_each() -> None:
    assert sms_length("{[~^|\\]}€")["length"] == 18
    assert sms_length("Prix : 5€")["length"] == 10


def test_same_keys_and_values_as_the_designer_counter_away_from_boundaries() -> None:
    from designer.editor import sms_length as designer_sms_length

    for text in ("", "Bonjour Zoë", "a" * 400, "Promo {code} à 5€", "🙂" * 40, "Été"):
        assert sms_length(text) == designer_sms_length(text), text


# ------------------------------------------------------------------ STOP replies


# Carrier keywords and the refusals people actually write: each must opt out.
STOP_REPLIES = [
    ("STOP", "STOP"),
    ("Stop", "STOP"),
    ("stop", "STOP"),
    ("Stop!", "STOP"),
    (" Stop. ", "STOP"),
    ("STOP 36180", "STOP"),
    ("STOP36180", "STOP"),
    ("Stop merci", "STOP"),
    ("STOP svp 🙏", "STOP"),
    ("stop sms", "STOP SMS"),
    ("STOP-SMS", "STOP SMS"),
    ("STOPALL", "STOPALL"),
    ("stop all", "STOPALL"),
    (" arrêt ", "ARRET"),
    ("ARRÊT", "ARRET"),
    ("Arret 38100", "ARRET"),
    ("UNSUBSCRIBE", "UNSUBSCRIBE"),
    ("désabonner", "DESABONNER"),
    ("DÉSABONNEMENT", "DESABONNEMENT"),
    ("End", "END"),
    ("cancel", "CANCEL"),
    ("QUIT.", "QUIT"),
    ("opt out", "OPTOUT"),
    ("Revoke", "REVOKE"),
    # the usual French form, phrases, typos and other languages' keywords
    ("STOP PUB", "STOP PUB"),
    ("Stop pub", "STOP PUB"),
    ("STOP MESSAGES", "STOP MESSAGES"),
    ("stop it", "STOP IT"),
    ("Stop texting me", "STOP TEXTING ME"),
    ("Please stop texting me", "STOP TEXTING ME"),
    ("Unsubscribe me", "UNSUBSCRIBE ME"),
    ("REMOVE", "REMOVE"),
    ("remove me", "REMOVE ME"),
    ("stopp", "STOPP"),
    ("STOPPEN", "STOPPEN"),
    ("désinscrire", "DESINSCRIRE"),
    ("se désabonner", "SE DESABONNER"),
    ("Je veux me désinscrire", "JE VEUX ME DESINSCRIRE"),
    ("arrêter", "ARRETER"),
    # look-alike letters, repeated words, a trailing code of any length
    ("S\u0422\u041e\u0420", "STOP"),  # Cyrillic TE, O, ER
    ("\u0405\u03a4\u039f\u03a1", "STOP"),  # Cyrillic DZE, Greek TAU, OMICRON, RHO
    ("\uff33\uff34\uff2f\uff30", "STOP"),  # full-width letters
    ("STOP STOP", "STOP"),
    ("stop, stop, STOP!!", "STOP"),
    ("STOP123456789", "STOP"),
    ("STOP 123456789", "STOP"),
]


@pytest.mark.parametrize(("text", "keyword"), STOP_REPLIES)
def test_stop_replies_match(text: str, keyword: str) -> None:
    assert is_stop_reply(text) == keyword


# Ordinary messages that contain a keyword: none may opt anybody out.
NOT_STOP = [
    "don't stop sending",
    "stop sending me offers please",
    "36180",
    "merci",
    "",
    "stopper",
    "the end",
    "Arrêtez de m'écrire",  # free text: for a person to read, not an automatic opt-out
    "START",
    "Don't stop",
    "Never stop",
    "stop by the store tomorrow",
    "I will not stop buying",
    "Can't stop loving this shop",
    "Stop! That's a great deal",
    "stop it, this is hilarious 😂",
    "remove me? no way, I love it",
    "When does the offer end?",
    "end of season sale?",
    "Cancel my order 1234",
    "I want to cancel my appointment",
    "Quit joking, is this real?",
    "Please remove item 3 from my basket",
    "Arrêt de bus devant le magasin ?",
    "À quelle heure vous arrêtez ?",
    "Je ne veux pas me désinscrire",
    "Je veux me désinscrire de la newsletter email, pas des SMS",
    "Le STOP c'est quoi ?",
    "STOPPING BY LATER",
    "stops",
    "stop2win",
    "Top promo !",
    "OK merci",
    "Unsubscribe? never!",
    "Can I pause instead of stop?",
    "p\u043e\u0441\u0442",  # Cyrillic letters that look like nothing we match
]


@pytest.mark.parametrize("text", NOT_STOP)
def test_other_replies_do_not_match(text: str) -> None:
    assert is_stop_reply(text) is None


def test_stop_corpus_counts() -> None:
    """Every refusal honoured, no false opt-out: the figures SMS.md quotes."""
    honoured = sum(is_stop_reply(text) == keyword for text, keyword in STOP_REPLIES)
    false_opt_outs = sum(is_stop_reply(text) is not None for text in NOT_STOP)
    assert (honoured, len(STOP_REPLIES)) == (46, 46)
    assert (false_opt_outs, len(NOT_STOP)) == (0, 36)


# ------------------------------------------------------------------ a real provider on 127.0.0.1


@dataclass
class Arrived:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeProvider:
    url: str
    requests: list[Arrived] = field(default_factory=list)
    status: int = 200
    reply_body: bytes = b'{"id": "prov-1"}'
    reply_headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    port: int = 0

    def reply(self, status: int, body: Any, **headers: str) -> None:
        self.status = status
        self.reply_body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.reply_headers = headers


@contextmanager
def fake_provider(host: str = "127.0.0.1") -> Iterator[FakeProvider]:
    """A provider's API listening on `host` until the block ends."""
    fake = FakeProvider(url="")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(size)
            fake.requests.append(Arrived(self.command, self.path, dict(self.headers), body))
            time.sleep(fake.delay)
            self.send_response(fake.status)
            for name, value in fake.reply_headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(fake.reply_body)))
            try:
                self.end_headers()
                self.wfile.write(fake.reply_body)
            except ConnectionError:
                pass  # the client gave up waiting (the timeout test)

        do_POST = do_PUT = do_GET = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    fake.port = server.server_address[1]
    fake.url = f"http://{host}:{fake.port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with fake_provider() as fake:
        yield fake


# The fake listens on 127.0.0.1 over plain http: like an on-premise gateway, it must be allowed.
LOCAL: dict[str, Any] = {"allow": ("127.0.0.1",), "allow_http": True}


def sms(
    text: str = "Bonjour Zoë 🙂", phone: Any = "+33612345678", key: str = "v1:e7:s3:0"
) -> OutboundMessage:
    return OutboundMessage(key, "sms", {"phone": phone}, {"text": text})


def test_builtin_json_request(provider: FakeProvider) -> None:
    settings = SmsHttpSettings(
        **LOCAL,
        url=provider.url + "/v1/sms?account=42",
        sender="Parcours",
        auth="bearer",
        token="tok-secret-123",
    )
    provider.reply(201, {"id": "msg-9f"})

    receipt = SmsHttpChannel(settings).send(sms(phone="+33 6 12 34 56 78"))

    assert receipt.provider_id == "msg-9f"
    assert receipt.status == "sent"
    [req] = provider.requests
    assert (req.method, req.path) == ("POST", "/v1/sms?account=42")
    assert req.headers["Authorization"] == "Bearer tok-secret-123"
    assert req.headers["Content-Type"].startswith("application/json")
    assert req.headers["Idempotency-Key"] == "v1:e7:s3:0"
    assert json.loads(req.body) == {
        "from": "Parcours",
        "to": "+33612345678",
        "text": "Bonjour Zoë 🙂",
        "reference": "v1:e7:s3:0",
    }


def test_form_template_with_basic_auth(provider: FakeProvider) -> None:
    settings = SmsHttpSettings(
        **LOCAL,
        url=provider.url + "/Accounts/AC1/Messages.json",
        sender="+33700000001",
        auth="basic",
        username="AC1",
        password="pa55-word",
        request_format="template",
        template_encoding="form",
        template={
            "From": "$sender",
            "To": "$to",
            "Body": "$text",
            "StatusCallback": "$callback_url",
            "Ref": "$reference",
            "Kind": "sms",
        },
        callback_url="https://parcours.example/hooks/sms/status",
        response_id_path="messages.0.sid",
    )
    provider.reply(200, {"messages": [{"sid": "SM77"}]})

    receipt = SmsHttpChannel(settings).send(sms(text="Votre code : 4821 & à bientôt"))

    assert receipt.provider_id == "SM77"
    [req] = provider.requests
    assert req.path == "/Accounts/AC1/Messages.json"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:pa55-word").decode()
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(urllib.parse.parse_qsl(req.body.decode())) == {
        "From": "+33700000001",
        "To": "+33612345678",
        "Body": "Votre code : 4821 & à bientôt",
        "StatusCallback": "https://parcours.example/hooks/sms/status",
        "Ref": "v1:e7:s3:0",
        "Kind": "sms",
    }


def test_header_auth_and_numeric_provider_id(provider: FakeProvider) -> None:
    settings = SmsHttpSettings(
        **LOCAL,
        url=provider.url,
        sender="36180",
        auth="header",
        header_name="X-Api-Key",
        header_value="k-123456",
    )
    provider.reply(202, {"id": 123456789})
    assert SmsHttpChannel(settings).send(sms()).provider_id == "123456789"
    assert provider.requests[0].headers["X-Api-Key"] == "k-123456"
    assert "Authorization" not in provider.requests[0].headers


def test_accepted_without_an_id_falls_back_to_the_send_key(provider: FakeProvider) -> None:
    provider.reply(200, b"OK")
    receipt = SmsHttpChannel(SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours")).send(
        sms()
    )
    assert receipt.provider_id == "v1:e7:s3:0"


def test_503_with_retry_after_is_transient(provider: FakeProvider) -> None:
    provider.reply(503, {"message": "maintenance"}, Retry_After="30")
    with pytest.raises(TransientChannelError) as caught:
        SmsHttpChannel(SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours")).send(sms())
    assert caught.value.retry_after == 30.0
    assert "HTTP 503" in str(caught.value) and "maintenance" in str(caught.value)
    assert "v1:e7:s3:0" in str(caught.value)


def test_429_with_a_retry_after_date_is_transient(provider: FakeProvider) -> None:
    provider.reply(429, {}, Retry_After=email.utils.formatdate(time.time() + 120, usegmt=True))
    with pytest.raises(TransientChannelError) as caught:
        SmsHttpChannel(SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours")).send(sms())
    assert caught.value.retry_after is not None
    assert 115 <= caught.value.retry_after <= 121


def test_400_is_permanent_with_the_provider_text_and_no_secret(provider: FakeProvider) -> None:
    token = "tok-very-secret-99"
    settings = SmsHttpSettings(
        **LOCAL, url=provider.url, sender="Parcours", auth="bearer", token=token
    )
    provider.reply(400, {"error": {"code": 21211, "message": f"Invalid 'To' number (key {token})"}})
    with pytest.raises(PermanentChannelError) as caught:
        SmsHttpChannel(settings).send(sms())
    message = str(caught.value)
    assert "HTTP 400" in message
    assert "Invalid 'To' number" in message
    assert token not in message and "***" in message
    assert token not in repr(settings)


def test_a_plain_text_error_body_is_quoted(provider: FakeProvider) -> None:
    provider.reply(403, b"destination not allowed")
    with pytest.raises(PermanentChannelError, match="HTTP 403: destination not allowed") as caught:
        SmsHttpChannel(SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours")).send(sms())
    assert not isinstance(caught.value, ChannelConfigError)  # one recipient, not the channel


@pytest.mark.parametrize(
    "phone", ["0612345678", "", None, "+0612345678", "+33 6 12 AB", "33612345678"]
)
def test_invalid_phone_is_permanent_before_any_request(provider: FakeProvider, phone: Any) -> None:
    channel = SmsHttpChannel(SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours"))
    with pytest.raises(PermanentChannelError, match=r"E\.164"):
        channel.send(sms(phone=phone))
    assert provider.requests == []


def test_too_many_segments_is_permanent_before_any_request(provider: FakeProvider) -> None:
    channel = SmsHttpChannel(
        SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours", max_segments=2)
    )
    channel.send(sms(text="a" * 306))  # exactly two segments: allowed
    with pytest.raises(PermanentChannelError, match="3 segments") as caught:
        channel.send(sms(text="ç" + "a" * 140))  # UCS-2 because of ç: 141 units, 3 segments
    assert "because of ç" in str(caught.value)
    assert len(provider.requests) == 1


def test_401_is_a_configuration_error(provider: FakeProvider) -> None:
    provider.reply(401, {"message": "Authenticate"})
    with pytest.raises(
        ChannelConfigError, match=r"HTTP 401 \(check the SMS account and auth\): Authenticate"
    ):
        SmsHttpChannel(SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours")).send(sms())


def test_a_timeout_after_the_request_left_is_ambiguous(provider: FakeProvider) -> None:
    provider.delay = 1.0
    channel = SmsHttpChannel(
        SmsHttpSettings(**LOCAL, url=provider.url, sender="Parcours", timeout=0.2)
    )
    with pytest.raises(AmbiguousDeliveryError, match=r"no answer came back within 0\.2s"):
        channel.send(sms())
    assert len(provider.requests) == 1  # it did arrive: a blind resend could deliver twice


def test_an_unreachable_provider_is_transient_not_ambiguous() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    channel = SmsHttpChannel(
        SmsHttpSettings(**LOCAL, url=f"http://127.0.0.1:{port}", sender="Parcours")
    )
    with pytest.raises(TransientChannelError, match="cannot connect") as caught:
        channel.send(sms())
    assert not isinstance(caught.value, AmbiguousDeliveryError)


# --- the address guard: the provider URL is configuration, yet it may not reach inside ----------

# Internal destinations; {port} is the fake provider's, so a loopback spelling that slipped
# through would be counted by it. The others are refused before any connection is tried.
INTERNAL_URLS = [
    "http://127.0.0.1:{port}/v1",
    "http://127.0.0.2:{port}/v1",
    "http://localhost:{port}/v1",
    "http://sms.localhost:{port}/v1",
    "http://[::1]:{port}/v1",
    "http://[::ffff:127.0.0.1]:{port}/v1",
    "http://[::ffff:7f00:1]:{port}/v1",
    "http://[64:ff9b::7f00:1]:{port}/v1",
    "http://[2002:7f00:1::]:{port}/v1",
    "http://2130706433:{port}/v1",
    "http://0x7f000001:{port}/v1",
    "http://0x7f.1:{port}/v1",
    "http://0177.0.0.1:{port}/v1",
    "http://127.1:{port}/v1",
    "http://0.0.0.0:{port}/v1",
    "http://[::]:{port}/v1",
    "https://10.0.0.1/v1",
    "https://172.16.0.1/v1",
    "https://192.168.1.1/v1",
    "https://100.64.0.1/v1",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "https://[fe80::1]/v1",
    "https://[fd00::1]/v1",
    "https://224.0.0.1/v1",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_an_internal_provider_url_is_refused_before_any_request(
    provider: FakeProvider, url: str
) -> None:
    config = {"url": url.format(port=provider.port) + "?key=s3cret-api-key", "sender": "Parcours"}
    with pytest.raises(ChannelConfigError) as caught:
        sms_channel_from_config({**config, "allow_http": True}, environ={})
    message = str(caught.value)
    assert "url: refused to connect to" in message and "allow list" in message
    assert "s3cret-api-key" not in message
    assert provider.requests == []


def test_a_provider_name_resolving_inside_is_refused_at_send(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A public-looking name whose DNS answer is loopback: refused once resolved, not dialled."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "sms.rebind.example":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    url = f"http://sms.rebind.example:{provider.port}/v1"
    channel = SmsHttpChannel(SmsHttpSettings(url=url, sender="Parcours", allow_http=True))
    with pytest.raises(ChannelConfigError, match=r"refused to connect to sms\.rebind\.example"):
        channel.send(sms())
    assert provider.requests == []


def test_a_redirect_to_loopback_is_not_followed(provider: FakeProvider) -> None:
    with fake_provider("127.0.0.2") as gateway:
        gateway.reply(307, b"", Location=provider.url + "/v1")
        settings = SmsHttpSettings(url=gateway.url, sender="Parcours", allow=("127.0.0.2/32",),
                                   allow_http=True)  # fmt: skip
        with pytest.raises(ChannelConfigError, match="redirects are not followed"):
            SmsHttpChannel(settings).send(sms())
        assert len(gateway.requests) == 1
    assert provider.requests == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/v1", "http://2130706433:{port}/v1"])
def test_the_allow_list_lets_an_on_premise_gateway_receive_the_message(
    provider: FakeProvider, url: str
) -> None:
    channel = sms_channel_from_config(
        {"url": url.format(port=provider.port), "sender": "Parcours",
         "allow": ["127.0.0.1"], "allow_http": True},
        environ={},
    )  # fmt: skip
    assert channel.send(sms()).provider_id == "prov-1"
    assert len(provider.requests) == 1


def test_plain_http_needs_allow_http(provider: FakeProvider) -> None:
    with pytest.raises(
        ChannelConfigError, match=r"plain http refused, https only \(see allow_http"
    ):
        sms_channel_from_config({"url": provider.url, "sender": "P", "allow": ["127.0.0.1"]}, {})
    with pytest.raises(ChannelConfigError, match=r"allow: allow list entry '10\.0\.0\.0/33'"):
        SmsHttpSettings(url="https://sms.example/v1", sender="Parcours", allow=("10.0.0.0/33",))
    assert provider.requests == []


def test_channel_from_config_resolves_secrets(provider: FakeProvider) -> None:
    channel = sms_channel_from_config(
        {
            "url": provider.url,
            "sender": "Parcours",
            "allow": ["127.0.0.1"],
            "allow_http": True,
            "auth": "bearer",
            "token": "${SMS_TOKEN}",
            "max_segments": "3",
        },
        environ={"SMS_TOKEN": "tok-from-env-1"},
    )
    assert channel.settings.max_segments == 3
    assert channel.info.name == "sms" and channel.info.max_length == 3 * 153
    channel.send(sms())
    assert provider.requests[0].headers["Authorization"] == "Bearer tok-from-env-1"


def test_channel_from_config_reports_every_problem() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        sms_channel_from_config(
            {"url": "https://sms.example", "sendr": "Parcours", "timeout": "soon"}, environ={}
        )
    message = str(caught.value)
    assert "unknown key 'sendr' (did you mean 'sender'?)" in message
    assert "'timeout' must be a number" in message
    assert "'sender' is required" in message


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        SmsHttpSettings(
            url="ftp://provider.example",
            sender="ParcoursMarketing",
            auth="basic",
            username="u",
            request_format="template",
            template={"To": "$to", "Body": "$txt", "Cb": "$callback_url"},
        )
    message = str(caught.value)
    for expected in (
        "url:",
        "sender: 'ParcoursMarketing'",
        "password: required by auth=basic",
        "unknown source $txt (did you mean $text?)",
        "$callback_url needs callback_url",
        "no field takes $text",
    ):
        assert expected in message


@pytest.mark.parametrize("sender", ["Parcours", "SHOP 24", "+33612345678", "36180"])
def test_valid_senders(sender: str) -> None:
    assert SmsHttpSettings(url="https://sms.example/send", sender=sender).sender == sender


@pytest.mark.parametrize("sender", ["", "ABCDEFGHIJKL", "Parc@urs", "12", "Café"])
def test_invalid_senders(sender: str) -> None:
    with pytest.raises(ChannelConfigError, match="sender:"):
        SmsHttpSettings(url="https://sms.example/send", sender=sender)


# ------------------------------------------------------------------ callbacks


def test_builtin_delivery_reports() -> None:
    assert parse_delivery_report({"id": "m-1", "status": "delivered"}) == ("m-1", "delivered", None)
    report = parse_delivery_report(
        {
            "id": "m-2",
            "status": "FAILED",
            "error": {"code": "30003", "message": "Unreachable handset"},
        }
    )
    assert report == ("m-2", "failed", "30003 Unreachable handset")
    assert report.status == "failed"
    assert (
        parse_delivery_report({"reference": "v1:e7:s3:0", "status": "bounced"}).provider_id
        == "v1:e7:s3:0"
    )
    assert parse_delivery_report({"id": "m-3", "status": "queued"}).status == "sent"


@pytest.mark.parametrize(
    ("payload", "field_name"),
    [
        ({"status": "delivered"}, "message id"),
        ({"id": "m-1", "status": "read"}, "unknown status 'read'"),
    ],
)
def test_malformed_delivery_reports_say_which_field(
    payload: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(SmsPayloadError, match=field_name):
        parse_delivery_report(payload)


def test_mapped_delivery_report_from_a_form_body() -> None:
    body = b"MessageSid=SM77&MessageStatus=undelivered&ErrorCode=30005"
    payload = payload_from_body(body, "application/x-www-form-urlencoded; charset=utf-8")
    mapping = ReportMapping(provider_id="MessageSid", status="MessageStatus", error="ErrorCode")
    assert parse_delivery_report(payload, mapping) == ("SM77", "failed", "30005")
    custom = ReportMapping(
        provider_id="MessageSid", status="MessageStatus", statuses={"Undelivered": "bounced"}
    )
    assert parse_delivery_report(payload, custom).status == "bounced"


def test_nested_mapped_delivery_report() -> None:
    payload = payload_from_body(
        b'{"results": [{"messageId": "x1", "status": {"name": "DELIVRD"}}]}', "application/json"
    )
    mapping = ReportMapping(provider_id="results.0.messageId", status="results.0.status.name")
    assert parse_delivery_report(payload, mapping) == ("x1", "delivered", None)


def test_inbound_replies() -> None:
    assert parse_inbound({"from": "+33612345678", "to": "36180", "text": "STOP"}) == (
        "+33612345678",
        "STOP",
    )
    phone, text = parse_inbound(
        {"msisdn": "33612345678", "text": "Arrêt"}, InboundMapping("msisdn", "text")
    )
    assert (phone, is_stop_reply(text)) == ("+33612345678", "ARRET")
    with pytest.raises(SmsPayloadError, match="no text at 'text'"):
        parse_inbound({"from": "+33612345678"})
    with pytest.raises(SmsPayloadError, match="no sender"):
        parse_inbound({"text": "STOP"})


BODY = b'{"id": "m-1", "status": "delivered"}'
SECRET = "whsec-0123456789abcdef0123456789abcdef"


def test_callback_signature_valid() -> None:
    signature = callback_signature(SECRET, BODY)
    assert len(signature) == 64
    assert verify_callback_signature(SECRET, BODY, signature)
    assert verify_callback_signature(SECRET.encode(), BODY, "sha256=" + signature.upper())


def test_callback_signature_rejects_a_tampered_body() -> None:
    signature = callback_signature(SECRET, BODY)
    assert not verify_callback_signature(SECRET, BODY.replace(b"delivered", b"failed"), signature)


def test_callback_signature_rejects_the_wrong_secret() -> None:
    signature = callback_signature("another-secret-entirely", BODY)
    assert not verify_callback_signature(SECRET, BODY, signature)


@pytest.mark.parametrize("header", ["", "sha256=", "zz", "é" * 64])
def test_callback_signature_rejects_garbage(header: str) -> None:
    assert not verify_callback_signature(SECRET, BODY, header)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty callback secret"):
        verify_callback_signature("", BODY, callback_signature("x", BODY))


# ------------------------------------------------------------------ documentation

SMS_DOC = (Path(__file__).resolve().parents[2] / "channels" / "SMS.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [f.name for f in fields(SmsHttpSettings)])
def test_every_setting_is_documented(name: str) -> None:
    assert f"| `{name}` |" in SMS_DOC


@pytest.mark.parametrize("keyword", sorted(STOP_KEYWORDS.values()))
def test_every_stop_keyword_is_documented(keyword: str) -> None:
    assert f"`{keyword}`" in SMS_DOC
