"""The outbox: the embedded default for every channel. Messages are kept, not delivered.

The send ledger stores what the outbox accepted, so `parcours outbox` can show it; real providers
replace the outbox channel by channel when configured.
"""

from __future__ import annotations

from functools import partial

from channels.base import Channel, ChannelInfo
from channels.message import OutboundMessage, Receipt
from channels.registry import register_channel

BUILTIN_CHANNELS = (
    ChannelInfo(
        "email",
        "Email",
        1.0,
        False,
        0.001,
        None,
        True,
        (("subject",), ("text", "html")),
        ("html", "text"),
    ),
    ChannelInfo("sms", "SMS", 3.0, True, 0.05, 1530, False, (("text",),)),
    ChannelInfo(
        "push", "Push", 2.0, True, 0.0, 240, True, (("title",), ("body",)), ("url", "image")
    ),
    ChannelInfo(
        "onsite",
        "On-site banner",
        0.5,
        True,
        0.0,
        None,
        True,
        (("title",), ("body",)),
        ("url", "image"),
    ),
    ChannelInfo("mail", "Paper mail", 4.0, False, 1.2, None, True, (("text",),)),
    ChannelInfo("call", "Call-centre task", 5.0, False, 4.0, None, True, (("text",),)),
    ChannelInfo("webhook", "Webhook", 0.0, True, 0.0, None, False, (("body",),)),
)


class OutboxChannel(Channel):
    """Accepts every message; the ledger row is the record of it."""

    def __init__(self, info: ChannelInfo) -> None:
        self.info = info
        self.sent: list[OutboundMessage] = []

    def send(self, message: OutboundMessage) -> Receipt:
        self.sent.append(message)
        return Receipt(provider_id=f"outbox:{message.send_key}")


def register_builtins() -> None:
    """Register every built-in channel name with the outbox as its delivery."""
    for info in BUILTIN_CHANNELS:
        register_channel(info, partial(OutboxChannel, info))
