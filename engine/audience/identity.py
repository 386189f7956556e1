"""Identity: the identifiers that recognise a contact online and offline, and merges.

A contact is named by its external id and, beyond it, by identifiers (email, phone, anonymous
web id, loyalty card, any declared kind), unique per kind. A merge keeps the absorbed contact as
a tombstone (`merged_into`) whose external id becomes an identifier of the survivor, so that
whatever named the absorbed contact names the survivor from then on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import aliased

from engine.audience.contacts import EMAIL, MAX_EMAIL_LENGTH, PHONE, shown
from engine.errors import IngestError
from engine.spec.identity_settings import EXTERNAL_ID, IdentitySettings
from engine.spec.problems import did_you_mean
from engine.store.models import Contact, ContactIdentifier, ContactMerge

MAX_VALUE = 255  # contact_identifiers.value and contacts.external_id
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
    """The merges the contact took part in (as survivor or absorbed), newest first, each with
    which side the contact was (`absorbed`) and the other side's id and external id."""
    other = aliased(Contact)
    side = case((ContactMerge.survivor_id == contact_id, ContactMerge.absorbed_id),
                else_=ContactMerge.survivor_id)  # fmt: skip
    query = (
        select(ContactMerge, other.external_id.label("other_external_id"))
        .join(other, other.id == side, isouter=True)
        .where(or_(ContactMerge.survivor_id == contact_id, ContactMerge.absorbed_id == contact_id))
        .order_by(ContactMerge.at.desc(), ContactMerge.id.desc())
    )
    rows = []
    for r in conn.execute(query):
        absorbed = r.absorbed_id == contact_id
        rows.append({
            "id": r.id,
            "at": r.at,
            "survivor_id": r.survivor_id,
            "absorbed_id": r.absorbed_id,
            "actor": r.actor,
            "source": r.source,
            "details": dict(r.details or {}),
            "absorbed": absorbed,
            "other_id": r.survivor_id if absorbed else r.absorbed_id,
            "other_external_id": r.other_external_id,
        })  # fmt: skip
    return rows


# ---------------------------------------------------------------- identifiers in


class IdentifierInvalid(IngestError):
    """An identifier was refused; `field` names the field at fault (`identifiers.loyalty_card`)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdentifierTaken(IngestError):
    """An identifier is already held by another contact (the API answers 409)."""

    def __init__(self, kind: str, field: str) -> None:
        super().__init__(f"{field}: this {kind} already identifies another contact")
        self.field = field
        self.message = f"this {kind} already identifies another contact"


def clean_identifier(
    kind: Any,
    value: Any,
    settings: IdentitySettings | None = None,
    field: str | None = None,
    value_field: str | None = None,
) -> tuple[str, str]:
    """(kind, value) checked and normalised: email trimmed and lower-cased, phone without its
    spaces, dots and dashes, any other kind trimmed; 1..255 characters. An unknown kind, or the
    reserved `external_id`, is refused naming `field` (default: `identifiers.<kind>`), a bad
    value naming `value_field` (default: `field`)."""
    settings = settings or IdentitySettings()
    where = field or f"identifiers.{kind}"
    if not isinstance(kind, str) or not kind:
        raise IdentifierInvalid("the kind of an identifier is text (e.g. loyalty_card)", where)
    if kind == EXTERNAL_ID:
        raise IdentifierInvalid(
            "external_id is reserved (the external ids of merged contacts): name the contact by "
            "its external id instead",
            where,
        )
    known = settings.known_kinds()
    if kind not in known:
        hint = did_you_mean(kind, known)
        raise IdentifierInvalid(
            f"unknown identifier kind '{shown(kind, 40)}' (declare it under kinds: in "
            f"identity.yaml); known: {', '.join(known)}" + (f"; {hint}" if hint else ""),
            where,
        )
    where = value_field or where
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise IdentifierInvalid("an identifier's value is text", where)
    text = str(value).strip()
    if not 1 <= len(text) <= MAX_VALUE or "\x00" in text:
        raise IdentifierInvalid(f"1 to {MAX_VALUE} characters of text, without NUL", where)
    if kind == "email":
        if len(text) > MAX_EMAIL_LENGTH or not EMAIL.fullmatch(text):
            raise IdentifierInvalid(f"'{shown(value)}' is not an email address", where)
        text = text.lower()
    elif kind == "phone":
        if not PHONE.fullmatch(text):
            raise IdentifierInvalid(
                f"'{shown(value)}' is not a phone number (use +33612345678)", where
            )
        text = re.sub(r"[ .-]", "", text)
    return kind, text


def clean_identifiers(
    raw: Any, settings: IdentitySettings | None = None, field: str = "identifiers"
) -> list[tuple[str, str]]:
    """An `{"kind": "value"}` object as checked (kind, value) pairs, in the given order."""
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise IdentifierInvalid('an object of kind → value (e.g. {"loyalty_card": "L-1"})', field)
    return [clean_identifier(k, v, settings, f"{field}.{k}") for k, v in raw.items()]


# ---------------------------------------------------------------- resolution (set-based)


def live_ids(conn: Connection, ids: Iterable[int]) -> dict[int, int | None]:
    """Each contact id → the live contact at the end of its merged_into chain (None: erased or
    unknown), one query per hop whatever the number of ids."""
    wanted = set(ids)
    out: dict[int, int | None] = {}
    current = {i: i for i in wanted}  # start → where the walk is
    for _ in range(MAX_HOPS):
        if not current:
            break
        rows = {
            r.id: r
            for r in conn.execute(
                select(Contact.id, Contact.merged_into, Contact.erased_at).where(
                    Contact.id.in_(list(set(current.values())))
                )
            )
        }
        following: dict[int, int] = {}
        for start, at in current.items():
            row = rows.get(at)
            if row is None or row.erased_at is not None:
                out[start] = None
            elif row.merged_into is None:
                out[start] = at
            else:
                following[start] = int(row.merged_into)
        current = following
    out.update(dict.fromkeys(current))  # a loop: nothing live at its end
    return out


def resolve(conn: Connection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(kind, value) → the live contact it names, for the pairs that name one, set-based: one
    query per kind (and per merge hop). Kind `external_id` reads `contacts.external_id`, then
    the absorbed contacts' external ids; email and phone fall back to the profile's column when
    exactly one live contact has that address."""
    by_kind: dict[str, set[str]] = {}
    for kind, value in pairs:
        by_kind.setdefault(kind, set()).add(value)
    found: dict[tuple[str, str], int] = {}
    externals = by_kind.get(EXTERNAL_ID, set())
    if externals:
        query = select(Contact.external_id, Contact.id).where(
            Contact.external_id.in_(list(externals))
        )
        found.update({(EXTERNAL_ID, str(e)): int(i) for e, i in conn.execute(query)})
    for kind, values in by_kind.items():
        missing = [v for v in values if (kind, v) not in found]
        if not missing:
            continue
        query = select(ContactIdentifier.value, ContactIdentifier.contact_id).where(
            ContactIdentifier.kind == kind, ContactIdentifier.value.in_(missing)
        )
        found.update({(kind, str(v)): int(i) for v, i in conn.execute(query)})
    for kind, column in (("email", Contact.email), ("phone", Contact.phone)):
        missing = [v for v in by_kind.get(kind, ()) if (kind, v) not in found]
        if missing:
            by_address = (
                select(column, func.min(Contact.id))
                .where(column.in_(missing), Contact.merged_into.is_(None))
                .where(Contact.erased_at.is_(None))
                .group_by(column)
                .having(func.count() == 1)
            )
            found.update({(kind, str(v)): int(i) for v, i in conn.execute(by_address)})
    live = live_ids(conn, set(found.values()))
    return {pair: live_id for pair, cid in found.items() if (live_id := live[cid]) is not None}


def anonymous_external_id(kind: str, value: str) -> str:
    """The external id of a contact created for an unknown identifier: `anonymous:<kind>:<value>`,
    or a digest of the value when that would not fit 255 characters (never a cut value: two
    long values sharing a prefix must not name the same contact)."""
    name = f"anonymous:{kind}:{value}"
    if len(name) <= MAX_VALUE:
        return name
    return f"anonymous:{kind}:sha256:{hashlib.sha256(value.encode()).hexdigest()}"


def insert_ignoring(conn: Connection, table: Any, columns: list[str]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=columns)


def register(
    conn: Connection, contact_id: int, pairs: Iterable[tuple[str, str]], source: str, now: datetime
) -> int:
    """Give the contact these identifiers (one statement); one already held stays where it is.
    Returns how many were added."""
    rows = [
        {"contact_id": contact_id, "kind": k, "value": v, "source": source, "created_at": now}
        for k, v in dict.fromkeys(pairs)
    ]
    if not rows:
        return 0
    stmt = insert_ignoring(conn, ContactIdentifier, ["kind", "value"])
    return len(conn.execute(stmt.returning(ContactIdentifier.id), rows).all())


def ensure_contacts(
    conn: Connection, pairs: Iterable[tuple[str, str]], now: datetime, source: str = "event"
) -> dict[tuple[str, str], int]:
    """Like `resolve`, creating an anonymous contact holding each identifier no contact has
    (an unknown anonymous id, an offline purchase with an unlinked loyalty card): a merge
    absorbs it later. Set-based: a few statements whatever the number of pairs."""
    wanted = list(dict.fromkeys(pairs))
    found = resolve(conn, wanted)
    missing = [p for p in wanted if p not in found and p[0] != EXTERNAL_ID]
    if not missing:
        return found
    names = {anonymous_external_id(k, v): (k, v) for k, v in missing}
    rows = [
        {
            "external_id": name, "attributes": {}, "tags": [], "score": 0, "opted_out": False,
            "anonymous": True, "created_at": now, "updated_at": now,
        }
        for name in names
    ]  # fmt: skip
    conn.execute(insert_ignoring(conn, Contact, ["external_id"]), rows)
    ids = conn.execute(
        select(Contact.external_id, Contact.id).where(Contact.external_id.in_(list(names)))
    ).all()
    identifiers = [
        {"contact_id": i, "kind": names[e][0], "value": names[e][1], "source": source,
         "created_at": now}
        for e, i in ids
    ]  # fmt: skip
    if identifiers:
        conn.execute(insert_ignoring(conn, ContactIdentifier, ["kind", "value"]), identifiers)
    found.update(resolve(conn, missing))
    return found
