"""Durations and local times as written in scenarios: ``90s``, ``1h30m``, ``2d``; ``09:00``."""

from __future__ import annotations

import re
from datetime import time, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*-?\s*(?:\d+\s*[smhdw]\s*)+$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_duration(text: str | int) -> timedelta:
    """Parse ``"1h30m"`` (or a number of seconds) into a timedelta; ValueError when malformed."""
    if isinstance(text, bool):
        raise ValueError("a duration is text like '2d' or '1h30m'")
    if isinstance(text, int):
        return timedelta(seconds=text)
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(f"'{text}' is not a duration; write it like '30m', '1h30m', '2d' or '1w'")
    sign = -1 if text.strip().startswith("-") else 1
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    return timedelta(seconds=sign * seconds)


def format_duration(delta: timedelta) -> str:
    """Inverse of parse_duration with the largest exact units (25 hours → ``1d1h``)."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds == 0:
        return "0s"
    out = []
    for unit in ("w", "d", "h", "m", "s"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return sign + "".join(out)


def parse_local_time(text: str) -> time:
    """Parse ``"09:00"`` into a time; ValueError when malformed."""
    m = _TIME.match(str(text).strip())
    if not m:
        raise ValueError(f"'{text}' is not a local time; write it as HH:MM, e.g. '09:00'")
    return time(int(m.group(1)), int(m.group(2)))
