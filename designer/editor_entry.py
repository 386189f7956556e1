"""Who enters, for the editor: the trigger a new journey starts with, and the audience count.

The count is the same compiled query a segment rebuild runs (engine.audience.preview), so the
number the marketer sees while editing the audience is what the database would answer now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

from marshmallow import ValidationError, post_load, validates_schema
from sqlalchemy import Connection, func, select

from designer.forms import Choice, Form, Text
from designer.i18n import gettext as _
from engine.audience.preview import preview
from engine.policy.model import PressureConfig
from engine.spec.conditions import parse_condition, segment_names
from engine.spec.fields import compile_checked_expression
from engine.store.models import Contact

STARTS = ("event", "segment", "schedule", "manual")
START_FORM = {"start": "manual", "event": "", "segment": "", "at": "09:00"}
LOCAL_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
EVENT_NAME = re.compile(r"^\S.{0,199}$")
SAMPLE = 10


class StartForm(Form):
    """How a new journey starts, as the new-journey form sends it: the fields of the start
    chosen are checked, the others ignored. Loads to ``{"trigger": ...}``."""

    start = Choice(STARTS, error="start", load_default="manual")
    event = Text(load_default="")
    segment = Text(load_default="")
    at = Text(load_default="")
    timezone = Text(load_default="")

    def __init__(self, segments: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.segments = segments

    def words(self) -> dict[str, str]:
        return {
            "start": _("Choose how the journey starts."),
            "event": _("Name the event that starts the journey, e.g. order_placed."),
            "segment": _("Choose one of the workspace's segments."),
            "at": _("A time of day is HH:MM, e.g. 09:00."),
            "timezone": _("Choose a time zone, e.g. Europe/Paris."),
        }

    @validates_schema
    def _chosen_start(self, data: dict[str, Any], **_kwargs: Any) -> None:
        wrong: dict[str, str] = {}
        start = data["start"]
        if start == "event" and not EVENT_NAME.match(data["event"]):
            wrong["event"] = "event"
        elif start == "segment" and data["segment"] not in self.segments:
            wrong["segment"] = "segment"
        elif start == "schedule":
            if not LOCAL_TIME.match(data["at"]):
                wrong["at"] = "at"
            if data["timezone"] not in available_timezones():
                wrong["timezone"] = "timezone"
        if wrong:
            raise ValidationError({field: [key] for field, key in wrong.items()})

    @post_load
    def _trigger(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        start = data["start"]
        if start == "event":
            return {"trigger": {"event": data["event"]}}
        if start == "segment":
            return {"trigger": {"segment_entered": data["segment"]}}
        if start == "schedule":
            at = LOCAL_TIME.match(data["at"])
            assert at is not None  # checked by _chosen_start
            cron = f"{int(at.group(2))} {int(at.group(1))} * * *"
            return {"trigger": {"schedule": cron, "timezone": data["timezone"]}}
        return {"trigger": {"manual": True}}


@dataclass(frozen=True)
class AudienceError:
    """An audience the count cannot read: the field it is at and how to fix it."""

    code: str
    message: str
    field: str


def first_error(messages: Any, path: tuple[str, ...] = ()) -> tuple[str, str]:
    """The dotted path and text of the first message of a nested marshmallow error."""
    if isinstance(messages, dict) and messages:
        key, inner = next(iter(messages.items()))
        return first_error(inner, (*path, str(key)))
    if isinstance(messages, list) and messages:
        return first_error(messages[0], path)
    return ".".join(path), str(messages)


def count_audience(
    conn: Connection,
    raw: Any,
    segments: list[str],
    now: datetime,
    pressure: PressureConfig | None,
) -> dict[str, Any] | AudienceError:
    """{count, sample, reason} for an audience as written (None: every contact may enter).

    `count` is None with a `reason` when the condition cannot be computed in the database (an
    expression reads values only known as a contact enters)."""
    if raw is None:
        total = conn.scalar(select(func.count()).select_from(Contact)) or 0
        first = conn.scalars(select(Contact.external_id).order_by(Contact.id).limit(SAMPLE))
        return {"count": total, "sample": list(first), "reason": None}
    try:
        condition = parse_condition(raw, ["audience"], compile_checked_expression)
    except ValidationError as exc:
        field, message = first_error(exc.messages)
        return AudienceError("audience.invalid", message, field)
    unknown = sorted(segment_names(condition) - set(segments))
    if unknown:
        message = _("No segment with id '%(id)s' in segments/.", id=unknown[0])
        return AudienceError("segment.unknown", message, "audience")
    found = preview(conn, condition, now, pressure=pressure, sample=SAMPLE)
    reason = None
    if found.error is not None:
        reason = _("Not counted in advance: %(why)s", why=found.error)
    return {"count": found.count, "sample": found.sample, "reason": reason}
