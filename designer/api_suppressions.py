"""The suppression list as a resource: the entries page by page, one entry, and lifting one.

Adding an address is ``POST /api/suppressions`` (`designer.api`). Lifting is audited with the
API key's name; an erasure's entry (a salted hash) is never lifted.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate
from sqlalchemy.orm import Session

from designer import ApiError, parcours
from designer.api import authenticate
from designer.api_actor import actor
from designer.api_cursor import NEXT, PageQuery, after, next_cursor
from designer.api_scope import requires
from designer.auth import audit
from designer.rest import RestBlueprint, problems
from engine.audience.identity import find_contact
from engine.errors import IngestError, NotFound
from engine.policy.consent import SUPPRESSION_REASONS
from engine.policy.suppressions import (
    SuppressionFilter,
    SuppressionKept,
    find_suppression,
    lift_suppression,
    suppression_page,
)
from engine.store.db import SQLITE_BEGIN

api_suppressions = RestBlueprint("api_suppressions", __name__, url_prefix="/api", tag="consents")
api_suppressions.before_request(authenticate)


class SuppressionQuery(PageQuery):
    channel = fields.String(
        validate=validate.Length(1, 32), metadata={"description": "`*`: the every-channel entries"}
    )
    reason = fields.String(validate=validate.OneOf(SUPPRESSION_REASONS))
    address = fields.String(
        validate=validate.Length(1, 320),
        metadata={"description": "An email, phone or contact:<id>; an erased one matches too"},
    )
    contact = fields.String(
        validate=validate.Length(1, 255), metadata={"description": "A contact's external id"}
    )


class SuppressionEntry(ma.Schema):
    id = fields.Integer(required=True)
    channel = fields.String(required=True)
    address = fields.String(
        required=True, metadata={"description": "As stored; an erased address is its hash"}
    )
    reason = fields.String(required=True, metadata={"enum": list(SUPPRESSION_REASONS)})
    source = fields.String(required=True)
    at = fields.String(required=True, metadata={"format": "date-time"})
    contact = fields.String(allow_none=True, required=True)


class SuppressionPage(ma.Schema):
    suppressions = fields.List(fields.Nested(SuppressionEntry), required=True)
    next = NEXT


class SuppressionAnswer(ma.Schema):
    suppression = fields.Nested(SuppressionEntry, required=True)


class LiftedAnswer(SuppressionAnswer):
    lifted = fields.Boolean(required=True)


def _entry(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "address": row.address,
        "reason": row.reason,
        "source": row.source,
        "at": row.at.isoformat(),
        "contact": row.contact,
    }


def _not_found(suppression_id: int) -> ApiError:
    return ApiError(404, "not_found", f"No suppression {suppression_id}.")


@api_suppressions.get("/suppressions")
@api_suppressions.arguments(SuppressionQuery, location="query", as_kwargs=True)
@api_suppressions.response(200, SuppressionPage)
def list_suppressions(
    limit: int, cursor: str | None, contact: str | None = None, **filters: Any
) -> dict[str, Any]:
    """The suppression list, oldest first, a page at a time (pass `next` as `cursor`);
    filters: `channel`, `reason`, `address` (also finds the salted hash an erasure left) and
    `contact`."""
    start = after("suppressions", cursor)
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        contact_id = None
        if contact is not None:
            found = find_contact(conn, contact)
            if found is None:
                raise ApiError(
                    422, "invalid", f"No contact with external id '{contact}'.", "contact"
                )
            contact_id = found.id
        try:
            wanted = SuppressionFilter(**filters, contact_id=contact_id)
            rows = suppression_page(conn, wanted, start, limit + 1)
        except IngestError as exc:
            raise ApiError(422, "invalid", str(exc), getattr(exc, "field", None)) from None
    return {
        "suppressions": [_entry(r) for r in rows[:limit]],
        "next": next_cursor("suppressions", rows, limit),
    }


@api_suppressions.get("/suppressions/<int:suppression_id>")
@api_suppressions.response(200, SuppressionAnswer)
@problems(404)
def get_suppression(suppression_id: int) -> dict[str, Any]:
    """One entry of the suppression list."""
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        try:
            return {"suppression": _entry(find_suppression(conn, suppression_id))}
        except NotFound:
            raise _not_found(suppression_id) from None


@api_suppressions.delete("/suppressions/<int:suppression_id>")
@api_suppressions.response(200, LiftedAnswer)
@problems(404, 409)
@requires("write")
def delete_suppression(suppression_id: int) -> dict[str, Any]:
    """Lift a suppression: marketing may reach the address on that channel again (consent
    still applies). Audited with the API key's name. An erasure's entry stays: 409."""
    try:
        with Session(parcours().engine) as db, db.begin():
            row = lift_suppression(db.connection(), suppression_id)
            audit(
                db, "lift", "suppression", str(suppression_id), actor=actor(),
                channel=row.channel, reason=row.reason,
            )  # fmt: skip
    except NotFound:
        raise _not_found(suppression_id) from None
    except SuppressionKept as exc:
        raise ApiError(409, "suppression_kept", str(exc).capitalize() + ".") from None
    return {"suppression": _entry(row), "lifted": True}
