"""What a channel provider reports after a send: delivery outcomes and inbound SMS replies.

A delivery report moves a `sent` send forward to `delivered`, `bounced` or `failed`, once: the
status never goes back and a repeated report changes nothing. Its outcome becomes the same
contact event the delivery loop records (`sms_delivered`, `sms_bounced`...), and a bounce puts
the address on the suppression list.

A spam complaint about a sent or delivered send suppresses the address (`spam_complaint`), opts
the contact out of all marketing on the channel (source `complaint`) and records
`<channel>_complained`, once per send.

An inbound SMS becomes an `sms_replied` event of every contact with that number. A STOP-family
reply (see channels.sms_text.is_stop_reply) also opts the contact out of all SMS marketing,
with the reply as the wording of the consent record, and emits `unsubscribed`. Free text is
only recorded: whether it asks to stop is for a person to judge.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from channels.sms_text import is_stop_reply
from engine.audience.ingest import clean_event, record_events
from engine.errors import IngestError
from engine.policy.consent import (
    ADDRESS_FIELDS,
    ALL,
    MAX_WORDING,
    OPTED_OUT,
    consent_snapshot,
    normalize_address,
    record_consent,
    suppress,
)
from engine.policy.locks import lock_contacts
from engine.store.models import Contact, Send

logger = logging.getLogger(__name__)

FINAL_STATUSES = ("delivered", "bounced", "failed")
REPLIED = "sms_replied"
UNSUBSCRIBED = "unsubscribed"
STOP_SOURCE = "sms_stop"
COMPLAINT_SOURCE = "complaint"
MAX_REPLY_TEXT = 160  # kept in the event: one SMS worth, enough for a journey's condition
MAX_KEY_PART = 200  # event_key is 255 characters


def record_outcome(
    conn: Connection, channel: str, send_key: str, contact_id: int, external_id: str,
    addresses: Mapping[str, str | None], status: str, error: str | None, now: datetime,
) -> None:  # fmt: skip
    """What a delivery outcome does beyond the ledger, whether the delivery loop saw it or a
    provider reported it: the contact event `<channel>_<status>` (`email_bounced`,
    `sms_delivered`...), and for a bounce the channel's address on the suppression list."""
    event = {
        "contact": external_id,
        "name": f"{channel}_{status}",
        "properties": {"send_key": send_key, "channel": channel, "error": error or ""},
        "occurred_at": now,
        "event_key": f"{status}:{send_key}",
    }
    record_events(conn, [event], now)
    address = addresses.get(ADDRESS_FIELDS.get(channel, ""))
    if status != "bounced" or not address:
        return  # push: the channel deletes subscriptions that are gone (on_gone)
    try:
        suppress(conn, channel, str(address), "hard_bounce", "delivery", now, contact_id=contact_id)
    except IngestError:  # an address the suppression list cannot hold: the bounce stays
        logger.warning("send %s bounced but its address cannot be suppressed", send_key)


def apply_delivery_report(
    conn: Connection,
    channel: str,
    provider_id: str,
    status: str,
    error: str | None,
    now: datetime,
) -> bool:
    """Record a provider's outcome for the send it accepted as `provider_id`.

    Only a `sent` send moves, and only to a final status; anything else (an unknown id, a
    report of `sent`, a second report) changes nothing. Returns whether the send changed.
    """
    if status not in FINAL_STATUSES:
        return False
    send = conn.execute(
        select(Send.id, Send.send_key, Send.contact_id, Contact.external_id, Contact.email,
               Contact.phone)
        .join(Contact, Contact.id == Send.contact_id)
        .where(Send.channel == channel, Send.provider_id == provider_id, Send.status == "sent")
        .order_by(Send.id)
        .limit(1)
    ).first()  # fmt: skip
    if send is None:
        return False
    text = (error or "")[:1000]
    # Compare-and-set: of two reports racing for the same send, one moves it.
    moved = conn.execute(
        update(Send)
        .where(Send.id == send.id, Send.status == "sent")
        .values(status=status, error=text or None)
    ).rowcount
    if not moved:
        return False
    addresses = {"email": send.email, "phone": send.phone}
    record_outcome(
        conn, channel, send.send_key, send.contact_id, send.external_id, addresses, status,
        text, now,
    )  # fmt: skip
    return True


def apply_complaint(conn: Connection, channel: str, provider_id: str, now: datetime) -> bool:
    """Record a spam complaint about the send the provider accepted as `provider_id`.

    The address goes on the suppression list, the contact is opted out of the whole channel
    and `<channel>_complained` is recorded. A second complaint about the same send, or one
    about an unknown or unsent message, changes nothing. Returns whether anything changed.
    """
    send = conn.execute(
        select(Send.send_key, Send.contact_id, Contact.external_id, Contact.email, Contact.phone)
        .join(Contact, Contact.id == Send.contact_id)
        .where(
            Send.channel == channel,
            Send.provider_id == provider_id,
            Send.status.in_(("sent", "delivered")),
        )
        .order_by(Send.id)
        .limit(1)
    ).first()
    if send is None:
        return False
    lock_contacts(conn, [send.contact_id])  # serialises racing complaints and the gate
    event = {
        "contact": send.external_id,
        "name": f"{channel}_complained",
        "properties": {"send_key": send.send_key, "channel": channel},
        "occurred_at": now,
        "event_key": f"complained:{send.send_key}",
    }
    if not record_events(conn, [event], now)[0]:
        return False  # the provider repeated itself
    address = {"phone": send.phone, "email": send.email}.get(ADDRESS_FIELDS.get(channel, ""))
    try:
        suppress(
            conn, channel, str(address or f"contact:{send.contact_id}"), "spam_complaint",
            "provider", now, contact_id=send.contact_id,
        )  # fmt: skip
    except IngestError:  # an address the list cannot hold: the contact itself is suppressed
        suppress(conn, channel, f"contact:{send.contact_id}", "spam_complaint", "provider", now,
                 contact_id=send.contact_id)  # fmt: skip
    current = consent_snapshot(conn, [send.contact_id])[send.contact_id].get((channel, ALL))
    if current is None or current[0] != OPTED_OUT:
        record_consent(
            conn, send.contact_id, channel, ALL, OPTED_OUT, COMPLAINT_SOURCE, now,
            evidence={"method": "spam_complaint", "send_key": send.send_key[:MAX_KEY_PART]},
        )  # fmt: skip
    return True


@dataclass(frozen=True)
class InboundReply:
    """What an inbound SMS did: the contacts it was recorded for, the STOP keyword it carried
    (None for free text) and how many of those contacts it newly opted out."""

    recorded: int
    keyword: str | None
    opted_out: int


def apply_inbound_sms(
    conn: Connection,
    from_phone: str,
    text: str,
    now: datetime,
    *,
    message_id: str | None = None,
) -> str | None:
    """Record an SMS a contact sent back; returns the STOP keyword when it was an opt-out
    (see record_inbound_sms)."""
    return record_inbound_sms(conn, from_phone, text, now, message_id=message_id).keyword


def record_inbound_sms(
    conn: Connection,
    from_phone: str,
    text: str,
    now: datetime,
    *,
    message_id: str | None = None,
) -> InboundReply:
    """Record an SMS sent back to us, and the opt-out it asks for.

    Every contact with that number gets `sms_replied` (the text, cut to 160 characters). With
    the provider's `message_id`, a repeated callback is recorded once. An unknown number is
    recorded nowhere (and its keyword is not returned).
    """
    try:
        phone, _ = normalize_address("sms", from_phone)
    except IngestError:
        logger.info("inbound SMS ignored: the sender is not a phone number")
        return InboundReply(0, None, 0)
    contacts = conn.execute(
        select(Contact.id, Contact.external_id).where(Contact.phone == phone).order_by(Contact.id)
    ).all()
    if not contacts:
        logger.info("inbound SMS ignored: no contact has the sender's number")
        return InboundReply(0, None, 0)
    keyword = is_stop_reply(text)
    reply = text.strip()
    properties: dict[str, Any] = {"text": reply[:MAX_REPLY_TEXT]}
    if keyword:
        properties["keyword"] = keyword
    key = f"sms_reply:{_key_part(message_id)}" if message_id else None
    recorded = opted_out = 0
    for contact in contacts:
        event = clean_event(
            {"contact": contact.external_id, "name": REPLIED, "properties": properties,
             "event_key": f"{key}:{contact.id}" if key else None},
            now,
        )  # fmt: skip
        if not record_events(conn, [event], now)[0]:
            continue  # a repeated callback: neither the reply nor its opt-out again
        recorded += 1
        if keyword:
            opted_out += _opt_out(conn, contact.id, contact.external_id, keyword, reply,
                                  message_id, now)  # fmt: skip
    return InboundReply(recorded, keyword, opted_out)


def _opt_out(
    conn: Connection, contact_id: int, external_id: str, keyword: str, reply: str,
    message_id: str | None, now: datetime,
) -> bool:  # fmt: skip
    """Opt the contact out of all SMS marketing; False when it already was."""
    lock_contacts(conn, [contact_id])  # the same lock as the gate: no send slips past the STOP
    current = consent_snapshot(conn, [contact_id])[contact_id].get(("sms", ALL))
    if current is not None and current[0] == OPTED_OUT:
        return False
    evidence: dict[str, Any] = {"method": "sms_reply", "keyword": keyword}
    if message_id:
        evidence["message_id"] = message_id[:MAX_KEY_PART]
    record_id = record_consent(
        conn, contact_id, "sms", ALL, OPTED_OUT, STOP_SOURCE, now,
        wording=reply[:MAX_WORDING], evidence=evidence,
    )  # fmt: skip
    properties = {"channel": "sms", "topic": ALL, "source": STOP_SOURCE, "keyword": keyword}
    record_events(
        conn,
        [{"contact": external_id, "name": UNSUBSCRIBED, "properties": properties,
          "occurred_at": now, "event_key": f"unsubscribed:{record_id}"}],
        now,
    )  # fmt: skip
    return True


def _key_part(value: str) -> str:
    """A provider id as part of an event key: as is when short, else its digest."""
    if len(value) <= MAX_KEY_PART and value.isprintable():
        return value
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
