"""On-site offers: the website asks "what should this visitor see now?" and shows the answer.

A journey's `send` step on the `onsite` channel goes to the outbox: the ledger row (status
`sent`) is the message waiting for the contact's next visit. When the website asks, the newest
waiting message of the last days is offered once: the send becomes `delivered` and an
`onsite_shown` event is recorded; a click on it records `onsite_clicked`. Both events take the
same path as the API's events, so triggers, waits and goals see them.

Pressure: the send already counted at the on-site weight when the journey recorded it, so an
impression adds nothing more. `onsite_shown` and `onsite_clicked` count only if the workspace
policy lists them in `pressure.signals` (list the click, with a negative value, as engagement;
never the impression).

The site's settings live in the `onsite` entry of `channels.yaml`:

    onsite:
      provider: outbox
      site_key: ${ONSITE_SITE_KEY}
      origins: [https://www.example.com]
      max_age_days: 7
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from channels.config import resolve_secrets
from channels.errors import ChannelConfigError
from engine.audience.ingest import clean_event, record_events
from engine.delivery.channel_config import channels_path
from engine.spec.yamlio import parse_yaml
from engine.store.models import Contact, Send

CHANNEL = "onsite"
SHOWN = "onsite_shown"
CLICKED = "onsite_clicked"
DEFAULT_MAX_AGE_DAYS = 7
# A send lost to a concurrent request (shown there first) is skipped; past this many, give up.
MAX_TRIES = 5


@dataclass(frozen=True)
class OnsiteSettings:
    """The website's access to offers: its key, the origins allowed to read them, their age."""

    site_key: str = ""
    origins: tuple[str, ...] = ()
    max_age: timedelta = timedelta(days=DEFAULT_MAX_AGE_DAYS)


@dataclass(frozen=True)
class Offer:
    """One on-site message as the website shows it; `id` is the send key."""

    id: str
    title: str
    body: str
    url: str | None
    image: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "body": self.body,
            "url": self.url,
            "image": self.image,
        }


def onsite_settings(
    scenarios_dir: Path, environ: Mapping[str, str] | None = None
) -> OnsiteSettings:
    """The `onsite` entry of `channels.yaml`, secrets resolved; empty settings without one.

    Raises ChannelConfigError for an unset `${VARIABLE}` or a malformed entry.
    """
    path = channels_path(scenarios_dir)
    if not path.exists():
        return OnsiteSettings()
    data, _ = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    entry = data.get(CHANNEL) if isinstance(data, Mapping) else None
    if not isinstance(entry, Mapping):
        return OnsiteSettings()
    entry = resolve_secrets(entry, os.environ if environ is None else environ)
    origins = entry.get("origins") or []
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ChannelConfigError(f"{path.name}, channel onsite: 'origins' is a list of origins")
    days = entry.get("max_age_days", DEFAULT_MAX_AGE_DAYS)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= 365:
        raise ChannelConfigError(f"{path.name}, channel onsite: 'max_age_days' is 1 to 365 days")
    key = entry.get("site_key") or ""
    if not isinstance(key, str):
        raise ChannelConfigError(f"{path.name}, channel onsite: 'site_key' is text")
    return OnsiteSettings(
        site_key=key,
        origins=tuple(o.rstrip("/") for o in origins),
        max_age=timedelta(days=days),
    )


def safe_link(value: Any) -> str | None:
    """A link the website may put in href/src: http(s) or a path on the site, else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    link = value.strip()
    if link.startswith("/") and not link.startswith("//"):
        return link
    parts = urlsplit(link)
    return link if parts.scheme in ("http", "https") and parts.netloc else None


def _offer(row: Any) -> Offer:
    parts = (row.payload or {}).get("parts") or {}
    return Offer(
        id=row.send_key,
        title=str(parts.get("title", "")),
        body=str(parts.get("body", "")),
        url=safe_link(parts.get("url")),
        image=safe_link(parts.get("image")),
    )


def _event(
    conn: Connection, external_id: str, name: str, key: str, row: Any, now: datetime
) -> bool:
    raw = {
        "contact": external_id,
        "name": name,
        "event_key": key,
        "properties": {
            "send_key": row.send_key,
            "channel": CHANNEL,
            "scenario_id": row.scenario_id,
            "step_id": row.step_id,
        },
    }
    recorded, _ = record_events(conn, [clean_event(raw, now)], now)
    return recorded > 0


def next_offer(
    conn: Connection, external_id: str, now: datetime, max_age: timedelta
) -> Offer | None:
    """Show the contact's newest waiting on-site message, once: None when there is none.

    The send becomes `delivered` and `onsite_shown` is recorded in the caller's transaction.
    Unknown contacts get None (and are not created); a marketing message is not shown to a
    contact who has opted out since it was recorded.
    """
    contact = conn.execute(
        select(Contact.id, Contact.opted_out).where(Contact.external_id == external_id)
    ).first()
    if contact is None:
        return None
    query = (
        select(Send.id, Send.send_key, Send.scenario_id, Send.step_id, Send.payload)
        .where(
            Send.contact_id == contact.id,
            Send.channel == CHANNEL,
            Send.status == "sent",
            Send.created_at >= now - max_age,
            Send.created_at <= now,
        )
        .order_by(Send.created_at.desc(), Send.id.desc())
        .limit(MAX_TRIES)
    )
    if contact.opted_out:
        query = query.where(Send.kind != "marketing")
    for row in conn.execute(query).all():
        # Fenced on the status: of two concurrent visits, one shows it, the other the next one.
        taken = conn.execute(
            update(Send).where(Send.id == row.id, Send.status == "sent").values(status="delivered")
        ).rowcount
        if taken:
            _event(conn, external_id, SHOWN, f"shown:{row.send_key}", row, now)
            return _offer(row)
    return None


def record_click(
    conn: Connection, external_id: str, send_key: str, now: datetime
) -> tuple[str | None, bool] | None:
    """Record `onsite_clicked` once per offer: (the offer's link, whether it was new).

    None when the offer is not an on-site message of this contact.
    """
    row = conn.execute(
        select(Send.send_key, Send.scenario_id, Send.step_id, Send.payload)
        .join(Contact, Contact.id == Send.contact_id)
        .where(
            Send.send_key == send_key,
            Send.channel == CHANNEL,
            Contact.external_id == external_id,
            Send.status.in_(("sent", "delivered")),
        )
    ).first()
    if row is None:
        return None
    recorded = _event(conn, external_id, CLICKED, f"click:{send_key}", row, now)
    return _offer(row).url, recorded
