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


def _ensure_builtins() -> None:
    if not _INFO:
        from channels import outbox

        outbox.register_builtins()
