"""The policy gate: decisions taken before every send."""

from __future__ import annotations
