"""The suppression list a page at a time, one entry, and lifting one (the API's resource).

Adding to the list is `engine.policy.consent.suppress`. An address erased on request is on the
list as its salted hash (`engine.audience.privacy`): looking an address up matches that entry
too, and such an entry is never lifted, since lifting it would let marketing reach someone
who asked to be forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.engine import Connection, Row

from channels import channel_names
from engine.audience.privacy import address_hashes
from engine.errors import NotFound, ParcoursError
from engine.policy.consent import ALL, normalize_address
from engine.store.models import Contact, Suppression

KEPT_REASONS = frozenset({"erasure"})


class SuppressionKept(ParcoursError):
    """The entry cannot be lifted (an erasure); the message says why."""


@dataclass(frozen=True)
class SuppressionFilter:
    """What the list keeps; every field left None keeps every entry."""

    channel: str | None = None
    reason: str | None = None
    address: str | None = None  # as given: normalised here, matched plain or hashed
    contact_id: int | None = None


def suppression_page(
    conn: Connection, wanted: SuppressionFilter, after: int, limit: int
) -> list[Row[Any]]:
    """Up to `limit` entries with an id above `after`, by id, each with the external id of its
    contact (`contact`, None when it names none). IngestError (`address`) if the address
    cannot be suppressed on the channel."""
    query = _with_contact().where(Suppression.id > after).order_by(Suppression.id).limit(limit)
    if wanted.channel:
        query = query.where(Suppression.channel == wanted.channel)
    if wanted.reason:
        query = query.where(Suppression.reason == wanted.reason)
    if wanted.address:
        value, _ = normalize_address(wanted.channel or ALL, wanted.address)
        forms = {value, *address_hashes(conn, [value], create=False).values()}
        if not wanted.channel:  # every channel named, so the (channel, address) index answers
            query = query.where(Suppression.channel.in_(sorted({ALL, *channel_names()})))
        query = query.where(Suppression.address.in_(sorted(forms)))
    if wanted.contact_id is not None:
        query = query.where(Suppression.contact_id == wanted.contact_id)
    return list(conn.execute(query))


def _with_contact() -> Select[Suppression, str]:
    return select(Suppression, Contact.external_id.label("contact")).outerjoin(
        Contact, Contact.id == Suppression.contact_id
    )


def find_suppression(conn: Connection, suppression_id: int) -> Any:
    """One entry with its contact's external id; NotFound if there is none with this id."""
    row: Any = conn.execute(_with_contact().where(Suppression.id == suppression_id)).first()
    if row is None:
        raise NotFound(f"no suppression {suppression_id}")
    return row


def lift_suppression(conn: Connection, suppression_id: int) -> Any:
    """Take an entry off the list (marketing may reach the address again); the entry as it
    was. NotFound if there is none; SuppressionKept for an erasure."""
    row = find_suppression(conn, suppression_id)
    if row.reason in KEPT_REASONS:
        raise SuppressionKept(
            f"suppression {suppression_id} records an erasure: the person asked to be "
            "forgotten, so the address stays blocked"
        )
    conn.execute(delete(Suppression).where(Suppression.id == suppression_id))
    return row
