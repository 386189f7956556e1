"""Where a contact's push notifications go: Web Push subscriptions (one row per browser) and
mobile device tokens (the contact attribute `push_devices`).

The dispatcher fills a push send's recipient with `push_recipient(conn, contact_id)` (its
prepare step, for channel "push": merge the returned mapping into `message.recipient`), and
sets `channel.on_gone = forget_gone(engine)` on the web push channel so subscriptions the push
service reports gone are deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

from engine.store.models import Contact, PushSubscription

DEVICES_ATTRIBUTE = "push_devices"
MAX_PER_CONTACT = 20  # browsers kept per contact; the least recently seen go first


def subscribe(
    conn: Connection,
    contact_id: int,
    endpoint: str,
    p256dh: str,
    auth: str,
    now: datetime,
    user_agent: str | None = None,
) -> bool:
    """Store a browser's subscription; True when it is new.

    The endpoint identifies the browser: subscribing again updates the keys and the contact (a
    shared computer that changed hands), never adds a second row.
    """
    agent = (user_agent or "")[:512] or None
    found = conn.execute(
        select(PushSubscription.id).where(PushSubscription.endpoint == endpoint)
    ).scalar()
    values = {"contact_id": contact_id, "p256dh": p256dh, "auth": auth, "user_agent": agent}
    if found is not None:
        conn.execute(
            update(PushSubscription)
            .where(PushSubscription.id == found)
            .values(**values, last_seen_at=now)
        )
        return False
    conn.execute(insert(PushSubscription).values(**values, endpoint=endpoint, created_at=now,
                                                  last_seen_at=now))  # fmt: skip
    _trim(conn, contact_id)
    return True


def _trim(conn: Connection, contact_id: int) -> None:
    kept = (
        select(PushSubscription.id)
        .where(PushSubscription.contact_id == contact_id)
        .order_by(PushSubscription.last_seen_at.desc(), PushSubscription.id.desc())
        .limit(MAX_PER_CONTACT)
    )
    conn.execute(
        delete(PushSubscription).where(
            PushSubscription.contact_id == contact_id,
            PushSubscription.id.not_in(list(conn.execute(kept).scalars())),
        )
    )


def unsubscribe(conn: Connection, endpoint: str) -> bool:
    """Delete a subscription by its endpoint; True when there was one."""
    deleted = conn.execute(delete(PushSubscription).where(PushSubscription.endpoint == endpoint))
    return bool(deleted.rowcount)


def subscriptions_of(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """The contact's subscriptions in the shape browsers give them: {endpoint, keys}."""
    rows = conn.execute(
        select(PushSubscription.endpoint, PushSubscription.p256dh, PushSubscription.auth)
        .where(PushSubscription.contact_id == contact_id)
        .order_by(PushSubscription.last_seen_at.desc(), PushSubscription.id.desc())
    )
    return [{"endpoint": r.endpoint, "keys": {"p256dh": r.p256dh, "auth": r.auth}} for r in rows]


def push_recipient(conn: Connection, contact_id: int) -> dict[str, Any]:
    """What the push channels read from a recipient, for one contact.

    `subscriptions`: Web Push subscriptions, most recently seen first (channels.webpush);
    `devices`: mobile device tokens from the contact attribute `push_devices`, a token or a
    list of tokens (channels.push_http). Both are lists, empty when the contact has none.
    """
    attributes = (
        conn.execute(select(Contact.attributes).where(Contact.id == contact_id)).scalar() or {}
    )
    raw = attributes.get(DEVICES_ATTRIBUTE) or []
    devices = [raw] if isinstance(raw, str) else [d for d in raw if isinstance(d, str)]
    return {"subscriptions": subscriptions_of(conn, contact_id), "devices": devices}


def forget_gone(engine: Engine) -> Callable[[str], None]:
    """The web push channel's `on_gone`: delete a subscription the push service no longer knows.

    Called during delivery, outside the delivery transaction, so each deletion commits on its
    own. Mobile device tokens are not touched: they belong to the app that sets `push_devices`
    (a send whose every device is gone fails as bounced).
    """

    def forget(endpoint: str) -> None:
        with engine.begin() as conn:
            unsubscribe(conn, endpoint)

    return forget
