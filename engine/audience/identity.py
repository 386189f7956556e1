"""Identity: the identifiers that recognise a contact online and offline, and merges.

A contact is named by its external id and, beyond it, by identifiers (email, phone, anonymous
web id, loyalty card, any declared kind), unique per kind. A merge keeps the absorbed contact as
a tombstone (`merged_into`) whose external id becomes an identifier of the survivor, so that
whatever named the absorbed contact names the survivor from then on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection, Row

from engine.store.models import Contact, ContactIdentifier, ContactMerge

EXTERNAL_ID = "external_id"  # the identifier kind that keeps an absorbed contact's external id
MAX_HOPS = 16  # merged_into chains are flattened by every merge; this only guards a loop


def _follow(conn: Connection, row: Row[Any] | None) -> Row[Any] | None:
    """The live contact at the end of `row`'s merged_into chain; None for an erased one."""
    hops = 0
    while row is not None and row.merged_into is not None and hops < MAX_HOPS:
        row = conn.execute(select(Contact).where(Contact.id == row.merged_into)).first()
        hops += 1
    if row is None or row.erased_at is not None or row.merged_into is not None:
        return None
    return row


def find_contact(conn: Connection, external_id: str) -> Row[Any] | None:
    """The live contact an external id names: its own, or one a merge absorbed into it."""
    row = conn.execute(select(Contact).where(Contact.external_id == external_id)).first()
    if row is None:
        owner = select(ContactIdentifier.contact_id).where(
            ContactIdentifier.kind == EXTERNAL_ID, ContactIdentifier.value == external_id
        )
        row = conn.execute(select(Contact).where(Contact.id.in_(owner.scalar_subquery()))).first()
    return _follow(conn, row)


def identifiers_of(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """The contact's identifiers, by kind then value."""
    query = (
        select(ContactIdentifier)
        .where(ContactIdentifier.contact_id == contact_id)
        .order_by(ContactIdentifier.kind, ContactIdentifier.value)
    )
    return [
        {"kind": r.kind, "value": r.value, "source": r.source, "created_at": r.created_at}
        for r in conn.execute(query)
    ]


def merges_of(conn: Connection, contact_id: int) -> list[dict[str, Any]]:
    """The merges the contact took part in (as survivor or absorbed), newest first."""
    query = (
        select(ContactMerge)
        .where(or_(ContactMerge.survivor_id == contact_id, ContactMerge.absorbed_id == contact_id))
        .order_by(ContactMerge.at.desc(), ContactMerge.id.desc())
    )
    return [
        {
            "id": r.id,
            "at": r.at,
            "survivor_id": r.survivor_id,
            "absorbed_id": r.absorbed_id,
            "actor": r.actor,
            "source": r.source,
            "details": dict(r.details or {}),
        }
        for r in conn.execute(query)
    ]
