"""Warnings on triggers that load and run, but not as often as their author expects."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from engine.spec.durations import format_duration, parse_duration
from engine.spec.problems import Problem

YEAR = timedelta(days=365)


def _once_a_year(entry: Any) -> str | None:
    """How the entry rules keep a contact out of next year's anniversary, or None if they don't."""
    entry = entry if isinstance(entry, Mapping) else {}
    reentry = entry.get("reentry", "never")
    if reentry == "never":
        return "entry.reentry is never (the default): a contact enters once ever"
    if reentry == "cooldown":
        try:
            cooldown = parse_duration(entry.get("cooldown"))
        except (ValueError, TypeError):
            return None  # the schema reports the cooldown
        if cooldown >= YEAR:
            return f"a cooldown of {format_duration(cooldown)} skips some years"
    return None


def anniversary_problems(data: Any) -> list[Problem]:
    """A warning per anniversary trigger that entry rules let fire for one year only."""
    triggers = data.get("triggers") if isinstance(data, Mapping) else None
    if not isinstance(triggers, list):
        return []
    why = _once_a_year(data.get("entry"))
    if why is None:
        return []
    return [
        Problem(
            "trigger.anniversary_once",
            f"This anniversary comes every year, but {why}.",
            ("triggers", i, "anniversary"),
            severity="warning",
            hint="set entry: {reentry: always} to fire every year",
        )
        for i, trigger in enumerate(triggers)
        if isinstance(trigger, Mapping) and "anniversary" in trigger
    ]
