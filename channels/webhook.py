"""The webhook channel: a signed JSON request to a URL, through the outbound address guard.

See `channels/WEBHOOK.md` for the settings, the signature recipe receivers use, and how each
answer maps to a retry decision.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from channels.base import Channel, ChannelInfo
from channels.errors import PermanentChannelError, TransientChannelError
from channels.message import OutboundMessage, Receipt
from channels.netguard import AddressPolicy
from channels.pinned_http import Answer, Target, Transport, parse_target, retry_after

SIGNATURE_HEADER = "X-Parcours-Signature"
METHODS = ("POST", "PUT", "PATCH")
RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class WebhookSettings:
    """How the webhook channel calls receivers. Only `secret` has no default."""

    secret: str  # HMAC-SHA256 key for X-Parcours-Signature
    connect_timeout: float = 5.0  # seconds for TCP connect and TLS handshake
    read_timeout: float = 10.0  # seconds per read, and for the whole answer
    max_body_bytes: int = 256 * 1024  # larger request bodies are refused before connecting
    max_response_bytes: int = 64 * 1024  # at most this much of an answer is read
    allow: tuple[str, ...] = ()  # CIDR blocks, addresses or host names exempt from the guard
    allow_http: bool = False  # plain http (no TLS) is refused unless set
    user_agent: str = "Parcours-Webhook/1"
    max_redirects: int = 0  # 0: a 3xx answer is a permanent failure
    ca_file: str | None = None  # CA bundle for receivers with a private CA
    # The receiver deduplicates on Idempotency-Key: a message whose answer was lost (or that was
    # in flight when a worker died) is sent again with the same key instead of marked ambiguous.
    idempotent: bool = False

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("webhook secret is empty: every request must be signed")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("webhook timeouts must be positive")
        if self.max_body_bytes <= 0 or self.max_response_bytes <= 0 or self.max_redirects < 0:
            raise ValueError("webhook size limits must be positive and max_redirects not negative")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Parcours-Signature value: `t=<timestamp>,v1=<hex HMAC-SHA256 of "<t>.<body>">`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    header: str, body: bytes, secret: str, *, now: float, tolerance: float = 300.0
) -> bool:
    """The receiver's check: a v1 signature matches and the timestamp is within `tolerance`."""
    timestamp, signatures = None, []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, s) for s in signatures)


def retry_schedule(
    attempt: int,
    *,
    base: float = 30.0,
    cap: float = 6 * 3600.0,
    jitter: float = 0.25,
    seed: int | str | None = None,
) -> float:
    """Seconds to wait before retry number `attempt` (1 is the first retry).

    The ceiling doubles from `base` up to `cap`; the wait is drawn uniformly from
    [ceiling * (1 - jitter), ceiling], so retries of many messages spread out instead of arriving
    together, and no wait exceeds `cap`. The same `seed` (a send key, say) gives the same wait.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be between 0 and 1, got {jitter}")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    rng = random.Random(f"{seed}:{attempt}") if seed is not None else random.Random()
    return ceiling * (1.0 - jitter * rng.random())


class WebhookChannel(Channel):
    """Sends `message.parts["body"]` (or all parts as JSON) to the recipient's URL, signed."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        info: ChannelInfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if info is None:
            from dataclasses import replace

            from channels.registry import channel_info

            info = replace(channel_info("webhook"), idempotent_provider=settings.idempotent)
        self.info = info
        self.settings = settings
        self.clock = clock
        self.transport = Transport(
            AddressPolicy(settings.allow),
            ssl.create_default_context(cafile=settings.ca_file),
            settings.connect_timeout,
            settings.read_timeout,
            settings.max_response_bytes,
            untrusted_certificate_is_config=False,  # one receiver's certificate, not ours
        )

    def send(self, message: OutboundMessage) -> Receipt:
        method = str(message.metadata.get("method", "POST")).upper()
        if method not in METHODS:
            raise PermanentChannelError(f"webhook method {method!r} is not one of {METHODS}")
        url = message.recipient.get("url") or message.metadata.get("url")
        if not isinstance(url, str) or not url:
            raise PermanentChannelError(
                f"webhook {message.send_key}: no URL in recipient or metadata"
            )
        body = _body(message.parts)
        if len(body) > self.settings.max_body_bytes:
            raise PermanentChannelError(
                f"webhook body is {len(body)} bytes, over max_body_bytes "
                f"({self.settings.max_body_bytes})"
            )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.settings.user_agent,
            SIGNATURE_HEADER: sign(self.settings.secret, int(self.clock()), body),
            "X-Parcours-Send-Key": message.send_key,
            "Idempotency-Key": message.send_key,
            "Connection": "close",
        }
        for _hop in range(self.settings.max_redirects + 1):
            # Each hop is parsed and vetted anew: scheme, allow_http, the address guard.
            target = parse_target(url, allow_http=self.settings.allow_http, what="webhook")
            answer = self.transport.request(method, target, body, headers, "webhook")
            if not 300 <= answer.status < 400:
                return _decide(answer, target, message.send_key, self.clock())
            url = urljoin(url, self._redirect(answer, target, method))
        raise PermanentChannelError(
            f"webhook redirected more than max_redirects ({self.settings.max_redirects}) times"
        )

    def _redirect(self, answer: Answer, target: Target, method: str) -> str:
        if self.settings.max_redirects == 0:
            raise PermanentChannelError(
                f"webhook {target.origin} answered {answer.status}: redirects are refused; "
                "point the webhook at the final URL"
            )
        if answer.status not in (307, 308):
            raise PermanentChannelError(
                f"webhook {target.origin} answered {answer.status}, which would turn the {method} "
                "into a GET; only 307 and 308 are followed"
            )
        location = answer.headers.get("location")
        if not location:
            raise PermanentChannelError(f"webhook {target.origin}: redirect without Location")
        return location


def _body(parts: Mapping[str, str]) -> bytes:
    """`parts["body"]` as sent when it is a JSON object or array, else every part as JSON."""
    text = parts.get("body")
    if isinstance(text, str):
        try:
            document = json.loads(text, parse_constant=_reject_constant)
        except ValueError:
            document = None
        if isinstance(document, dict | list):
            return text.encode()
    return json.dumps(dict(parts), ensure_ascii=False, separators=(",", ":")).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decide(answer: Answer, target: Target, send_key: str, now: float) -> Receipt:
    status = answer.status
    if 200 <= status < 300:
        return Receipt(provider_id=f"webhook:{status}:{send_key}")
    if status in RETRYABLE_STATUSES or status >= 500:
        raise TransientChannelError(
            f"webhook {target.origin} answered {status}",
            retry_after=retry_after(answer.headers, now),
        )
    raise PermanentChannelError(f"webhook {target.origin} answered {status}")


def webhook_channel_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> WebhookChannel:
    """A WebhookChannel from a plain mapping (the keys of WebhookSettings); `${ENV}` secrets."""
    import dataclasses
    import os

    from channels.config import resolve_secrets
    from channels.errors import ChannelConfigError

    values = resolve_secrets(config, os.environ if environ is None else environ)
    known = [f.name for f in dataclasses.fields(WebhookSettings)]
    problems = [_unknown_key(key, known) for key in values if key not in known]
    if not values.get("secret"):
        problems.append("'secret' is required: every request is signed with it")
    if "allow" in values:
        allow = values["allow"] or ()
        if not isinstance(allow, list | tuple) or not all(isinstance(v, str) for v in allow):
            problems.append("'allow' must be a list of CIDR blocks, addresses or host names")
        else:
            values["allow"] = tuple(allow)
            problems += [f"'allow[{i}]': {p}" for i, p in _allow_problems(allow)]
    if problems:
        raise ChannelConfigError(f"webhook settings: {'; '.join(problems)}")
    try:
        return WebhookChannel(WebhookSettings(**values))
    except (TypeError, ValueError) as exc:
        raise ChannelConfigError(f"webhook settings: {exc}") from None


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")


def _allow_problems(allow: Any) -> list[tuple[int, str]]:
    """The allow-list entries the address guard cannot read, by index."""
    found = []
    for i, entry in enumerate(allow):
        try:
            AddressPolicy([entry])
        except ValueError as exc:
            found.append((i, str(exc)))
    return found
