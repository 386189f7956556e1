"""What a contact's fields may hold: the patterns and limits that the import, the consent ledger
and the API all check, below each of them so none imports another for them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# Patterns are used with fullmatch: "$" would also accept a trailing newline.
EMAIL = re.compile(r"[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s\x00-\x1f]+")
PHONE = re.compile(r"\+?[0-9][0-9 .-]{5,20}")
MAX_JSON_DEPTH = 32
MAX_EMAIL_LENGTH = 320


class RowInvalid(ValueError):
    """A row cannot be accepted; `field` names the field at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def shown(value: Any, limit: int = 80) -> str:
    """A value quoted in an error message, cut short so a huge input is not echoed back."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_json(value: Any, field_name: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse what a JSON column cannot store: NaN, NUL characters, deep nesting, odd types.

    `max_depth` counts nested objects and lists, `value` itself included; an empty `field_name`
    makes error paths start at the first key or index ("3.name").
    """
    # Iterative, so a hostile depth cannot exhaust the stack; PostgreSQL's JSONB rejects NaN
    # and \u0000, which would otherwise surface as a database error after validation.
    stack: list[tuple[Any, str, int]] = [(value, field_name, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, Mapping | list | tuple) and depth >= max_depth:
            raise RowInvalid(path, f"nested deeper than {max_depth} levels")
        prefix = f"{path}." if path else ""
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str) or "\x00" in key:
                    raise RowInvalid(path, f"key {shown(repr(key))} is not JSON text")
                stack.append((child, f"{prefix}{key}", depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{prefix}{i}", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            if "\x00" in item:
                raise RowInvalid(path, "contains a NUL character")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise RowInvalid(path, f"{item} is not a JSON number")
        elif item is not None and not isinstance(item, int):
            raise RowInvalid(path, f"a {type(item).__name__} is not a JSON value")
