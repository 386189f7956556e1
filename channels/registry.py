"""Channel registry: built-ins register exactly like plug-ins."""

from __future__ import annotations

from collections.abc import Callable

from channels.base import Channel, ChannelInfo

_INFO: dict[str, ChannelInfo] = {}
_FACTORIES: dict[str, Callable[[], Channel]] = {}


def register_channel(info: ChannelInfo, factory: Callable[[], Channel]) -> None:
    """Make a channel available under `info.name` (a later registration replaces an earlier one)."""
    _INFO[info.name] = info
    _FACTORIES[info.name] = factory


def channel_names() -> tuple[str, ...]:
    """Names of every registered channel."""
    _ensure_builtins()
    return tuple(_INFO)


def channel_info(name: str) -> ChannelInfo:
    """Facts about a channel; KeyError with the known names if it does not exist."""
    _ensure_builtins()
    try:
        return _INFO[name]
    except KeyError:
        raise KeyError(f"unknown channel '{name}'; known: {', '.join(_INFO)}") from None


def get_channel(name: str) -> Channel:
    """A ready-to-use channel instance."""
    channel_info(name)
    return _FACTORIES[name]()


ENTRY_POINT_GROUP = "parcours.channels"


def _ensure_builtins() -> None:
    """Register the built-in channels, then those of installed plug-ins, once.

    A plug-in package declares an entry point in the group `parcours.channels` whose object is
    a function taking no argument that calls `register_channel` (as `outbox.register_builtins`
    does for the built-ins).
    """
    if not _INFO:
        from importlib.metadata import entry_points

        from channels import outbox

        outbox.register_builtins()
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()()
