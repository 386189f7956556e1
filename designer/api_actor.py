"""Who the audit log names for a change made through the API."""

from __future__ import annotations

from flask import g

FALLBACK = "api"


def actor() -> str:
    """The name of the API key the request came with (`g.api_key`, set by the key check:
    a named key's name, or ``PARCOURS_API_KEY``), or "api"."""
    name = getattr(g, "api_key", None)
    return str(name)[:64] if name else FALLBACK
