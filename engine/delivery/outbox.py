"""The sends of the ledger a page at a time, as `parcours outbox` shows them (the API's
outbox resource): keyset on the send id, filtered by scenario, channel, status and time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from engine.store.models import Contact, Send


@dataclass(frozen=True)
class SendFilter:
    """What the page keeps; every field left None keeps every send."""

    scenario: str | None = None
    channel: str | None = None
    status: str | None = None
    since: datetime | None = None


def send_page(conn: Connection, wanted: SendFilter, after: int, limit: int) -> list[Any]:
    """Up to `limit` sends with an id above `after`, oldest first, each with its contact's
    external id (`contact`)."""
    query = (
        select(Send, Contact.external_id.label("contact"))
        .join(Contact, Contact.id == Send.contact_id)
        .where(Send.id > after)
        .order_by(Send.id)
        .limit(limit)
    )
    if wanted.scenario:
        query = query.where(Send.scenario_id == wanted.scenario)
    if wanted.channel:
        query = query.where(Send.channel == wanted.channel)
    if wanted.status:
        query = query.where(Send.status == wanted.status)
    if wanted.since is not None:
        query = query.where(Send.created_at >= wanted.since)
    return list(conn.execute(query))


def send_item(row: Any) -> dict[str, Any]:
    """One send as `parcours outbox --json` and the API show it."""
    return {
        "at": row.created_at.isoformat(),
        "contact": row.contact,
        "scenario": row.scenario_id,
        "step": row.step_id,
        "channel": row.channel,
        "topic": row.topic,
        "kind": row.kind,
        "status": row.status,
        # why a message was not sent: a provider's refusal, or the rule that cancelled it
        "error": row.error,
        "send_key": row.send_key,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "attempts": row.attempts,
        "parts": (row.payload or {}).get("parts", {}),
    }
