"""Time comes from a clock object, never from datetime.now() in the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock moved by hand: simulations and tests."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        """Move to `instant`; a virtual clock never goes backwards."""
        instant = instant.astimezone(UTC)
        if instant > self._now:
            self._now = instant

    def advance(self, delta: timedelta) -> None:
        self.set(self._now + delta)
