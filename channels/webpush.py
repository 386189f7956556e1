"""The Web Push channel: notifications to browsers, encrypted for each subscription (RFC 8291),
signed with the site's VAPID key (RFC 8292) and posted to the push service (RFC 8030).

The request is sent through the outbound address guard: a subscription endpoint is data a
browser sent us, so it must not become a way into the private network. Settings, the answer
mapping and the subscribe snippet for sites are in `channels/PUSH.md`.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import json
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, cast

import http_ece  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02  # type: ignore[import-untyped]

from channels.base import Channel, ChannelInfo
from channels.config import resolve_secrets
from channels.errors import ChannelConfigError, ChannelError, PermanentChannelError
from channels.message import OutboundMessage, Receipt
from channels.netguard import AddressPolicy
from channels.pinned_http import Answer, Transport, parse_target
from channels.push_fanout import Fanout, OnGone, TargetGone, check_answer

URGENCIES = ("very-low", "low", "normal", "high")
MAX_TTL = 28 * 24 * 3600  # push services keep a message four weeks at most
MAX_RECORD = 4096  # the largest body push services must accept (RFC 8291, section 4)
VAPID_LIFETIME = 12 * 3600  # the JWT `exp`; services refuse more than 24 hours
_SUBJECT = re.compile(r"(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?)", re.IGNORECASE)


def b64url(data: bytes) -> str:
    """Unpadded base64url, the encoding of every Web Push key."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Bytes of unpadded (or padded) base64url; ValueError when it is not."""
    try:
        return base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def load_vapid_key(text: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from PEM, or base64url of the raw 32-byte scalar or of DER."""
    try:
        if "-----BEGIN" in text:
            key: Any = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            raw = b64url_decode(text.replace("\n", ""))
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
            else:
                key = serialization.load_der_private_key(raw, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        # never echo the value: it is the key
        raise ValueError("vapid_private_key is not a P-256 private key (PEM or base64url)")
    return key


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The application server key browsers pass to `pushManager.subscribe` (base64url)."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


@dataclass(frozen=True)
class Subscription:
    """What `PushSubscription.toJSON()` gives in the browser, checked."""

    endpoint: str
    p256dh: str
    auth: str

    @classmethod
    def from_json(cls, data: Any) -> Subscription:
        """ValueError names the field that is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("subscription: expected {endpoint, keys: {p256dh, auth}}")
        endpoint, keys = data.get("endpoint"), data.get("keys")
        if not isinstance(endpoint, str) or not endpoint or len(endpoint) > 2048:
            raise ValueError("subscription.endpoint: expected a URL of at most 2048 characters")
        if not isinstance(keys, Mapping):
            raise ValueError("subscription.keys: expected {p256dh, auth}")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        for name, value, size in (("p256dh", p256dh, 65), ("auth", auth, 16)):
            try:
                raw = b64url_decode(value) if isinstance(value, str) else b""
            except ValueError:
                raw = b""
            if len(raw) != size or (name == "p256dh" and raw[0] != 4):
                raise ValueError(f"subscription.keys.{name}: expected {size} bytes in base64url")
        return cls(endpoint, cast(str, p256dh), cast(str, auth))


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class WebPushSettings:
    """The `push` channel with `provider: webpush`. Every problem is reported at once."""

    vapid_private_key: str = field(
        repr=False, metadata=_help("P-256 key, PEM or base64url; write ${ENV_NAME}")
    )
    vapid_subject: str = field(metadata=_help("mailto: or https: contact for push services"))
    ttl: int = field(default=86400, metadata=_help("seconds a push service keeps the message"))
    urgency: str = field(default="normal", metadata=_help("very-low, low, normal or high"))
    icon: str = field(default="", metadata=_help("default notification icon URL"))
    allow: tuple[str, ...] = field(default=(), metadata=_help("guard exemptions (CIDR, hosts)"))
    allow_http: bool = field(default=False, metadata=_help("accept http:// endpoints (tests)"))
    connect_timeout: float = field(default=5.0, metadata=_help("seconds for connect and TLS"))
    read_timeout: float = field(default=10.0, metadata=_help("seconds for the answer"))
    ca_file: str | None = field(default=None, metadata=_help("CA bundle replacing the system's"))
    site_key: str = field(
        default="", repr=False, metadata=_help("key sites send to /push/subscribe")
    )
    origins: tuple[str, ...] = field(default=(), metadata=_help("site origins allowed (CORS)"))
    contact_secret: str = field(
        default="", repr=False, metadata=_help("when set, subscribe needs a contact signature")
    )

    def __post_init__(self) -> None:
        problems = []
        try:
            load_vapid_key(self.vapid_private_key)
        except ValueError as exc:
            problems.append(str(exc))
        if not _SUBJECT.fullmatch(self.vapid_subject):
            problems.append("vapid_subject: expected mailto:someone@example.com or https://…")
        if not 0 <= self.ttl <= MAX_TTL:
            problems.append(f"ttl: expected 0 to {MAX_TTL} seconds")
        if self.urgency not in URGENCIES:
            close = difflib.get_close_matches(self.urgency, URGENCIES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"urgency: '{self.urgency}' is not one of {', '.join(URGENCIES)}{hint}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            problems.append("connect_timeout, read_timeout: must be positive")
        try:
            AddressPolicy(self.allow)
        except ValueError as exc:
            problems.append(f"allow: {exc}")
        for origin in self.origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                problems.append(f"origins: '{origin}' is not scheme://host[:port]")
        if problems:
            raise ChannelConfigError("web push settings: " + "; ".join(problems))

    @property
    def application_server_key(self) -> str:
        """The public half of the VAPID key, base64url, for `pushManager.subscribe`."""
        return public_key_b64(load_vapid_key(self.vapid_private_key))

    def policy(self) -> AddressPolicy:
        """The address guard for push service endpoints."""
        return AddressPolicy(self.allow)


class WebPushChannel(Channel):
    """Sends a notification to each of `recipient["subscriptions"]`.

    `on_gone(endpoint)` is called for every subscription the push service says is gone (404,
    410); the engine deletes it. It may be set after construction.
    """

    def __init__(
        self,
        settings: WebPushSettings,
        *,
        on_gone: OnGone | None = None,
        clock: Callable[[], float] = time.time,
        info: ChannelInfo | None = None,
    ) -> None:
        if info is None:
            from channels.registry import channel_info

            info = channel_info("push")
        self.info = info
        self.settings = settings
        self.on_gone = on_gone
        self.clock = clock
        self._vapid = Vapid02(private_key=load_vapid_key(settings.vapid_private_key))
        self.transport = Transport(
            settings.policy(),
            ssl.create_default_context(cafile=settings.ca_file),
            settings.connect_timeout,
            settings.read_timeout,
        )

    def send(self, message: OutboundMessage) -> Receipt:
        what = f"push {message.send_key}"
        subscriptions = message.recipient.get("subscriptions") or []
        if not isinstance(subscriptions, list) or not subscriptions:
            raise PermanentChannelError(f"{what}: the contact has no web push subscription")
        body = self.payload(message)
        fanout = Fanout(what)
        for item in subscriptions:
            endpoint = str(item.get("endpoint", "")) if isinstance(item, Mapping) else ""
            origin = "?"
            try:
                target = parse_target(endpoint, allow_http=self.settings.allow_http, what=what)
                origin = target.origin
                answer = self._post(item, target, body, message)
                check_answer(answer, f"{what}: {origin}", self.clock(), auth_is_config=False)
                fanout.accepted += 1
            except ChannelConfigError:
                raise
            except ChannelError as exc:
                fanout.add_error(endpoint, origin, exc)
        return fanout.outcome(len(subscriptions), f"webpush:{message.send_key}", self.on_gone)

    def payload(self, message: OutboundMessage) -> bytes:
        """The JSON the service worker receives (see static/push-sw.js)."""
        parts = message.parts
        data: dict[str, str] = {"title": parts.get("title", ""), "body": parts.get("body", "")}
        for name in ("url", "image"):
            if parts.get(name):
                data[name] = parts[name]
        if self.settings.icon:
            data["icon"] = self.settings.icon
        data["tag"] = message.send_key  # a second delivery replaces the first notification
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    def _post(self, item: Any, target: Any, body: bytes, message: OutboundMessage) -> Answer:
        what = f"push {message.send_key}: {target.origin}"
        try:
            subscription = Subscription.from_json(item)
        except ValueError as exc:
            raise TargetGone(f"{what}: unusable subscription ({exc})") from None
        encrypted = http_ece.encrypt(
            body,
            private_key=ec.generate_private_key(ec.SECP256R1()),  # one ephemeral key per message
            dh=b64url_decode(subscription.p256dh),
            auth_secret=b64url_decode(subscription.auth),
            version="aes128gcm",
        )
        if len(encrypted) > MAX_RECORD:
            raise PermanentChannelError(
                f"{what}: the notification is {len(encrypted)} bytes encrypted, over the "
                f"{MAX_RECORD} push services accept; shorten the title or body"
            )
        urgency = str(message.metadata.get("urgency") or self.settings.urgency)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "aes128gcm",
            "TTL": str(self.settings.ttl),
            "Urgency": urgency if urgency in URGENCIES else self.settings.urgency,
            # A retried message replaces the copy still waiting at the push service.
            "Topic": b64url(hashlib.sha256(message.send_key.encode()).digest()[:24]),
            "Connection": "close",
            **self._vapid_headers(target.origin),
        }
        return self.transport.post(target, encrypted, headers, what)

    def _vapid_headers(self, audience: str) -> dict[str, str]:
        claims = {
            "aud": audience,
            "exp": int(self.clock()) + VAPID_LIFETIME,
            "sub": self.settings.vapid_subject,
        }
        signed: dict[str, str] = self._vapid.sign(claims)
        return {"Authorization": signed["Authorization"]}


# --- configuration -------------------------------------------------------------------------------


def webpush_settings_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> WebPushSettings:
    """WebPushSettings from a plain mapping; `${ENV_NAME}` values come from `environ`."""
    values = resolve_secrets(config, os.environ if environ is None else environ)
    values.pop("provider", None)
    declared = {f.name for f in fields(WebPushSettings)}
    problems = []
    for key in sorted(set(values) - declared):
        close = difflib.get_close_matches(key, declared, n=1)
        problems.append(
            f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
        )
    problems += [
        f"'{key}' is required"
        for key in ("vapid_private_key", "vapid_subject")
        if not values.get(key)
    ]
    if problems:
        raise ChannelConfigError("web push configuration: " + "; ".join(problems))
    for key in ("allow", "origins"):
        if key in values:
            values[key] = tuple(str(v) for v in values[key] or ())
    try:
        return WebPushSettings(**values)
    except TypeError as exc:
        raise ChannelConfigError(f"web push configuration: {exc}") from None


def webpush_channel_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> WebPushChannel:
    """A WebPushChannel from channels.yaml settings (see PUSH.md); the engine sets `on_gone`."""
    return WebPushChannel(webpush_settings_from_config(config, environ))
