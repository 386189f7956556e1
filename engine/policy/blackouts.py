"""Blackout dates (`blackout:` in policy.yaml) and holiday calendars: their fields, their schema
and the gate's check. A blacked-out day is a local day, in the contact's zone like quiet hours.

```yaml
country: FR                      # the workspace's calendar, for `holidays: contact`
blackout:
  - id: year-end
    dates: ["2026-12-24", "2026-12-31"]
    from: "2027-01-01"           # and/or a range, both ends included
    to: "2027-01-03"
    channels: [email, sms]       # or [marketing]: every channel
    reason: end-of-year freeze
```
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from engine.policy.holidays import (
    CONTACT,
    calendar_of,
    calendar_problem,
    contact_calendar,
    holiday_names,
    is_holiday,
)
from engine.policy.model import Blackout, Policy
from engine.runtime.timing import local_to_utc
from engine.spec.fields import Identifier

MAX_RANGE_DAYS = 366  # a longer blackout is no blackout: the channel is off


class Calendar(fields.Field[Any]):
    """``FR``, ``de``, ``FR-57`` → the canonical calendar code; ``contact`` when allowed."""

    def __init__(self, *, contact: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contact = contact

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError("Expected a country code such as FR, DE or FR-57.")
        if self.contact and value.strip().lower() == CONTACT:
            return CONTACT
        calendar = calendar_of(value)
        if calendar is None:
            message, close = calendar_problem(value)
            hint = f" did you mean '{close[0]}'?" if close else ""
            raise ValidationError(message + hint)
        return calendar


class Day(fields.Field[Any]):
    """``2026-12-24`` → datetime.date."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        text = str(value)
        if len(text) == 10:  # fromisoformat also takes 20261224 and week dates
            try:
                return date.fromisoformat(text)
            except ValueError:
                pass
        raise ValidationError(f"'{value}' is not a date: expected YYYY-MM-DD, e.g. 2026-12-24.")


class BlackoutSchema(Schema):
    class Meta:
        unknown = RAISE

    id = Identifier(required=True)
    channels = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    dates = fields.List(Day(), load_default=list)
    start = Day(data_key="from", load_default=None)
    end = Day(data_key="to", load_default=None)
    reason = fields.String(load_default=None, validate=validate.Length(min=1, max=200))

    @validates_schema
    def _days(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if (start is None) != (end is None):
            raise ValidationError("Give both 'from' and 'to', e.g. from: 2026-12-24.", "to")
        if start is not None and end is not None:
            if end < start:
                raise ValidationError(f"'to' ({end}) is before 'from' ({start}).", "to")
            if (end - start).days >= MAX_RANGE_DAYS:
                raise ValidationError(f"At most {MAX_RANGE_DAYS} days from 'from' to 'to'.", "to")
        elif not data.get("dates"):
            raise ValidationError("Give 'dates' (e.g. ['2026-12-24']) or 'from' and 'to'.", "dates")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Blackout:
        days = set(data["dates"])
        start, end = data["start"], data["end"]
        if start is not None and end is not None:
            days.update(start + timedelta(days=n) for n in range((end - start).days + 1))
        return Blackout(data["id"], tuple(data["channels"]), frozenset(days), data["reason"])


def blackout_until(rule: Blackout, local: datetime, zone: ZoneInfo) -> datetime | None:
    """If `local` falls on a blacked-out day, the start of the first day after the run; else
    None."""
    day = local.date()
    if day not in rule.days:
        return None
    while day in rule.days:
        day += timedelta(days=1)
    return local_to_utc(day, time(0), zone)


def upcoming(policy: Policy, country: object, today: date, days: int = 30) -> dict[str, Any]:
    """The contact's quiet days in the next `days` days: each public holiday of a quiet rule's
    calendar and each blackout date, with the rule it falls under (for `parcours contact show`).
    `country` is the contact's `country` attribute."""
    own = calendar_of(country) if isinstance(country, str) and country else None
    calendar = contact_calendar(country, policy.country)
    found: list[dict[str, Any]] = []
    for n in range(days):
        day = today + timedelta(days=n)
        for rule in policy.blackouts:
            if day in rule.days:
                found.append({"date": day, "rule": f"blackout:{rule.id}",
                              "channels": list(rule.channels), "why": rule.reason})  # fmt: skip
        for quiet in policy.quiet:
            chosen = calendar if quiet.holidays == CONTACT else quiet.holidays
            if chosen is not None and is_holiday(chosen, day):
                found.append({"date": day, "rule": f"quiet:{quiet.id}",
                              "channels": list(quiet.channels),
                              "why": holiday_names(chosen, day.year)[day]})  # fmt: skip
    return {"calendar": calendar, "from_contact": own is not None, "days": found}
