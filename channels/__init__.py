"""Delivery channels: one small interface, a registry, typed errors. Imports nothing from engine."""

from __future__ import annotations

from channels.base import Channel, ChannelInfo
from channels.errors import ChannelError, PermanentChannelError, TransientChannelError
from channels.message import OutboundMessage, Receipt
from channels.registry import channel_info, channel_names, get_channel, register_channel

__all__ = [
    "Channel",
    "ChannelError",
    "ChannelInfo",
    "OutboundMessage",
    "PermanentChannelError",
    "Receipt",
    "TransientChannelError",
    "channel_info",
    "channel_names",
    "get_channel",
    "register_channel",
]
