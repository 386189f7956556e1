"""The contacts resource of the API: the list with search and cursor pagination, and the bulk
upsert of up to 1,000 contacts with each row's outcome.

One contact's get and upsert are ``GET`` and ``PUT /api/contacts/<external_id>``
(`designer.api`); a bulk row is checked and written by the same engine functions
(`engine.audience.contact_upsert`).
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

import marshmallow as ma
from flask import request
from marshmallow import fields, validate

from designer import ApiError, parcours
from designer.api import MAX_BATCH, authenticate
from designer.api_cursor import NEXT, PageQuery, after, next_cursor
from designer.api_scope import requires
from designer.rest import FieldError, RestBlueprint, problems
from engine.audience.contact_list import ContactFilter, contact_page
from engine.audience.contact_upsert import clean_contact_body, identifiers_taken, upsert_rows
from engine.audience.contacts import RowInvalid
from engine.audience.ingest import contact_profile
from engine.spec.identity_settings import current_identity
from engine.store.db import SQLITE_BEGIN

api_contacts = RestBlueprint("api_contacts", __name__, url_prefix="/api", tag="contacts")
api_contacts.before_request(authenticate)

ATTRIBUTE_ARG = "attr."
MAX_ATTRIBUTE_FILTERS = 5
ATTRIBUTE_NAME = re.compile(r"[^\"\\\x00-\x1f]{1,128}")
NUMBER = re.compile(r"-?(0|[1-9]\d{0,14})(\.\d+)?")


class ContactListQuery(PageQuery):
    q = fields.String(
        validate=validate.Length(1, 255),
        metadata={"description": "A prefix of the external id or email, any case"},
    )
    email = fields.String(validate=validate.Length(1, 320), metadata={"description": "Exact"})
    segment = fields.String(
        validate=validate.Length(1, 128), metadata={"description": "Members of this segment"}
    )
    updated_since = fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "Changed at or after this instant (ISO 8601; naive: UTC)"},
    )


class ContactProfile(ma.Schema):
    external_id = fields.String(required=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    timezone = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    score = fields.Integer(required=True)
    tags = fields.List(fields.String(), required=True)
    opted_out = fields.Boolean(required=True)
    attributes = fields.Dict(required=True)
    created_at = fields.String(allow_none=True, metadata={"format": "date-time"})
    updated_at = fields.String(allow_none=True, metadata={"format": "date-time"})


class ContactPage(ma.Schema):
    contacts = fields.List(fields.Nested(ContactProfile), required=True)
    next = NEXT


class BulkContacts(ma.Schema):
    contacts = fields.List(
        fields.Raw(),
        required=True,
        metadata={
            "description": f"Up to {MAX_BATCH} contacts, each as PUT /api/contacts/<id> takes "
            "it plus its `external_id`",
            "items": {"type": "object"},
        },
    )


class BulkRow(ma.Schema):
    index = fields.Integer(required=True)
    external_id = fields.String(allow_none=True, required=True)
    status = fields.String(
        required=True, metadata={"enum": ["created", "updated", "unchanged", "error"]}
    )
    error = fields.Nested(FieldError, allow_none=True, required=True)


class BulkCounts(ma.Schema):
    created = fields.Integer(required=True)
    updated = fields.Integer(required=True)
    unchanged = fields.Integer(required=True)
    error = fields.Integer(required=True)


class BulkResult(ma.Schema):
    results = fields.List(fields.Nested(BulkRow), required=True)
    counts = fields.Nested(BulkCounts, required=True)


def _readings(text: str) -> list[Any]:
    """A query-string value and what it reads as: a number, a boolean (attributes hold both)."""
    found: list[Any] = [text]
    if text in ("true", "false"):
        found.append(text == "true")
    elif NUMBER.fullmatch(text):
        found.append(float(text) if "." in text else int(text))
    return found


def _attribute_filters() -> dict[str, list[Any]]:
    wanted = {
        name[len(ATTRIBUTE_ARG) :]: value
        for name, value in request.args.items()
        if name.startswith(ATTRIBUTE_ARG)
    }
    if len(wanted) > MAX_ATTRIBUTE_FILTERS:
        raise ApiError(
            422, "invalid", f"At most {MAX_ATTRIBUTE_FILTERS} attribute filters.", ATTRIBUTE_ARG
        )
    for name in wanted:
        if not ATTRIBUTE_NAME.fullmatch(name):
            raise ApiError(
                422,
                "invalid",
                "An attribute name is 1 to 128 characters, no quote, backslash or control.",
                ATTRIBUTE_ARG + name,
            )
    return {name: _readings(value) for name, value in wanted.items()}


@api_contacts.get("/contacts")
@api_contacts.arguments(ContactListQuery, location="query", as_kwargs=True)
@api_contacts.response(200, ContactPage)
def list_contacts(limit: int, cursor: str | None, **filters: Any) -> dict[str, Any]:
    """Contacts in a stable order (oldest first), a page at a time: pass `next` as `cursor`
    for the following page (also in the `Link` header). Filters combine: `q` (a prefix of the
    external id or email, any case), `email`, `segment` (its members), `updated_since`, and
    `attr.<name>=<value>` for attribute equality (up to 5; the value also matches as a number
    or boolean). Merged and erased contacts are not listed."""
    wanted = ContactFilter(**filters, attributes=_attribute_filters())
    start = after("contacts", cursor)
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        rows = contact_page(conn, wanted, start, limit + 1)
    return {
        "contacts": [contact_profile(r) for r in rows[:limit]],
        "next": next_cursor("contacts", rows, limit),
    }


def _row_error(index: int, field: str, message: str) -> dict[str, Any]:
    path = f"contacts.{index}" + (f".{field}" if field else "")
    return {"field": path, "message": message}


@api_contacts.post("/contacts/bulk")
@api_contacts.arguments(BulkContacts)
@api_contacts.response(200, BulkResult)
@problems(413)
@requires("write")
def bulk_contacts(body: dict[str, Any]) -> dict[str, Any]:
    """Create or update up to 1,000 contacts in one transaction, each as
    `PUT /api/contacts/<external_id>` would (given fields replace, attributes merge key by key,
    `identifiers` are added). 200 with one result per row, in order: `created`, `updated`,
    `unchanged` (nothing written) or `error` with the field that failed; a bad row does not
    stop the others. More than 1,000 rows: 413, nothing written."""
    state = parcours()
    given = body["contacts"]
    if len(given) > MAX_BATCH:
        raise ApiError(
            413,
            "too_many",
            f"At most {MAX_BATCH} contacts per request ({len(given)} sent).",
            "contacts",
        )
    settings = current_identity(state.settings.scenarios_dir)
    results: list[dict[str, Any]] = []
    good: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(given):
        named = raw.get("external_id") if isinstance(raw, dict) else None
        result = {"index": index, "external_id": named, "status": "error", "error": None}
        results.append(result)
        try:
            good.append((index, clean_contact_body(raw, None, settings)))
        except RowInvalid as exc:
            result["error"] = _row_error(index, exc.field, exc.message)
    with state.engine.begin() as conn:
        taken = identifiers_taken(conn, [row for _, row in good])
        for position, kind in taken.items():
            index = good[position][0]
            results[index]["error"] = _row_error(
                index,
                f"identifiers.{kind}",
                f"This {kind} already identifies another contact (POST /api/identify merges them).",
            )
        kept = [(index, row) for position, (index, row) in enumerate(good) if position not in taken]
        statuses = upsert_rows(conn, [row for _, row in kept], state.clock.now())
    for (index, _), status in zip(kept, statuses, strict=True):
        results[index]["status"] = status
    counts = dict.fromkeys(("created", "updated", "unchanged", "error"), 0)
    for result in results:
        counts[result["status"]] += 1
    return {"results": results, "counts": counts}
