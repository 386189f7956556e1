"""What a channel receives (already rendered) and what it returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OutboundMessage:
    """A rendered message for one recipient. `send_key` doubles as the provider idempotency key."""

    send_key: str
    channel: str
    recipient: Mapping[str, Any]  # external_id, email, phone... only what the channel needs
    parts: Mapping[str, str]  # subject/text/html or text or title/body
    topic: str | None = None
    kind: str = "marketing"
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """The provider accepted the message."""

    provider_id: str
    status: str = "sent"
