"""Scenario definitions: the YAML language, its validation and the compiled, immutable Scenario."""

from __future__ import annotations
