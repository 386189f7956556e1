"""Contacts written through the API: one body checked the way ``PUT /api/contacts/<id>`` takes
it, and many upserted in one set-based pass with each row's outcome.

`clean_contact_body` checks one body (profile fields, `attributes`, `identifiers`);
`identifiers_taken` says which rows add an identifier another contact already holds;
`upsert_rows` writes the rows through `upsert_contacts` and says, per row, whether it created
the contact, changed it, or changed nothing (such rows are not written: their `updated_at`
stays and no segment refreshes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Connection

from engine.audience.contacts import RowInvalid
from engine.audience.identity import IdentifierInvalid, clean_identifiers, resolve
from engine.audience.ingest import PROFILE_COLUMNS, clean_contact, upsert_contacts
from engine.spec.identity_settings import EXTERNAL_ID, IdentitySettings
from engine.store.models import Contact, ContactIdentifier

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"


def clean_contact_body(
    body: Any, external_id: str | None = None, settings: IdentitySettings | None = None
) -> dict[str, Any]:
    """One contact as the API takes it, checked: the cleaned row with its `identifiers`
    ((kind, value) pairs). `external_id` is the URL's (the body may repeat it, not contradict
    it); None reads it from the body. RowInvalid names the field at fault ("" is the body)."""
    if not isinstance(body, Mapping):
        raise RowInvalid("", "a contact is a JSON object of profile fields and attributes")
    if "attributes" in body and not isinstance(body["attributes"], Mapping | None):
        raise RowInvalid("attributes", "must be a JSON object")
    if external_id is None:
        given = body.get("external_id")
        if not isinstance(given, str) or not given.strip():
            raise RowInvalid("external_id", "required: the id your systems use for this contact")
        external_id = given
    for name in ("external_id", "id"):
        if body.get(name) not in (None, "") and str(body[name]) != external_id:
            raise RowInvalid(name, f"differs from the URL's '{external_id}'")
    fields = {k: v for k, v in body.items() if k != "identifiers"}
    try:
        identifiers = clean_identifiers(body.get("identifiers"), settings)
    except IdentifierInvalid as exc:
        raise RowInvalid(exc.field, exc.message) from None
    row = clean_contact({**fields, "external_id": external_id})
    if row["external_id"] != external_id:
        raise RowInvalid("external_id", "an external id cannot start or end with spaces")
    return {**row, "identifiers": identifiers}


def identifiers_taken(conn: Connection, rows: list[dict[str, Any]]) -> dict[int, str]:
    """Row index → the first identifier kind of that row another contact holds (registered
    identifiers only: email and phone also name a contact by its profile, which takes nothing),
    in three queries whatever the number of rows."""
    pairs = {p for row in rows for p in row.get("identifiers") or ()}
    if not pairs:
        return {}
    mine = resolve(conn, [(EXTERNAL_ID, row["external_id"]) for row in rows])
    holders = resolve(conn, pairs)
    registered = {
        (str(kind), str(value))
        for kind, value in conn.execute(
            select(ContactIdentifier.kind, ContactIdentifier.value).where(
                tuple_(ContactIdentifier.kind, ContactIdentifier.value).in_(sorted(pairs))
            )
        )
    }
    taken: dict[int, str] = {}
    for index, row in enumerate(rows):
        owner = mine.get((EXTERNAL_ID, row["external_id"]))
        for pair in row.get("identifiers") or ():
            if pair in registered and (owner is None or holders.get(pair) != owner):
                taken[index] = pair[0]
                break
    return taken


def upsert_rows(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> list[str]:
    """Create or update cleaned rows (`clean_contact_body`) by external id, in order; per row
    `created`, `updated` or `unchanged`. A later row for the same contact sees the earlier."""
    if not rows:
        return []
    named = resolve(conn, [(EXTERNAL_ID, row["external_id"]) for row in rows])
    ids = set(named.values())
    current: dict[Any, dict[str, Any]] = {}
    if ids:
        columns = [getattr(Contact, c) for c in PROFILE_COLUMNS]
        query = select(Contact.id, Contact.attributes, *columns).where(Contact.id.in_(ids))
        for found in conn.execute(query).mappings():
            current[found["id"]] = {**found, "identifiers": set()}
        query = select(
            ContactIdentifier.contact_id, ContactIdentifier.kind, ContactIdentifier.value
        ).where(ContactIdentifier.contact_id.in_(ids))
        for contact_id, kind, value in conn.execute(query):
            current[contact_id]["identifiers"].add((kind, value))
    statuses: list[str] = []
    for row in rows:
        key = named.get((EXTERNAL_ID, row["external_id"]), row["external_id"])
        before = current.get(key)
        if before is None:
            statuses.append(CREATED)
            before = {"attributes": {}, "identifiers": set()}
        elif _changes(before, row):
            statuses.append(UPDATED)
        else:
            statuses.append(UNCHANGED)
        current[key] = {
            **before,
            **{k: row[k] for k in PROFILE_COLUMNS if k in row},
            "attributes": {**(before["attributes"] or {}), **row["attributes"]},
            "identifiers": before["identifiers"] | set(row.get("identifiers") or ()),
        }
    written = [row for row, status in zip(rows, statuses, strict=True) if status != UNCHANGED]
    upsert_contacts(conn, written, now)
    return statuses


def _changes(before: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    attributes = before["attributes"] or {}
    return (
        any(k in row and row[k] != before[k] for k in PROFILE_COLUMNS)
        or any(k not in attributes or attributes[k] != v for k, v in row["attributes"].items())
        or not set(row.get("identifiers") or ()) <= before["identifiers"]
    )
