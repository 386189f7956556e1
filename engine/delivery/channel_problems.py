"""A provider's configuration error, split into one Problem per setting it names.

Providers report every problem of a channel's settings in one ChannelConfigError, as items
joined by "; " after an optional "<provider> settings:" prefix, each naming its key the same few
ways: ``port: expected 1-65535``, ``'port' must be a number``, ``unknown key 'pasword' (did you
mean 'password'?)``, ``'template.to': malformed reference``. Reading those names back gives each
problem the path of its setting, which the channels file's positions turn into a line and column;
an item that names no setting stays on the channel's line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from engine.spec.problems import Problem

CODE = "channels.settings"
_PREFIX = re.compile(r"^(?P<unknown>unknown )?[\w ]*\b(?:settings|configuration): ")
_UNKNOWN = re.compile(r"^unknown key '(?P<key>[^']+)'(?: \((?P<hint>did you mean '[^']+'\?)\))?")
_QUOTED = re.compile(r"^'(?P<key>[^']+)'[: ]")
_LEADING = re.compile(r"^(?P<key>[A-Za-z_]\w*)(?:, [A-Za-z_]\w*)*: ")
_KNOWN = "known keys: "
_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")

Path = tuple[str | int, ...]


def settings_problems(channel: str, settings: Mapping[str, Any], message: str) -> list[Problem]:
    """One Problem per item of a provider's error `message` about the `channel`'s settings."""
    found = _PREFIX.match(message)
    items = message[found.end() :].split("; ") if found else message.split("; ")
    if found and found["unknown"]:  # "unknown webhook settings: a, b" lists the keys alone
        items = [f"unknown key '{key}'" for item in items for key in item.split(", ")]
    known = next((i[len(_KNOWN) :] for i in items if i.startswith(_KNOWN)), None)
    return [
        _problem(channel, settings, item, known) for item in items if not item.startswith(_KNOWN)
    ]


def _problem(channel: str, settings: Mapping[str, Any], item: str, known: str | None) -> Problem:
    unknown = _UNKNOWN.match(item)
    if unknown:
        hint = unknown["hint"] or (f"known keys: {known}" if known else None)
        message = f"Unknown setting '{unknown['key']}'."
        path: Path = (channel, unknown["key"])
        return Problem(CODE, message, path, hint=hint, extra={"at": "key"})
    path, message = _setting_path(settings, item)
    return Problem(CODE, message[:1].upper() + message[1:], (channel, *path))


def _setting_path(settings: Mapping[str, Any], item: str) -> tuple[Path, str]:
    """The path of the setting `item` is about (empty when it names none) and the message
    without the key it starts with."""
    leading = _LEADING.match(item)
    if leading and leading["key"] in settings:
        return _entry(settings, (leading["key"],), item), item[leading.end() :]
    quoted = _QUOTED.match(item)
    if quoted:
        path = tuple(int(i) if i else n for i, n in _PART.findall(quoted["key"]))
        said = item[quoted.end() :].lstrip() if quoted[0].endswith(":") else item
        return _entry(settings, path, item), said
    first = item.split(" ", 1)[0]
    if first in settings:  # "allow list entry '10.0.0.0/33' is neither CIDR nor host name"
        return _entry(settings, (first,), item), item
    return (), item


def _entry(settings: Mapping[str, Any], path: Path, item: str) -> Path:
    """`path`, or the list entry under it that the item quotes (a bad CIDR among several)."""
    value = settings.get(path[0]) if len(path) == 1 and isinstance(path[0], str) else None
    if isinstance(value, list):
        for index, entry in enumerate(value):
            if isinstance(entry, str) and f"'{entry}'" in item:
                return (*path, index)
    return path
