"""Public holidays per country and subdivision, for quiet days, from the `holidays` package.

A calendar is spelt `FR`, `DE` or, for a subdivision the package knows, `FR-57` or `DE-BY`.
Each (calendar, year) is built once per process and kept: the gate asks per contact in batches
of thousands, and a lookup must cost a set membership test, not a holiday object.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import holidays

CONTACT = "contact"  # `holidays: contact`: the contact's own country, else the workspace's


@lru_cache(maxsize=1)
def supported() -> dict[str, tuple[str, ...]]:
    """ISO 3166-1 alpha-2 code → the subdivision codes the package knows for it."""
    return {
        code: tuple(subdivs)
        for code, subdivs in holidays.list_supported_countries(include_aliases=False).items()
        if len(code) == 2
    }


@lru_cache(maxsize=4096)
def calendar_of(code: str) -> str | None:
    """The canonical spelling of a calendar code (`fr-57` → `FR-57`), None when unknown."""
    country, _sep, subdiv = code.strip().partition("-")
    known = supported().get(country.upper())
    if known is None:
        return None
    if not subdiv:
        return country.upper()
    for name in known:
        if name.lower() == subdiv.lower():
            return f"{country.upper()}-{name}"
    return None


def calendar_problem(code: str) -> tuple[str, list[str]]:
    """Why `code` is no calendar, and the codes it may have meant."""
    from difflib import get_close_matches

    country, _sep, subdiv = code.strip().partition("-")
    known = supported()
    if country.upper() not in known:
        message = f"Unknown country '{country}': expected an ISO 3166 code such as FR or DE."
        return message, get_close_matches(country.upper(), list(known), n=3, cutoff=0.5)
    subdivs = known[country.upper()]
    if not subdivs:
        return f"No subdivisions are known for {country.upper()}: use '{country.upper()}'.", []
    message = f"Unknown subdivision '{subdiv}' of {country.upper()}; known: {', '.join(subdivs)}."
    close = get_close_matches(subdiv.upper(), [s.upper() for s in subdivs], n=3, cutoff=0.5)
    by_upper = {s.upper(): s for s in subdivs}
    return message, [f"{country.upper()}-{by_upper[c]}" for c in close]


@lru_cache(maxsize=1024)
def holiday_names(calendar: str, year: int) -> dict[date, str]:
    """The public holidays of a canonical calendar in a year, with their names."""
    country, _sep, subdiv = calendar.partition("-")
    found = holidays.country_holidays(country, subdiv=subdiv or None, years=year)
    return dict(found.items())


@lru_cache(maxsize=1024)
def holiday_days(calendar: str, year: int) -> frozenset[date]:
    return frozenset(holiday_names(calendar, year))


def is_holiday(calendar: str, day: date) -> bool:
    """Whether `day` is a public holiday of a canonical calendar (`FR`, `DE-BY`)."""
    return day in holiday_days(calendar, day.year)


def contact_calendar(country: object, default: str | None) -> str | None:
    """The calendar of a contact whose `country` attribute is this value (`DE`, `de`, `FR-57`),
    or the workspace's `default` when it is missing or no known code."""
    if isinstance(country, str) and country:
        return calendar_of(country) or default
    return default
