"""The contacts of the API's list, a page at a time: keyset on the contact id, filtered.

Every filter is a condition the indexes answer, so a page costs the same on a million
contacts: `q` a prefix of the lower-cased external id or email (PostgreSQL: the
``text_pattern_ops`` indexes of migration 0018), `email` the email index, `segment` the
members' primary key, `updated_since` the `updated_at` index. Attribute equality is the one
filter no index answers: the page is then found by reading contacts in id order.
Merged (absorbed) and erased contacts are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select, type_coerce, union
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from engine.store.models import Contact, SegmentMember

LAST_CHARACTER = "\U0010ffff"  # every text starting with a prefix sorts below prefix + this


@dataclass(frozen=True)
class ContactFilter:
    """What the list keeps; every field left None keeps everyone."""

    q: str | None = None
    email: str | None = None
    segment: str | None = None
    updated_since: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _prefix(conn: Connection, q: str) -> ColumnElement[bool]:
    prefix = q.lower()
    external_id, email = func.lower(Contact.external_id), func.lower(Contact.email)
    if conn.dialect.name == "postgresql":  # the expressions of the 0018 indexes
        pattern = _like(prefix)
        # Each index read on its own, then joined by id: with an OR and ORDER BY id LIMIT the
        # planner may walk the primary key instead, hoping to meet matches early, which reads
        # the whole table for a rare prefix.
        matches = union(
            select(Contact.id).where(external_id.like(pattern, escape="\\")),
            select(Contact.id).where(email.like(pattern, escape="\\")),
        )
        return Contact.id.in_(select(matches.subquery().c.id))
    # SQLite: a range on the email index (emails are stored lower-case); the external id is
    # matched as each row is read (a small embedded workspace)
    return or_(
        external_id.like(_like(prefix), escape="\\"),
        (Contact.email >= prefix) & (Contact.email < prefix + LAST_CHARACTER),
    )


def _attribute(conn: Connection, name: str, values: list[Any]) -> ColumnElement[bool]:
    if conn.dialect.name == "postgresql":  # JSONB containment keeps the value's type
        document = type_coerce(Contact.attributes, JSONB)
        return or_(*(document.contains({name: v}) for v in values))
    if '"' in name or "\\" in name:
        raise ValueError(f"an attribute name for a filter has no quote or backslash: {name!r}")
    path = '$."' + name + '"'
    return func.json_extract(Contact.attributes, path).in_(values)


def page_query(conn: Connection, wanted: ContactFilter, after: int, limit: int) -> Select[Any]:
    """The query of one page: up to `limit` live contacts with an id above `after`, by id,
    that `wanted` keeps. `wanted.attributes` maps an attribute name to the values that match
    (any of them: the text a query string gave and its reading as a number or boolean)."""
    query = (
        select(Contact)
        .where(Contact.id > after, Contact.merged_into.is_(None), Contact.erased_at.is_(None))
        .order_by(Contact.id)
        .limit(limit)
    )
    if wanted.q:
        query = query.where(_prefix(conn, wanted.q))
    if wanted.email:
        query = query.where(Contact.email == wanted.email.strip().lower())
    if wanted.segment:
        members = select(SegmentMember.contact_id).where(
            SegmentMember.segment_id == wanted.segment, SegmentMember.contact_id > after
        )
        query = query.where(Contact.id.in_(members))
    if wanted.updated_since is not None:
        query = query.where(Contact.updated_at >= wanted.updated_since)
    for name, values in wanted.attributes.items():
        query = query.where(_attribute(conn, name, list(values)))
    return query


def contact_page(conn: Connection, wanted: ContactFilter, after: int, limit: int) -> list[Row[Any]]:
    """One page of contacts (see `page_query`)."""
    return list(conn.execute(page_query(conn, wanted, after, limit)))
