"""Who the audit log names for a change made through the API."""

from __future__ import annotations

from flask import g

FALLBACK = "api"


def actor() -> str:
    """The name of the API key the request came with (`g.api_key_name`, set by the key check
    when keys have names), or "api"."""
    name = getattr(g, "api_key_name", None)
    return str(name)[:64] if name else FALLBACK
