"""What an API key must allow to call a route: ``read``, ``write`` or ``admin``.

A key's scope includes the ones below it (admin > write > read). A route says what it needs
with `@requires(...)`; without it, a reading method (GET, HEAD, OPTIONS) needs ``read`` and any
other method ``write``. Erasure and key management need ``admin``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

SCOPES = ("read", "write", "admin")
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

View = TypeVar("View", bound=Callable[..., Any])


def requires(scope: str) -> Callable[[View], View]:
    """Mark a view as needing at least `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown API scope {scope!r}; one of {', '.join(SCOPES)}")

    def mark(view: View) -> View:
        view.api_scope = scope  # type: ignore[attr-defined]
        return view

    return mark


def scope_needed(view: Callable[..., Any] | None, method: str) -> str:
    """The scope a request with `method` to `view` needs."""
    declared = getattr(view, "api_scope", None)
    if declared in SCOPES:
        return str(declared)
    return "read" if method.upper() in READING_METHODS else "write"


def allows(granted: str, needed: str) -> bool:
    """Whether a key of scope `granted` may call a route that needs `needed`."""
    return SCOPES.index(granted) >= SCOPES.index(needed)
