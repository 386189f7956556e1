"""The webhook channel against real HTTP servers on the loopback interface.

Every SSRF case runs with a live canary server and checks it accepted no connection at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from channels.errors import AmbiguousDeliveryError, PermanentChannelError, TransientChannelError
from channels.message import OutboundMessage
from channels.netguard import BlockedAddress
from channels.webhook import (
    WebhookChannel,
    WebhookSettings,
    retry_schedule,
    verify_signature,
    webhook_channel_from_config,
)
from tests.serving import serving
from tests.tls import self_signed

SECRET = "whsec-test-0123456789"
NOW = 1_700_000_000.0
BODY = '{"event":"welcome","contact":"c-1","score":3}'


# --- a receiver that records connections and requests ----------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: Message
    body: bytes


Reply = tuple[int, dict[str, str], bytes | Iterable[bytes]]


def ok(_seen: Seen) -> Reply:
    return 200, {}, b'{"ok":true}'


class Receiver(ThreadingHTTPServer):
    daemon_threads = False  # server_close joins the handlers: no thread outlives its test

    def __init__(self, host: str, reply: Callable[[Seen], Reply]) -> None:
        self.reply = reply
        self.host = host
        self.connections = 0
        self.seen: list[Seen] = []
        self.sni: list[str | None] = []
        super().__init__((host, 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up early are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        seen = Seen(self.command, self.path, self.headers, self.rfile.read(length))
        self.server.seen.append(seen)
        status, headers, body = self.server.reply(seen)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.end_headers()
        for chunk in body:
            self.wfile.write(chunk)

    do_POST = do_PUT = do_PATCH = do_GET = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def receiver(
    reply: Callable[[Seen], Reply] = ok, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    server = Receiver(host, reply)
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: server.sni.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server


@pytest.fixture
def server() -> Iterator[Receiver]:
    with receiver() as s:
        yield s


def channel(**settings: Any) -> WebhookChannel:
    settings.setdefault("allow_http", True)
    return WebhookChannel(WebhookSettings(secret=SECRET, **settings), clock=lambda: NOW)


LOCAL = ("127.0.0.1/32",)


def message(
    url: str | None, body: str = BODY, send_key: str = "sk-1", **meta: Any
) -> OutboundMessage:
    recipient = {"url": url} if url else {}
    return OutboundMessage(send_key, "webhook", recipient, {"body": body}, metadata=meta)


def replying(status: int, headers: dict[str, str] | None = None) -> Callable[[Seen], Reply]:
    return lambda _seen: (status, headers or {}, b"")


# --- delivery -----------------------------------------------------------------------------------


def test_post_carries_the_json_body_a_verifiable_signature_and_the_send_key(
    server: Receiver,
) -> None:
    receipt = channel(allow=LOCAL).send(message(server.url("/hooks/in?src=parcours")))

    assert receipt.provider_id == "webhook:200:sk-1"
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/hooks/in?src=parcours")
    assert seen.body == BODY.encode()  # sent as written, not re-serialised
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["User-Agent"] == "Parcours-Webhook/1"
    assert seen.headers["X-Parcours-Send-Key"] == "sk-1"
    assert seen.headers["Idempotency-Key"] == "sk-1"

    # The recipe in channels/WEBHOOK.md, written out by hand.
    fields = dict(item.split("=", 1) for item in seen.headers["X-Parcours-Signature"].split(","))
    assert fields["t"] == str(int(NOW))
    signed = fields["t"].encode() + b"." + seen.body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)

    header = seen.headers["X-Parcours-Signature"]
    assert verify_signature(header, seen.body, SECRET, now=NOW + 10)
    assert not verify_signature(header, seen.body.replace(b"3", b"4"), SECRET, now=NOW)
    assert not verify_signature(header, seen.body, "another-secret", now=NOW)
    assert not verify_signature(header, seen.body, SECRET, now=NOW + 301)


@pytest.mark.parametrize("body", ["Hello Ada", "42", '"a string"', "NaN"])
def test_a_body_that_is_not_a_json_object_or_array_is_wrapped_with_the_other_parts(
    server: Receiver, body: str
) -> None:
    msg = OutboundMessage("sk-2", "webhook", {"url": server.url()}, {"body": body, "title": "Hi"})
    channel(allow=LOCAL).send(msg)
    assert json.loads(server.seen[0].body) == {"body": body, "title": "Hi"}


@pytest.mark.parametrize("method", ["PUT", "patch"])
def test_method_comes_from_metadata(server: Receiver, method: str) -> None:
    channel(allow=LOCAL).send(message(server.url(), method=method))
    assert server.seen[0].method == method.upper()


def test_other_methods_are_refused_before_connecting(server: Receiver) -> None:
    with pytest.raises(PermanentChannelError, match="DELETE"):
        channel(allow=LOCAL).send(message(server.url(), method="DELETE"))
    assert server.connections == 0


def test_url_may_come_from_metadata(server: Receiver) -> None:
    msg = OutboundMessage("sk-1", "webhook", {}, {"body": BODY}, metadata={"url": server.url("/m")})
    channel(allow=LOCAL).send(msg)
    assert server.seen[0].path == "/m"
    with pytest.raises(PermanentChannelError, match="no URL"):
        channel(allow=LOCAL).send(message(None))


@pytest.mark.parametrize("status", [201, 202, 299])
def test_any_2xx_is_a_receipt_naming_the_status(status: int) -> None:
    with receiver(replying(status)) as s:
        receipt = channel(allow=LOCAL).send(message(s.url(), send_key="sk-9"))
    assert receipt.provider_id == f"webhook:{status}:sk-9"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_transient(status: int) -> None:
    with receiver(replying(status)) as s, pytest.raises(TransientChannelError) as caught:
        channel(allow=LOCAL).send(message(s.url()))
    assert not isinstance(caught.value, AmbiguousDeliveryError)
    assert caught.value.retry_after is None
    assert str(status) in str(caught.value)


def test_retry_after_in_seconds_is_passed_on() -> None:
    with (
        receiver(replying(503, {"Retry-After": "120"})) as s,
        pytest.raises(TransientChannelError) as caught,
    ):
        channel(allow=LOCAL).send(message(s.url()))
    assert caught.value.retry_after == 120.0


def test_retry_after_as_an_http_date_is_counted_from_the_clock() -> None:
    when = formatdate(NOW + 90, usegmt=True)
    with (
        receiver(replying(429, {"Retry-After": when})) as s,
        pytest.raises(TransientChannelError) as caught,
    ):
        channel(allow=LOCAL).send(message(s.url()))
    assert caught.value.retry_after == 90.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_permanent(status: int) -> None:
    with receiver(replying(status)) as s, pytest.raises(PermanentChannelError) as caught:
        channel(allow=LOCAL).send(message(s.url()))
    assert not isinstance(caught.value, BlockedAddress)
    assert f"answered {status}" in str(caught.value)


def test_a_read_timeout_after_the_body_was_sent_is_ambiguous() -> None:
    answered = threading.Event()

    def slow(_seen: Seen) -> Reply:
        answered.wait(5)
        return 200, {}, b""

    with receiver(slow) as server:
        started = time.monotonic()
        with pytest.raises(AmbiguousDeliveryError, match="no answer"):
            channel(allow=LOCAL, read_timeout=0.3).send(message(server.url()))
        assert time.monotonic() - started < 3
        assert len(server.seen) == 1  # the receiver did get it: a blind resend would duplicate
        answered.set()


def test_a_refused_connection_is_transient_and_not_ambiguous() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientChannelError, match="cannot connect") as caught:
        channel(allow=LOCAL).send(message(f"http://127.0.0.1:{port}/"))
    assert not isinstance(caught.value, AmbiguousDeliveryError)


def test_the_response_read_is_capped() -> None:
    def endless(_seen: Seen) -> Reply:
        return 200, {"Content-Length": str(10**12)}, iter(lambda: b"x" * 65536, b"")

    with receiver(endless) as s:
        started = time.monotonic()
        receipt = channel(allow=LOCAL, max_response_bytes=1024, read_timeout=10).send(
            message(s.url())
        )
        assert time.monotonic() - started < 3  # without the cap it reads until the deadline
    assert receipt.provider_id == "webhook:200:sk-1"


def test_a_body_over_the_limit_is_refused_before_connecting(server: Receiver) -> None:
    with pytest.raises(PermanentChannelError, match="max_body_bytes"):
        channel(allow=LOCAL, max_body_bytes=16).send(message(server.url()))
    assert server.connections == 0


def test_header_injection_through_the_send_key_is_refused(server: Receiver) -> None:
    with pytest.raises(PermanentChannelError):
        channel(allow=LOCAL).send(message(server.url(), send_key="sk\r\nX-Evil: 1"))
    assert server.seen == []


# --- URL rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
        "ftp://127.0.0.1:{port}/",
        "dict://127.0.0.1:{port}/",
    ],
)
def test_only_http_and_https_are_called(server: Receiver, url: str) -> None:
    with pytest.raises(PermanentChannelError, match="scheme"):
        channel(allow=LOCAL).send(message(url.format(port=server.port)))
    assert server.connections == 0


def test_credentials_in_the_url_are_refused_even_for_an_allowed_address(server: Receiver) -> None:
    url = f"http://allowed.example@127.0.0.1:{server.port}/"
    with pytest.raises(PermanentChannelError, match="credentials"):
        channel(allow=LOCAL).send(message(url))
    assert server.connections == 0


def test_plain_http_needs_allow_http(server: Receiver) -> None:
    with pytest.raises(PermanentChannelError, match="https only"):
        channel(allow=LOCAL, allow_http=False).send(message(server.url()))
    assert server.connections == 0


# --- SSRF: with an empty allow list, none of these reaches anything ----------------------------

SSRF_TARGETS = [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://sub.localhost:{port}/",
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "http://[::ffff:0:7f00:1]:{port}/",
    "http://[2002:7f00:1::]:{port}/",
    "http://[64:ff9b::7f00:1]:{port}/",
    "http://2130706433:{port}/",
    "http://0x7f000001:{port}/",
    "http://0x7f.1:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://017700000001:{port}/",
    "http://127.1:{port}/",
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",
    "http://[::]:{port}/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://198.18.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
]


@pytest.mark.parametrize("url", SSRF_TARGETS)
def test_non_public_destinations_are_blocked_without_a_connection(
    server: Receiver, url: str
) -> None:
    with pytest.raises(BlockedAddress) as caught:
        channel().send(message(url.format(port=server.port) + "?token=s3cret"))
    assert isinstance(caught.value, PermanentChannelError)
    assert caught.value.code == "ssrf_blocked"
    assert "s3cret" not in str(caught.value)  # messages never carry the query string
    assert server.connections == 0


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/", "http://2130706433:{port}/"])
def test_the_allow_list_lets_the_same_server_receive_the_post(server: Receiver, url: str) -> None:
    channel(allow=LOCAL).send(message(url.format(port=server.port)))
    assert server.connections == 1
    assert server.seen[0].body == BODY.encode()


def _fake_resolver(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]
) -> dict[str, int]:
    """Answer `host` with successive address lists; other names go to the real resolver."""
    real = socket.getaddrinfo
    calls: dict[str, int] = {}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        n = calls[host] = calls.get(host, 0) + 1
        ips = answers[host][min(n, len(answers[host])) - 1]
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in ips
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def _record_connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every outgoing connect target; the connection itself is refused."""
    targets: list[Any] = []

    class Recording(socket.socket):
        def connect(self, address: Any) -> None:
            targets.append(address)
            raise ConnectionRefusedError("test: not connecting anywhere")

    monkeypatch.setattr(socket, "socket", Recording)
    return targets


def test_a_name_resolving_to_loopback_is_blocked(
    server: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_resolver(monkeypatch, {"rebind.example": [["127.0.0.1"]]})
    targets = _record_connects(monkeypatch)
    with pytest.raises(BlockedAddress, match="loopback"):
        channel().send(message(f"http://rebind.example:{server.port}/"))
    assert targets == []
    assert server.connections == 0


def test_one_private_answer_among_public_ones_blocks_the_name(
    server: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_resolver(monkeypatch, {"mixed.example": [["93.184.216.34", "127.0.0.1"]]})
    targets = _record_connects(monkeypatch)
    with pytest.raises(BlockedAddress):
        channel().send(message(f"http://mixed.example:{server.port}/"))
    assert targets == []


def test_dns_rebinding_cannot_redirect_the_connection(
    server: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Public when checked, loopback on any later lookup: only the checked address is dialled."""
    calls = _fake_resolver(monkeypatch, {"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    targets = _record_connects(monkeypatch)
    with pytest.raises(TransientChannelError, match="cannot connect"):
        channel().send(message(f"http://rebind.example:{server.port}/"))
    assert calls == {"rebind.example": 1}
    assert targets == [("93.184.216.34", server.port)]
    assert server.connections == 0


# --- redirects ----------------------------------------------------------------------------------


def redirecting(status: int, to: str) -> Callable[[Seen], Reply]:
    return lambda _seen: (status, {"Location": to}, b"")


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_refused_by_default(server: Receiver, status: int) -> None:
    with (
        receiver(redirecting(status, server.url())) as hop,
        pytest.raises(PermanentChannelError, match="redirects are refused"),
    ):
        channel(allow=LOCAL).send(message(hop.url()))
    assert server.connections == 0


def test_a_followed_redirect_is_vetted_again(server: Receiver) -> None:
    with receiver(redirecting(307, server.url()), host="127.0.0.2") as hop:
        with pytest.raises(BlockedAddress, match="loopback"):
            channel(allow=("127.0.0.2/32",), max_redirects=3).send(message(hop.url()))
        assert len(hop.seen) == 1
    assert server.connections == 0


def test_a_followed_redirect_to_an_allowed_address_resends_the_same_request() -> None:
    with (
        receiver(host="127.0.0.2") as final,
        receiver(redirecting(308, final.url("/final")), host="127.0.0.2") as hop,
    ):
        receipt = channel(allow=("127.0.0.2/32",), max_redirects=1).send(
            message(hop.url(), method="PUT")
        )
    assert receipt.provider_id == "webhook:200:sk-1"
    [first], [second] = hop.seen, final.seen
    assert (second.method, second.path, second.body) == ("PUT", "/final", first.body)
    for name in ("X-Parcours-Signature", "Idempotency-Key"):
        assert second.headers[name] == first.headers[name]


def test_a_redirect_that_would_become_a_get_is_refused(server: Receiver) -> None:
    with (
        receiver(redirecting(302, server.url())) as hop,
        pytest.raises(PermanentChannelError, match="into a GET"),
    ):
        channel(allow=LOCAL, max_redirects=2).send(message(hop.url()))
    assert server.connections == 0


def test_redirect_hops_are_limited() -> None:
    def loop(seen: Seen) -> Reply:
        return 307, {"Location": seen.path}, b""

    with receiver(loop) as s, pytest.raises(PermanentChannelError, match="more than max_redirects"):
        channel(allow=LOCAL, max_redirects=2).send(message(s.url()))
    assert len(s.seen) == 3


# --- TLS: connect to the vetted address, check the certificate against the URL's host ----------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), "hooks.test")


def _tls_server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_https_pins_the_address_and_verifies_the_host_name(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_resolver(monkeypatch, {"hooks.test": [["127.0.0.2"]]})
    with receiver(host="127.0.0.2", tls=_tls_server_context(certificate)) as s:
        webhook = channel(allow=("127.0.0.2/32",), allow_http=False, ca_file=str(certificate[0]))
        receipt = webhook.send(message(f"https://hooks.test:{s.port}/in"))
    assert receipt.provider_id == "webhook:200:sk-1"
    assert calls == {"hooks.test": 1}
    assert s.sni == ["hooks.test"]
    assert s.seen[0].headers["Host"] == f"hooks.test:{s.port}"


def test_https_refuses_a_certificate_for_another_name(certificate: tuple[Path, Path]) -> None:
    with receiver(host="127.0.0.2", tls=_tls_server_context(certificate)) as s:
        webhook = channel(allow=("127.0.0.2/32",), ca_file=str(certificate[0]))
        with pytest.raises(TransientChannelError, match="certificate"):
            webhook.send(message(f"https://127.0.0.2:{s.port}/in"))
    assert s.seen == []


# --- settings and the retry schedule ------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [{"secret": ""}, {"read_timeout": 0}, {"max_response_bytes": 0}, {"max_redirects": -1}],
)
def test_settings_refuse_unsafe_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WebhookSettings(**{"secret": SECRET, **bad})


def test_defaults_are_the_documented_ones() -> None:
    s = WebhookSettings(secret=SECRET)
    assert (s.connect_timeout, s.read_timeout, s.max_redirects, s.allow, s.allow_http) == (
        5.0,
        10.0,
        0,
        (),
        False,
    )


def test_retry_schedule_doubles_up_to_the_cap_with_jitter_below_the_ceiling() -> None:
    for attempt in range(1, 15):
        ceiling = min(6 * 3600.0, 30.0 * 2 ** (attempt - 1))
        waits = {retry_schedule(attempt, seed=f"sk-{n}") for n in range(50)}
        assert all(0.75 * ceiling <= w <= ceiling for w in waits)
        assert len(waits) > 40  # jitter spreads the messages out
    assert retry_schedule(1, jitter=0) == 30.0
    assert retry_schedule(20, jitter=0) == 6 * 3600.0


def test_retry_schedule_is_deterministic_with_a_seed() -> None:
    first = [retry_schedule(a, seed="sk-1") for a in range(1, 8)]
    assert first == [retry_schedule(a, seed="sk-1") for a in range(1, 8)]
    assert first != [retry_schedule(a, seed="sk-2") for a in range(1, 8)]
    with pytest.raises(ValueError):
        retry_schedule(0)


def test_a_receiver_that_dedupes_on_the_idempotency_key_makes_the_channel_idempotent() -> None:
    """The delivery loop sends such a channel's lost or interrupted messages again (same key)
    instead of marking them ambiguous."""
    plain = webhook_channel_from_config({"secret": SECRET})
    dedupes = webhook_channel_from_config({"secret": SECRET, "idempotent": True})
    assert (plain.info.idempotent_provider, dedupes.info.idempotent_provider) == (False, True)
    assert dedupes.info.name == "webhook"
