"""The pure runtime: enrollment state, time rules and the interpreter. No I/O here."""

from __future__ import annotations
