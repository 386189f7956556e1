"""What an SMS provider calls back with: delivery reports, inbound replies, and their signature.

The built-in shapes and the field mappings for other providers are documented in SMS.md. These
functions parse; deciding what a report or a STOP reply changes is the engine's business.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

REPORT_STATUSES = ("delivered", "failed", "bounced", "sent")

# Provider words (lower-case) → our status. "bounced" is kept for numbers that can never receive an
# SMS, because it suppresses the number; anything merely undelivered is "failed".
STATUS_WORDS: dict[str, str] = {
    **dict.fromkeys(("delivered", "delivrd", "delivery_success"), "delivered"),
    **dict.fromkeys(
        (
            "sent",
            "accepted",
            "acceptd",
            "queued",
            "scheduled",
            "sending",
            "submitted",
            "enroute",
            "buffered",
            "pending",
        ),
        "sent",
    ),
    **dict.fromkeys(("bounced", "invalid_number", "invalid_recipient"), "bounced"),
    **dict.fromkeys(
        (
            "failed",
            "undelivered",
            "undeliverable",
            "undeliv",
            "rejected",
            "rejectd",
            "expired",
            "deleted",
            "error",
        ),
        "failed",
    ),
}


class SmsPayloadError(ValueError):
    """A callback payload does not have the expected shape; the message names the field."""


class DeliveryReport(NamedTuple):
    provider_id: str
    status: str  # one of REPORT_STATUSES
    error: str | None


@dataclass(frozen=True)
class ReportMapping:
    """Where a provider puts the fields of a delivery report (dotted paths, list items by index)."""

    provider_id: str = "id"
    status: str = "status"
    error: str = ""  # "" when the provider sends no error field
    statuses: Mapping[str, str] = field(default_factory=dict)  # provider word → our status


@dataclass(frozen=True)
class InboundMapping:
    """Where a provider puts the sender and the text of an inbound SMS."""

    from_phone: str = "from"
    text: str = "text"


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists ("messages.0.id"); None when it breaks."""
    for step in path.split("."):
        if isinstance(data, Mapping):
            data = data.get(step)
        elif isinstance(data, list) and step.isdigit() and int(step) < len(data):
            data = data[int(step)]
        else:
            return None
    return data


def payload_from_body(body: bytes, content_type: str) -> dict[str, Any]:
    """A callback body as a dict: JSON, or form fields (one value each) for form-encoded bodies."""
    try:
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            return dict(pairs)
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SmsPayloadError(f"unreadable callback body: {exc}") from exc
    if not isinstance(data, dict):
        raise SmsPayloadError("the callback body is not a JSON object")
    return data


def parse_delivery_report(
    payload: Mapping[str, Any], format: Literal["json"] | ReportMapping = "json"
) -> DeliveryReport:
    """(provider_id, status, error) from a delivery report; SmsPayloadError when it cannot."""
    if format == "json":
        mapping = ReportMapping(error="error")
        provider_id = lookup(payload, "id") or lookup(payload, "reference")
    elif isinstance(format, ReportMapping):
        mapping = format
        provider_id = lookup(payload, mapping.provider_id)
    else:
        raise ValueError(f"unknown report format {format!r}; use 'json' or a ReportMapping")
    if provider_id in (None, "") or isinstance(provider_id, (dict, list)):
        raise SmsPayloadError(f"delivery report: no message id at '{mapping.provider_id}'")
    word = str(lookup(payload, mapping.status) or "").strip().lower()
    words = {**STATUS_WORDS, **{k.lower(): v for k, v in mapping.statuses.items()}}
    status = words.get(word)
    if status not in REPORT_STATUSES:
        raise SmsPayloadError(
            f"delivery report {provider_id}: unknown status '{word}' at '{mapping.status}'; "
            "map it with ReportMapping.statuses"
        )
    error = _error(lookup(payload, mapping.error)) if mapping.error else None
    return DeliveryReport(str(provider_id), status, error)


def _error(value: Any) -> str | None:
    if isinstance(value, Mapping):
        parts = [str(value[k]) for k in ("code", "message") if value.get(k) not in (None, "")]
        return " ".join(parts) or None
    return None if value in (None, "") else str(value)


def parse_inbound(
    payload: Mapping[str, Any], format: Literal["json"] | InboundMapping = "json"
) -> tuple[str, str]:
    """(from_phone, text) of an inbound SMS; the number in E.164 when the provider omits the +."""
    mapping = InboundMapping() if format == "json" else format
    if not isinstance(mapping, InboundMapping):
        raise ValueError(f"unknown inbound format {format!r}; use 'json' or an InboundMapping")
    phone, text = lookup(payload, mapping.from_phone), lookup(payload, mapping.text)
    if not isinstance(phone, (str, int)) or not str(phone).strip():
        raise SmsPayloadError(f"inbound SMS: no sender number at '{mapping.from_phone}'")
    if not isinstance(text, str):
        raise SmsPayloadError(f"inbound SMS: no text at '{mapping.text}'")
    number = re.sub(r"[\s.\-()]", "", str(phone))
    if re.fullmatch(r"[1-9]\d{7,14}", number):  # international digits without the leading +
        number = "+" + number
    return number, text


def callback_signature(secret: str | bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body: what the provider puts in the signature header."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("an empty callback secret authenticates nothing")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_callback_signature(secret: str | bytes, body: bytes, header_value: str) -> bool:
    """True when the header ("<hex>" or "sha256=<hex>") signs these exact bytes with the secret.

    The comparison takes the same time wherever the first difference is.
    """
    expected = callback_signature(secret, body)
    given = header_value.strip()
    if given[:7].lower() == "sha256=":
        given = given[7:]
    if not given.isascii():
        return False
    return hmac.compare_digest(expected, given.lower())
