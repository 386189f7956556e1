"""The identity part of the JSON API: identify a person by every identifier known at once, and
merge two contacts.

- ``POST /api/identify`` ``{"external_id": "ann", "anonymous_id": "w-1", "email": ...,
  "identifiers": {"loyalty_card": "L-1"}}``: every contact these name becomes one (see
  `engine.audience.merge.identify`); answers the contact, its identifiers and the merges done.
- ``POST /api/contacts/merge`` ``{"survivor": "ann", "absorbed": "web-1"}``: merges the second
  into the first (external ids).

Same key (``X-Api-Key``) and error shape as the rest of /api (see `designer.api`).
"""

from __future__ import annotations

from typing import Any, NoReturn

import marshmallow as ma
from marshmallow import fields

from designer import ApiError, Parcours, parcours
from designer.api import _workspace_policy, authenticate, contact_answer, json_body
from designer.api_schemas import ContactAnswer, Open
from designer.rest import RestBlueprint, body, problems
from engine.audience.identity import (
    IdentifierInvalid,
    clean_identifier,
    clean_identifiers,
    find_contact,
)
from engine.audience.merge import MergeRefused, identify, merge_contacts
from engine.spec.identity_settings import IdentitySettings, current_identity
from engine.spec.problems import did_you_mean
from engine.store.models import Contact

api_identity = RestBlueprint("api_identity", __name__, url_prefix="/api", tag="identity")
api_identity.before_request(authenticate)

ACTOR = "api"  # whoever holds the API key


class IdentifyIn(Open):
    """external_id, identifiers, and any identifier kind of the workspace as a key."""

    external_id = fields.String()
    anonymous_id = fields.String()
    email = fields.String()
    phone = fields.String()
    identifiers = fields.Dict(keys=fields.String(), values=fields.String())


class Identified(ContactAnswer):
    created = fields.Boolean(required=True)
    promoted = fields.Boolean(required=True)
    merges = fields.List(fields.Integer(), required=True)


class MergeIn(ma.Schema):
    survivor = fields.String(required=True, metadata={"description": "External id kept"})
    absorbed = fields.String(required=True, metadata={"description": "External id merged"})


class Absorbed(ma.Schema):
    id = fields.Integer(required=True)
    external_id = fields.String(allow_none=True)


class Merged(ContactAnswer):
    merge_id = fields.Integer(required=True)
    absorbed = fields.Nested(Absorbed, required=True)
    moved = fields.Dict(required=True, metadata={"description": "Rows moved, per table"})


def _invalid(message: str, field: str | None = None, code: str = "invalid") -> NoReturn:
    raise ApiError(422, code, message, field)


def _identity(state: Parcours) -> IdentitySettings:
    return current_identity(state.settings.scenarios_dir)


def _external_id(body: dict[str, Any], name: str, required: bool) -> str | None:
    value = body.get(name)
    if value in (None, ""):
        if required:
            _invalid(f"'{name}' is required: a contact's external id.", name)
        return None
    if not isinstance(value, str) or value != value.strip() or len(value) > 255:
        _invalid(f"'{name}' is an external id: 1 to 255 characters, no outer spaces.", name)
    return value


def _identifiers(body: dict[str, Any], settings: IdentitySettings) -> list[tuple[str, str]]:
    """The identifiers given at the top level (`anonymous_id`, `email`, any kind) and under
    `identifiers`; an unknown key is refused with a hint."""
    known = settings.known_kinds()
    pairs: list[tuple[str, str]] = []
    try:
        for key, value in body.items():
            if key in ("external_id", "identifiers"):
                continue
            if key not in known:
                hint = did_you_mean(key, [*known, "external_id", "identifiers"])
                _invalid(
                    f"Unknown field '{key[:40]}'; give external_id, identifiers or an "
                    f"identifier kind ({', '.join(known)})." + (f" ({hint})" if hint else ""),
                    key,
                )
            pairs.append(clean_identifier(key, value, settings, key))
        pairs += clean_identifiers(body.get("identifiers"), settings)
    except IdentifierInvalid as exc:
        _invalid(exc.message, exc.field)
    return pairs


@api_identity.post("/identify")
@body(IdentifyIn)
@api_identity.response(200, Identified)
@problems(409)
def post_identify() -> dict[str, Any]:
    """Recognise one person by all its identifiers.

    The contacts they name become one.

    The survivor is the contact `external_id` names, else the oldest known contact found, else
    the anonymous one (which takes the external id). Calling it again changes nothing.
    """
    state = parcours()
    body = json_body()
    if not isinstance(body, dict):
        _invalid("Identify with a JSON object: external_id, anonymous_id, identifiers...")
    settings = _identity(state)
    external_id = _external_id(body, "external_id", required=False)
    pairs = _identifiers(body, settings)
    if external_id is None and not pairs:
        _invalid("Give an external_id or at least one identifier.", "identifiers")
    policy = _workspace_policy(state)
    with state.engine.begin() as conn:
        try:
            done = identify(conn, pairs, state.clock.now(), ACTOR, "api",
                            external_id=external_id, policy=policy, settings=settings)  # fmt: skip
        except MergeRefused as exc:
            raise ApiError(409, "merge_refused", str(exc), exc.field) from None
        contact = conn.execute(_contact_row(done.contact_id)).one()
        answer = contact_answer(conn, contact)
    return {**answer, "created": done.created, "promoted": done.promoted,
            "merges": list(done.merges)}  # fmt: skip


def _contact_row(contact_id: int) -> Any:
    from sqlalchemy import select

    return select(Contact).where(Contact.id == contact_id)


@api_identity.post("/contacts/merge")
@body(MergeIn)
@api_identity.response(200, Merged)
@problems(404, 409)
def post_merge() -> dict[str, Any]:
    """Merge one contact into another.

    Contact `absorbed` goes into contact `survivor` (external ids); answers what moved."""
    state = parcours()
    body = json_body()
    if not isinstance(body, dict):
        _invalid('Merge with a JSON object: {"survivor": ..., "absorbed": ...}.')
    unknown = sorted(set(body) - {"survivor", "absorbed"})
    if unknown:
        _invalid(f"Unknown field '{unknown[0][:40]}'; give survivor and absorbed.", unknown[0])
    names = {k: _external_id(body, k, required=True) for k in ("survivor", "absorbed")}
    policy = _workspace_policy(state)
    with state.engine.begin() as conn:
        rows = {}
        for role, ext in names.items():
            rows[role] = find_contact(conn, str(ext))
            if rows[role] is None:
                raise ApiError(404, "not_found", f"No contact with external id '{ext}'.", role)
        try:
            report = merge_contacts(
                conn, rows["survivor"].id, rows["absorbed"].id, state.clock.now(), ACTOR, "api",
                policy=policy, settings=_identity(state),
            )  # fmt: skip
        except MergeRefused as exc:
            raise ApiError(409, "merge_refused", str(exc), exc.field) from None
        answer = contact_answer(conn, conn.execute(_contact_row(report.survivor_id)).one())
    return {**answer, "merge_id": report.merge_id,
            "absorbed": {"id": report.absorbed_id, "external_id": report.absorbed_external_id},
            "moved": report.moved}  # fmt: skip
