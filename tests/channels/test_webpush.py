"""Web Push against a real local push service: the VAPID JWT verifies with the site's public key,
the aes128gcm body decrypts with the browser's private key, and every answer maps to the right
retry decision."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece  # type: ignore[import-untyped]
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from channels import OutboundMessage, PermanentChannelError, TransientChannelError
from channels.errors import AmbiguousDeliveryError, ChannelConfigError
from channels.netguard import BlockedAddress
from channels.push_fanout import TargetsGone
from channels.webpush import (
    Subscription,
    WebPushChannel,
    WebPushSettings,
    webpush_channel_from_config,
)

SUBJECT = "mailto:push@shop.example"
LOCAL = ("127.0.0.1/32",)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


VAPID = ec.generate_private_key(ec.SECP256R1())
VAPID_PEM = VAPID.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@dataclass
class Browser:
    """A subscriber: its own ECDH key pair and auth secret, as a browser makes them."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self, endpoint: str) -> dict[str, Any]:
        return {
            "endpoint": endpoint,
            "keys": {"p256dh": b64url(point(self.key)), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> Any:
        plain = http_ece.decrypt(
            body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)
    hang_up: bool = False  # close the connection without answering


class PushService:
    """A push service on 127.0.0.1: records requests; `replies[path]` decides the answer."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.replies: dict[str, Reply] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                service.seen.append(Seen(self.path, dict(self.headers.items()), body))
                reply = service.replies.get(self.path, Reply())
                if reply.hang_up:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Location", f"{service.origin}/m/1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def endpoint(self, name: str) -> str:
        return f"{self.origin}/wpush/v2/{name}"


@pytest.fixture
def service() -> Iterator[PushService]:
    found = PushService()
    yield found
    found.server.shutdown()
    found.server.server_close()


def channel(
    allow: tuple[str, ...] = LOCAL, on_gone: Callable[[str], None] | None = None, **settings: Any
) -> WebPushChannel:
    settings.setdefault("allow_http", True)
    return WebPushChannel(
        WebPushSettings(
            vapid_private_key=VAPID_PEM, vapid_subject=SUBJECT, allow=allow, **settings
        ),
        on_gone=on_gone,
    )


def message(*subscriptions: dict[str, Any], send_key: str = "s-1", **parts: str) -> OutboundMessage:
    parts = {
        "title": "Your basket",
        "body": "Still thinking about it?",
        "url": "https://shop.example/basket",
        **parts,
    }
    return OutboundMessage(
        send_key, "push", {"external_id": "c-1", "subscriptions": list(subscriptions)}, parts
    )


def verify_vapid(authorization: str, audience: str) -> dict[str, Any]:
    """The push service's check (RFC 8292): ES256 over header.claims, with the site's key."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid"
    values = dict(item.split("=", 1) for item in params.split(","))
    assert unb64url(values["k"]) == point(VAPID)
    header, claims, signature = values["t"].split(".")
    raw = unb64url(signature)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    VAPID.public_key().verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64url(header)) == {"typ": "JWT", "alg": "ES256"}
    found: dict[str, Any] = json.loads(unb64url(claims))
    assert found["aud"] == audience
    assert time.time() < found["exp"] <= time.time() + 24 * 3600
    assert found["sub"] == SUBJECT
    return found


# ------------------------------------------------------------------ accepted


def test_a_notification_reaches_the_push_service_signed_and_encrypted(service: PushService) -> None:
    browser = Browser()
    receipt = channel(icon="https://shop.example/icon.png").send(
        message(browser.subscription(service.endpoint("abc")), image="https://shop.example/p.jpg")
    )
    assert receipt.provider_id == "webpush:s-1:1/1"
    [seen] = service.seen
    assert seen.path == "/wpush/v2/abc"
    verify_vapid(seen.headers["Authorization"], service.origin)
    assert seen.headers["Content-Encoding"] == "aes128gcm"
    assert seen.headers["TTL"] == "86400"
    assert seen.headers["Urgency"] == "normal"
    assert len(seen.headers["Topic"]) == 32
    assert b"Your basket" not in seen.body  # encrypted
    assert browser.decrypt(seen.body) == {
        "title": "Your basket",
        "body": "Still thinking about it?",
        "url": "https://shop.example/basket",
        "image": "https://shop.example/p.jpg",
        "icon": "https://shop.example/icon.png",
        "tag": "s-1",
    }


def test_the_body_does_not_decrypt_with_another_browsers_key(service: PushService) -> None:
    channel().send(message(Browser().subscription(service.endpoint("a"))))
    with pytest.raises(Exception):  # noqa: B017 - http_ece raises InvalidTag or ECEException
        Browser().decrypt(service.seen[0].body)


def test_a_forged_vapid_signature_would_be_caught(service: PushService) -> None:
    """The verifier itself rejects a JWT signed by another key."""
    channel().send(message(Browser().subscription(service.endpoint("a"))))
    other = ec.generate_private_key(ec.SECP256R1())
    token = service.seen[0].headers["Authorization"]
    signed = token.split("t=")[1].split(",")[0]
    header, claims, signature = signed.split(".")
    raw = unb64url(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    with pytest.raises(InvalidSignature):
        other.public_key().verify(der, f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))


def test_the_same_send_key_gives_the_same_topic(service: PushService) -> None:
    sub = Browser().subscription(service.endpoint("a"))
    push = channel()
    push.send(message(sub, send_key="s-1"))
    push.send(message(sub, send_key="s-1"))
    push.send(message(sub, send_key="s-2"))
    topics = [seen.headers["Topic"] for seen in service.seen]
    assert topics[0] == topics[1] != topics[2]


# ------------------------------------------------------------------ gone, refused, retried


def test_one_gone_subscription_is_reported_and_the_other_delivers(service: PushService) -> None:
    gone: list[str] = []
    service.replies["/wpush/v2/old"] = Reply(410)
    old, new = service.endpoint("old"), service.endpoint("new")
    receipt = channel(on_gone=gone.append).send(
        message(Browser().subscription(old), Browser().subscription(new))
    )
    assert receipt.provider_id == "webpush:s-1:1/2"
    assert gone == [old]


@pytest.mark.parametrize("status", [404, 410])
def test_every_subscription_gone_is_a_bounce(service: PushService, status: int) -> None:
    gone: list[str] = []
    service.replies["/wpush/v2/a"] = Reply(status)
    service.replies["/wpush/v2/b"] = Reply(status)
    subs = [Browser().subscription(service.endpoint(n)) for n in ("a", "b")]
    with pytest.raises(TargetsGone) as caught:
        channel(on_gone=gone.append).send(message(*subs))
    assert caught.value.bounce is True
    assert set(caught.value.gone) == {service.endpoint("a"), service.endpoint("b")}
    assert gone == [service.endpoint("a"), service.endpoint("b")]
    assert "/wpush/" not in str(caught.value)  # an endpoint is a credential: origins only


def test_rate_limited_is_transient_with_retry_after(service: PushService) -> None:
    service.replies["/wpush/v2/a"] = Reply(429, {"Retry-After": "120"})
    with pytest.raises(TransientChannelError) as caught:
        channel().send(message(Browser().subscription(service.endpoint("a"))))
    assert not isinstance(caught.value, AmbiguousDeliveryError)
    assert caught.value.retry_after == 120.0


def test_a_server_error_is_transient(service: PushService) -> None:
    service.replies["/wpush/v2/a"] = Reply(503)
    with pytest.raises(TransientChannelError) as caught:
        channel().send(message(Browser().subscription(service.endpoint("a"))))
    assert caught.value.retry_after is None
    assert "503" in str(caught.value)


def test_payload_too_large_answer_is_permanent(service: PushService) -> None:
    service.replies["/wpush/v2/a"] = Reply(413)
    with pytest.raises(PermanentChannelError) as caught:
        channel().send(message(Browser().subscription(service.endpoint("a"))))
    assert caught.value.bounce is False
    assert "too large" in str(caught.value)


def test_a_notification_over_4096_bytes_is_refused_before_sending(service: PushService) -> None:
    with pytest.raises(PermanentChannelError, match="4096"):
        channel().send(message(Browser().subscription(service.endpoint("a")), body="x" * 4000))
    assert service.seen == []


def test_no_answer_after_the_request_left_is_ambiguous(service: PushService) -> None:
    service.replies["/wpush/v2/a"] = Reply(hang_up=True)
    with pytest.raises(AmbiguousDeliveryError):
        channel().send(message(Browser().subscription(service.endpoint("a"))))
    assert len(service.seen) == 1


def test_a_private_endpoint_is_blocked_before_connecting(service: PushService) -> None:
    with pytest.raises(BlockedAddress, match="loopback"):
        channel(allow=()).send(message(Browser().subscription(service.endpoint("a"))))
    assert service.seen == []


def test_plain_http_endpoints_are_refused_unless_allowed(service: PushService) -> None:
    with pytest.raises(PermanentChannelError, match="https only"):
        channel(allow_http=False).send(message(Browser().subscription(service.endpoint("a"))))
    assert service.seen == []


def test_a_contact_without_subscription_fails_without_bounce() -> None:
    with pytest.raises(PermanentChannelError, match="no web push subscription") as caught:
        channel().send(message())
    assert caught.value.bounce is False


# ------------------------------------------------------------------ settings


def test_both_key_spellings_give_the_same_application_server_key() -> None:
    raw = b64url(VAPID.private_numbers().private_value.to_bytes(32, "big"))
    pem = WebPushSettings(vapid_private_key=VAPID_PEM, vapid_subject=SUBJECT)
    b64 = WebPushSettings(vapid_private_key=raw, vapid_subject=SUBJECT)
    assert pem.application_server_key == b64.application_server_key == b64url(point(VAPID))


def test_every_settings_problem_is_reported_at_once_without_the_key() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        WebPushSettings(
            vapid_private_key="c2VjcmV0LXZhbHVl", vapid_subject="admin", urgency="hihg", ttl=-1
        )
    text = str(caught.value)
    for expected in ("vapid_private_key", "vapid_subject", "ttl", "did you mean high"):
        assert expected in text
    assert "c2VjcmV0LXZhbHVl" not in text


def test_from_config_reads_the_key_from_the_environment_and_refuses_typos() -> None:
    built = webpush_channel_from_config(
        {"vapid_private_key": "${VAPID_KEY}", "vapid_subject": SUBJECT, "allow": ["10.0.0.0/8"]},
        {"VAPID_KEY": VAPID_PEM},
    )
    assert built.settings.allow == ("10.0.0.0/8",)
    assert built.info.name == "push"
    with pytest.raises(ChannelConfigError, match="did you mean 'urgency'"):
        webpush_channel_from_config(
            {"vapid_private_key": VAPID_PEM, "vapid_subject": SUBJECT, "urgncy": "high"}, {}
        )


@pytest.mark.parametrize(
    ("subscription", "field_name"),
    [
        ({"endpoint": "https://push.example/x"}, "subscription.keys"),
        ({"endpoint": "", "keys": {}}, "subscription.endpoint"),
        (
            {
                "endpoint": "https://push.example/x",
                "keys": {"p256dh": "AAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
            },
            "subscription.keys.p256dh",
        ),
        (
            {
                "endpoint": "https://push.example/x",
                "keys": {"p256dh": b64url(point(VAPID)), "auth": "AAAA"},
            },
            "subscription.keys.auth",
        ),
    ],
)
def test_malformed_subscriptions_name_the_field(
    subscription: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field_name}:"):
        Subscription.from_json(subscription)
