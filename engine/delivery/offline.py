"""Offline channels' daily batches: paper mail to print and post, calls for the call centre.

A journey's `send` step on `mail` or `call` goes to the outbox: the ledger row (status `sent`)
is the item waiting for the mail house or the call centre. A day's batch is every such item
recorded that day (in the workspace time zone) and not yet acknowledged. The partner
acknowledges each item as `delivered` (posted, or the call took place) or `failed` (returned
mail, nobody reachable); the send takes that status and the event `<channel>_<status>` is
recorded, so journeys can wait on `mail_delivered` or branch on `call_failed`.

Sends are counted once, at the channel's weight, when the journey records them; an
acknowledgement adds no pressure unless the policy lists its event in `pressure.signals`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from engine.audience.ingest import clean_event, record_events
from engine.store.models import Contact, Send

BATCH_CHANNELS = ("mail", "call")
ACK_STATUSES = ("delivered", "failed")
PENDING = "sent"  # what the outbox makes of a send: recorded, not yet handled by the partner
NAME_KEYS = ("first_name", "last_name", "name", "company")
POSTAL_KEYS = ("address", "postal_code", "city", "country")
# The columns of a batch, per channel, after send_key and contact.
FIELDS = {
    "mail": (*NAME_KEYS, *POSTAL_KEYS),
    "call": (*NAME_KEYS, "phone"),
}
TAIL = ("text", "scenario", "step", "created_at")
# A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Ack:
    """What an acknowledgement did, key by key."""

    updated: list[str] = field(default_factory=list)
    unchanged: list[dict[str, str]] = field(default_factory=list)  # already acknowledged
    unknown: list[str] = field(default_factory=list)  # no such send on this channel

    def as_json(self) -> dict[str, Any]:
        return {"updated": self.updated, "unchanged": self.unchanged, "unknown": self.unknown}


def columns(channel: str) -> tuple[str, ...]:
    """Every column of a channel's batch, in order."""
    return ("send_key", "contact", *FIELDS[channel], *TAIL)


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """[start, end) of a calendar day in the workspace time zone, as aware instants."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    return start, end


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def batch(conn: Connection, channel: str, day: date, zone: str) -> list[dict[str, Any]]:
    """The items of a channel's batch for one day, oldest first.

    A marketing item of a contact who has opted out since is left out (it stays unacknowledged).
    """
    start, end = day_bounds(day, zone)
    rows = conn.execute(
        select(
            Send.send_key, Send.scenario_id, Send.step_id, Send.payload, Send.created_at,
            Send.kind, Contact.external_id, Contact.phone, Contact.attributes, Contact.opted_out,
        )
        .join(Contact, Contact.id == Send.contact_id)
        .where(
            Send.channel == channel, Send.status == PENDING,
            Send.created_at >= start, Send.created_at < end,
        )
        .order_by(Send.created_at, Send.id)
    ).all()  # fmt: skip
    items = []
    for r in rows:
        if r.opted_out and r.kind == "marketing":
            continue
        attributes = r.attributes or {}
        item: dict[str, Any] = {"send_key": r.send_key, "contact": r.external_id}
        for key in FIELDS[channel]:
            item[key] = _text(r.phone if key == "phone" else attributes.get(key))
        item["text"] = _text(((r.payload or {}).get("parts") or {}).get("text"))
        item["scenario"] = r.scenario_id
        item["step"] = r.step_id
        item["created_at"] = r.created_at.isoformat()
        items.append(item)
    return items


def safe_cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(channel: str, items: Iterable[dict[str, Any]]) -> str:
    """The batch as CSV: comma-separated, a header row, CRLF lines, formula-safe cells.

    The caller encodes it as UTF-8 with a byte order mark, so spreadsheets read the accents.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    names = columns(channel)
    writer.writerow(names)
    for item in items:
        writer.writerow([safe_cell(item.get(name)) for name in names])
    return out.getvalue()


def acknowledge(
    conn: Connection,
    channel: str,
    send_keys: Sequence[str],
    status: str,
    now: datetime,
    note: str | None = None,
) -> Ack:
    """Mark pending items of the channel `delivered` or `failed` and record their events.

    Idempotent: an item already acknowledged is left as it is and reported as unchanged; a key
    of another channel, or of no send, is reported as unknown.
    """
    if status not in ACK_STATUSES:
        raise ValueError(f"status must be one of {', '.join(ACK_STATUSES)}")
    keys = list(dict.fromkeys(send_keys))
    found = {
        r.send_key: r
        for r in conn.execute(
            select(Send.id, Send.send_key, Send.status, Send.scenario_id, Send.step_id,
                   Contact.external_id)
            .join(Contact, Contact.id == Send.contact_id)
            .where(Send.send_key.in_(keys), Send.channel == channel)
        )
    }  # fmt: skip
    ack = Ack()
    events = []
    for key in keys:
        row = found.get(key)
        if row is None:
            ack.unknown.append(key)
            continue
        values: dict[str, Any] = {"status": status}
        if status == "failed":
            values["error"] = note or "reported failed by the partner"
        # Fenced on the status: of two concurrent acknowledgements, one writes.
        written = conn.execute(
            update(Send).where(Send.id == row.id, Send.status == PENDING).values(**values)
        ).rowcount
        if not written:
            current = conn.execute(select(Send.status).where(Send.id == row.id)).scalar_one()
            ack.unchanged.append({"send_key": key, "status": current})
            continue
        ack.updated.append(key)
        properties = {
            "send_key": key, "channel": channel, "scenario_id": row.scenario_id,
            "step_id": row.step_id, "note": note or "",
        }  # fmt: skip
        raw = {
            "contact": row.external_id,
            "name": f"{channel}_{status}",
            "properties": properties,
            "event_key": f"{status}:{key}",
        }
        events.append(clean_event(raw, now))
    if events:
        record_events(conn, events, now)
    return ack
