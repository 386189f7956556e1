"""What a contact does with a message: opens, clicks, unsubscribes and preference changes.

Opens and clicks become events (`email_opened`, `email_clicked`) on the same path as the API's
events, so triggers, waits, goals and the pressure barometer see them (they carry the send's
channel, so a signal lowers that channel's reading as well as the overall one); each is counted
once per send (open) or per send and address (click). Unsubscribes and preference changes are
consent records with their evidence; every opt-out also becomes an `unsubscribed` event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from engine.audience.ingest import clean_event, record_events
from engine.delivery.tracking import ContactLink
from engine.errors import NotFound
from engine.policy.consent import (
    ALL,
    OPTED_IN,
    OPTED_OUT,
    ContactConsents,
    consent_snapshot,
    effective_consent,
    record_consent,
)
from engine.policy.locks import lock_contacts
from engine.policy.model import Policy
from engine.store.models import Contact, Send

OPENED = "email_opened"
CLICKED = "email_clicked"
UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class Unsubscribed:
    """What an unsubscribe did: the topic it covered and the new record, None when the contact
    was already unsubscribed (nothing was recorded)."""

    topic: str
    record_id: int | None

    @property
    def already(self) -> bool:
        return self.record_id is None


@dataclass(frozen=True)
class TopicChoice:
    """One line of the preference page."""

    topic: str
    label: str
    subscribed: bool


@dataclass(frozen=True)
class Preferences:
    """The preference page of a contact on a channel: each topic, and the channel-wide opt-out."""

    topics: list[TopicChoice]
    all_off: bool


# --- events ------------------------------------------------------------------------------------


def _event(
    conn: Connection,
    contact_id: int,
    name: str,
    key: str,
    properties: Mapping[str, Any],
    now: datetime,
) -> bool:
    external_id = conn.execute(
        select(Contact.external_id).where(Contact.id == contact_id)
    ).scalar_one_or_none()
    if external_id is None:
        return False  # erased since the message was sent: nothing to attach the event to
    raw = {"contact": external_id, "name": name, "properties": dict(properties), "event_key": key}
    recorded, _ = record_events(conn, [clean_event(raw, now)], now)
    return recorded > 0


def _send(conn: Connection, send_key: str) -> Any:
    return conn.execute(
        select(Send.contact_id, Send.scenario_id, Send.step_id, Send.channel).where(
            Send.send_key == send_key
        )
    ).first()


def _send_properties(send: Any, send_key: str) -> dict[str, Any]:
    # `channel` makes the barometer lower the send's channel reading too, not only the overall.
    return {
        "send_key": send_key,
        "scenario_id": send.scenario_id,
        "step_id": send.step_id,
        "channel": send.channel,
    }


def record_open(conn: Connection, send_key: str, now: datetime) -> bool:
    """Record `email_opened` for the send's contact; False if already recorded or no such send."""
    send = _send(conn, send_key)
    if send is None:
        return False
    return _event(
        conn, send.contact_id, OPENED, f"open:{send_key}", _send_properties(send, send_key), now
    )


def click_key(send_key: str, url: str) -> str:
    """The event key of a click: one event per send and destination."""
    return f"click:{send_key}:{hashlib.sha256(url.encode('utf-8')).hexdigest()[:8]}"


def record_click(conn: Connection, send_key: str, url: str, now: datetime) -> bool:
    """Record `email_clicked` (with the url); False if already recorded or no such send."""
    send = _send(conn, send_key)
    if send is None:
        return False
    properties = {**_send_properties(send, send_key), "url": url}
    return _event(conn, send.contact_id, CLICKED, click_key(send_key, url), properties, now)


# --- unsubscribe -------------------------------------------------------------------------------


def _opted_out(snapshot: ContactConsents, channel: str, topic: str) -> bool:
    every = snapshot.get((channel, ALL))
    own = snapshot.get((channel, topic))
    return (every is not None and every[0] == OPTED_OUT) or (
        topic != ALL and own is not None and own[0] == OPTED_OUT
    )


def _opt_out_event(
    conn: Connection, contact_id: int, channel: str, topic: str, record_id: int, source: str,
    send_key: str, now: datetime,
) -> None:  # fmt: skip
    properties = {"channel": channel, "topic": topic, "source": source, "send_key": send_key}
    _event(conn, contact_id, UNSUBSCRIBED, f"unsubscribed:{record_id}", properties, now)


def unsubscribe(
    conn: Connection,
    link: ContactLink,
    now: datetime,
    *,
    everything: bool = False,
    one_click: bool = False,
    ip: str | None = None,
    wording: str | None = None,
    wording_version: str | None = None,
) -> Unsubscribed:
    """Opt the contact out of the link's topic (or of all marketing on the channel).

    Idempotent: a contact already opted out gets no new record. Never refused for a topic that
    has left the policy since the message was sent: an opt-out is always honoured. NotFound if
    the contact no longer exists.
    """
    topic = ALL if everything else link.topic
    lock_contacts(conn, [link.contact_id])  # two clicks at once record one opt-out
    snapshot = consent_snapshot(conn, [link.contact_id])[link.contact_id]
    if (
        not snapshot
        and conn.execute(select(Contact.id).where(Contact.id == link.contact_id)).first() is None
    ):
        raise NotFound(f"no contact with id {link.contact_id}")
    if _opted_out(snapshot, link.channel, topic):
        return Unsubscribed(topic, None)
    evidence = {
        "send_key": link.send_key,
        "method": "one_click" if one_click else "page",
        "scope": "channel" if topic == ALL else "topic",
    }
    record_id = record_consent(
        conn, link.contact_id, link.channel, topic, OPTED_OUT, "unsubscribe_link", now,
        wording=wording, wording_version=wording_version, ip=ip, evidence=evidence,
    )  # fmt: skip
    _opt_out_event(
        conn, link.contact_id, link.channel, topic, record_id, "unsubscribe_link",
        link.send_key, now,
    )  # fmt: skip
    return Unsubscribed(topic, record_id)


# --- preferences -------------------------------------------------------------------------------


def preferences(
    conn: Connection, contact_id: int, channel: str, now: datetime, policy: Policy
) -> Preferences:
    """Each policy topic with whether marketing on it reaches the contact now."""
    snapshot = consent_snapshot(conn, [contact_id])[contact_id]
    every = snapshot.get((channel, ALL))
    topics = [
        TopicChoice(topic, str(label), effective_consent(snapshot, channel, topic, now, policy)[0])
        for topic, label in policy.topics.items()
    ]
    return Preferences(topics, every is not None and every[0] == OPTED_OUT)


def save_preferences(
    conn: Connection,
    link: ContactLink,
    wanted: Collection[str],
    all_off: bool,
    now: datetime,
    policy: Policy,
    *,
    ip: str | None = None,
    wording: str | None = None,
    wording_version: str | None = None,
) -> list[int]:
    """Record one consent per change (source preference_center); returns the new record ids.

    `all_off` opts out of all marketing on the channel. Ticking topics after such an opt-out
    lifts it (an opt-in on ``*``) and opts out of every topic left unticked, so the contact
    gets exactly the topics chosen. Unknown topics in `wanted` are ignored.
    """
    contact_id, channel = link.contact_id, link.channel
    lock_contacts(conn, [contact_id])
    snapshot = dict(consent_snapshot(conn, [contact_id])[contact_id])
    every = snapshot.get((channel, ALL))
    channel_off = every is not None and every[0] == OPTED_OUT
    chosen = [topic for topic in policy.topics if topic in set(wanted)]
    changes: list[tuple[str, str]] = []
    if all_off:
        if not channel_off:
            changes.append((ALL, OPTED_OUT))
    else:
        if channel_off and chosen:
            changes.append((ALL, OPTED_IN))
            snapshot[(channel, ALL)] = (OPTED_IN, None)
        if not channel_off or chosen:
            for topic in policy.topics:
                allowed = effective_consent(snapshot, channel, topic, now, policy)[0]
                if allowed != (topic in chosen):
                    changes.append((topic, OPTED_IN if topic in chosen else OPTED_OUT))
    records = []
    for topic, state in changes:
        record_id = record_consent(
            conn, contact_id, channel, topic, state, "preference_center", now,
            wording=wording, wording_version=wording_version, ip=ip,
            evidence={"send_key": link.send_key}, policy=policy,
        )  # fmt: skip
        records.append(record_id)
        if state == OPTED_OUT:
            _opt_out_event(
                conn, contact_id, channel, topic, record_id, "preference_center",
                link.send_key, now,
            )  # fmt: skip
    return records
