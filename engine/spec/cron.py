"""Crontab expressions as marketers write them, on APScheduler 3's cron arithmetic.

APScheduler 3's `from_crontab` passes the day-of-week field through unchanged, and its 0 is
Monday; crontab's 0 (or 7) is Sunday. Day numbers are turned into names first. As in APScheduler,
a day-of-month and a day-of-week given together must both match (crontab would take either).
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

from engine.spec.model import ScheduleTrigger

_CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_day(token: str, end: bool) -> int:
    word = token.strip().lower()
    if word.isdigit() and int(word) <= 7:
        return int(word)
    if word in _CRONTAB_DAYS:
        day = _CRONTAB_DAYS.index(word)
        return 7 if end and day == 0 else day  # "fri-sun"
    raise ValueError(f"Invalid day of week '{token}'")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday) as APScheduler 3 names (its 0 is Monday).

    APScheduler 3's `from_crontab` passes the field through unchanged, so "1" would mean Tuesday
    (its issue #286); names are unambiguous.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 0 if step_text else 1
        if step < 1:
            raise ValueError(f"Invalid step in day of week '{part}'")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            low, high = span.split("-", 1)
            first, last = _crontab_day(low, False), _crontab_day(high, True)
        else:
            first = _crontab_day(span, False)
            last = 6 if step_text else first
        if first > last:
            raise ValueError(f"Invalid range in day of week '{part}'")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_CRONTAB_DAYS[d] for d in sorted(days))


def cron_for(trigger: ScheduleTrigger) -> CronTrigger:
    """The APScheduler trigger of a crontab expression, with crontab's weekday numbers."""
    fields = trigger.cron.split()
    if len(fields) == 5:
        fields[4] = crontab_weekdays(fields[4])
    return CronTrigger.from_crontab(" ".join(fields), timezone=trigger.timezone)
