"""The privacy part of the JSON API: everything held on a contact (access, portability) and its
erasure.

- ``GET /api/contacts/<external_id>/export``: one JSON document with every row held on the
  person (see `engine.audience.privacy.export_contact`); audited (``export``).
- ``DELETE /api/contacts/<external_id>``: erase the person's personal data (optional
  ``reason``, in a JSON body or the query string); 200 with what was removed per table, never
  the data itself; audited (``erase``).

Same key (``X-Api-Key``) and error shape as the rest of /api (see `designer.api`).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import request
from marshmallow import fields

from designer import ApiError, parcours
from designer.api import authenticate, json_body
from designer.api_actor import actor
from designer.api_schemas import Open
from designer.api_scope import requires
from designer.rest import RestBlueprint, body, problems
from engine.audience.identity import find_contact
from engine.audience.privacy import MAX_REASON, erase_contact, export_contact
from engine.store.db import checkpoint

api_privacy = RestBlueprint("api_privacy", __name__, url_prefix="/api", tag="privacy")
api_privacy.before_request(authenticate)


class Export(Open):
    """Every row held on the person, per table, and the tombstones merged into it."""

    contact = fields.Dict(required=True)


class EraseIn(ma.Schema):
    reason = fields.String(allow_none=True)


class Erased(ma.Schema):
    erased = fields.Dict(required=True, metadata={"description": "Rows removed, per table"})


def _not_found(external_id: str) -> ApiError:
    return ApiError(404, "not_found", f"No contact with external id '{external_id}'.")


def _reason() -> str | None:
    """`reason` from the JSON body (if any) or the query string: text up to MAX_REASON."""
    value: Any = request.args.get("reason")
    if request.content_length:
        body = json_body()
        if not isinstance(body, dict):
            raise ApiError(422, "invalid", 'The body is a JSON object: {"reason": "..."}.')
        value = body.get("reason", value)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_REASON):
        raise ApiError(422, "invalid", f"reason is text of {MAX_REASON} characters at most.",
                       "reason")  # fmt: skip
    return value or None


@api_privacy.get("/contacts/<external_id>/export")
@api_privacy.alt_response(200, schema=Export, description="Everything held on the contact")
@problems(404)
@requires("admin")
def export(external_id: str) -> dict[str, Any]:
    """Everything held on the contact, as JSON.

    With the tombstones merged into it; audited."""
    state = parcours()
    with state.engine.begin() as conn:  # writes the audit entry
        contact = find_contact(conn, external_id)
        if contact is None:
            raise _not_found(external_id)
        return export_contact(conn, contact.id, actor=actor())


@api_privacy.delete("/contacts/<external_id>")
@requires("admin")
@body(EraseIn, required=False)
@api_privacy.response(200, Erased)
@api_privacy.doc(
    parameters=[{"in": "query", "name": "reason", "schema": {"type": "string", "maxLength": 500}}]
)
@problems(404)
def erase(external_id: str) -> dict[str, Any]:
    """Erase the contact.

    Its personal data leaves every table; 200 with what was removed per table; audited."""
    state = parcours()
    reason = _reason()
    with state.engine.begin() as conn:
        contact = find_contact(conn, external_id)
        if contact is None:
            raise _not_found(external_id)
        report = erase_contact(conn, contact.id, state.clock.now(), actor(), reason)
    checkpoint(state.engine)  # SQLite: the WAL no longer holds the old pages
    return {"erased": report.to_dict()}
