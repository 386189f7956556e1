"""Numbers, percentages, dates and times as the viewer's language writes them (Babel's CLDR data).

One convention per language on every page: English 10,002 and 25.3%, French 10 002 (narrow
no-break space) and 25,3 %. Every time is shown in the workspace zone (`PARCOURS_TIMEZONE`,
Flask-Babel's time zone selector) with its zone label: "Dec 3, 2026, 14:05 CET",
"3 déc. 2026, 14:05 CET". The label is the tz database's abbreviation when it has letters
(CET, CEST, UTC, EST, JST), else the offset ("UTC+3", "UTC+5:30"), which reads the same in both
languages. The same functions are Jinja globals (`number(x, 2)`, `when(t)`) and filters
(`x|decimal`, `x|percent`, `t|when`, `d|day`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_skeleton, get_datetime_format
from babel.numbers import format_decimal as babel_decimal
from babel.numbers import format_percent
from flask import Flask, current_app, has_app_context

from designer.i18n import current_language

DASH = "—"


def _pattern(digits: int) -> str:
    return "#,##0." + "0" * digits if digits > 0 else "#,##0"


def number(value: float | None, digits: int = 0) -> str:
    """A number with `digits` decimals: 10,002.50 / 10 002,50."""
    if value is None:
        return DASH
    return babel_decimal(value, format=_pattern(digits), locale=current_language())


def signed(value: float, digits: int = 0) -> str:
    """A change, with its sign: +3 / -3 / 0 (the language's signs)."""
    if round(value, digits) == 0:
        return number(0, digits)
    pattern = _pattern(digits)
    return babel_decimal(value, format=f"+{pattern};-{pattern}", locale=current_language())


def percent(share: float | None, digits: int = 1) -> str:
    """A share (0.253) as a percentage: 25.3% / 25,3 % (the language's own pattern)."""
    if share is None:
        return DASH
    locale = Locale.parse(current_language())
    pattern = locale.percent_formats[None].pattern.replace("#,##0", _pattern(digits), 1)
    return format_percent(share, format=pattern, locale=locale)


def money(amount: float | None) -> str:
    """An amount in the workspace currency, two decimals: 1,234.50 / 1 234,50."""
    return number(amount, 2)


def zone() -> ZoneInfo:
    """The workspace zone (PARCOURS_TIMEZONE); UTC outside the application."""
    if not has_app_context():
        return ZoneInfo("UTC")
    from engine.runtime.timing import zone_for

    return zone_for(None, current_app.extensions["parcours"].settings.timezone)


def zone_label(local: datetime) -> str:
    """CET, CEST, UTC... or UTC+3 where the zone has no abbreviation."""
    name = local.tzname() or ""
    if name.isalpha():
        return name
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def _aware(instant: datetime | str) -> datetime:
    if isinstance(instant, str):
        instant = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    # instants are stored in UTC; SQLite hands them back without their zone
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def _local(local: datetime, clock: str) -> str:
    """The day, the 24-hour time and the zone label, joined the language's way (CLDR)."""
    lang = current_language()
    on = format_skeleton("yMMMd", local, tzinfo=local.tzinfo, locale=lang)
    at = format_skeleton(clock, local, tzinfo=local.tzinfo, locale=lang)
    glue = str(get_datetime_format("medium", locale=lang))
    return glue.replace("{1}", on).replace("{0}", at) + " " + zone_label(local)


def when(instant: datetime | str | None, in_zone: ZoneInfo | None = None) -> str:
    """An instant to the minute, in the workspace zone (or `in_zone`), with the zone's label."""
    if instant is None or instant == "":
        return DASH
    return _local(_aware(instant).astimezone(in_zone or zone()), "Hm")


def when_in(instant: datetime | str | None, zone_name: str | None) -> str:
    """As `when`, in a contact's own zone (the workspace's when unknown or invalid)."""
    from engine.runtime.timing import zone_for

    return when(instant, zone_for(zone_name, zone().key))


def when_seconds(instant: datetime | str | None) -> str:
    """As `when`, to the second (the audit log and the worker's journal)."""
    if instant is None or instant == "":
        return DASH
    return _local(_aware(instant).astimezone(zone()), "Hms")


def day(value: date | str | None) -> str:
    """A calendar day: Dec 3, 2026 / 3 déc. 2026."""
    if value is None or value == "":
        return DASH
    if isinstance(value, str):
        value = date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.date()
    return format_skeleton("yMMMd", value, locale=current_language())


def short_day(value: date | str) -> str:
    """A day in a chart or a table of days: Dec 3 / 3 déc."""
    if isinstance(value, str):
        value = date.fromisoformat(value)
    return format_skeleton("MMMd", value, locale=current_language())


def globals_() -> dict[str, Any]:
    return {"number": number, "percent": percent, "money": money, "when": when, "day": day,
            "short_day": short_day, "signed": signed, "when_seconds": when_seconds,
            "when_in": when_in}  # fmt: skip


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(globals_())
    app.jinja_env.filters.update(
        decimal=number, percent=percent, money=money, when=when, day=day, signed=signed
    )
