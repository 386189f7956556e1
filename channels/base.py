"""The channel interface and the per-channel facts the policy gate and KPIs need."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from channels.message import OutboundMessage, Receipt


@dataclass(frozen=True)
class ChannelInfo:
    """Facts about a channel (see the channel criteria in the domain notes)."""

    name: str
    label: str
    weight: float  # intrusiveness; counts against pressure caps
    realtime: bool
    cost: float  # per message, in the workspace currency
    max_length: int | None  # characters of the main text part, if limited
    # The provider dedupes on the send key (idempotency key): the delivery loop sends a message
    # whose outcome is unknown (no answer, or in flight when a worker died) again, rather than
    # marking it ambiguous. A channel whose provider only sometimes dedupes sets it per instance.
    idempotent_provider: bool
    required_parts: tuple[tuple[str, ...], ...]  # each inner tuple: at least one of these parts
    optional_parts: tuple[str, ...] = ()

    @property
    def parts(self) -> tuple[str, ...]:
        """Every part a template for this channel may have."""
        names = [p for group in self.required_parts for p in group] + list(self.optional_parts)
        return tuple(dict.fromkeys(names))


class Channel(ABC):
    """Delivers rendered messages. `send` returns a Receipt or raises a ChannelError subclass.

    Implementations pass `message.send_key` to the provider as an idempotency key when it takes one.
    """

    info: ChannelInfo

    @abstractmethod
    def send(self, message: OutboundMessage) -> Receipt:
        """Deliver one message."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has none."""
