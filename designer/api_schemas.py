"""The marshmallow schemas of the JSON API's events, contacts, consents and manual entries: what
the OpenAPI document shows and what answers are dumped through.

Bodies whose rules live in the engine (an event's contact named three ways, a contact whose
unknown keys are attributes) are checked there, field by field; their schemas here say what is
accepted. Instants are ISO 8601 strings with an offset.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

Instant = {"format": "date-time"}
ExternalId = fields.String(validate=validate.Length(1, 255))


class Open(ma.Schema):
    """A schema that keeps the keys it does not declare (attributes, evidence...)."""

    class Meta:
        unknown = ma.INCLUDE


class IdentifierRef(ma.Schema):
    kind = fields.String(required=True, metadata={"example": "loyalty_card"})
    value = fields.String(required=True)


class EventIn(Open):
    """One event; name the contact once: `contact`, `anonymous_id` or `identifier`."""

    contact = fields.String(metadata={"description": "The contact's external id"})
    anonymous_id = fields.String()
    identifier = fields.Nested(IdentifierRef)
    name = fields.String(
        required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,128}$"), metadata={}
    )
    properties = fields.Dict(metadata={"description": "Up to 64 KiB of JSON"})
    occurred_at = fields.String(metadata={**Instant, "description": "Default: now"})
    event_key = fields.String(
        validate=validate.Length(max=255),
        metadata={"description": "Idempotency: an event whose key was seen is not recorded"},
    )


class EventsRecorded(ma.Schema):
    recorded = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)


class ContactIn(Open):
    """Profile fields replace, attributes merge key by key; an unknown key is an attribute."""

    external_id = fields.String(metadata={"description": "If given, the URL's"})
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True, metadata={"example": "+33612345678"})
    timezone = fields.String(allow_none=True, metadata={"example": "Europe/Paris"})
    locale = fields.String(allow_none=True, metadata={"example": "fr-FR"})
    score = fields.Integer(allow_none=True)
    tags = fields.List(fields.String(), allow_none=True)
    opted_out = fields.Boolean(allow_none=True)
    attributes = fields.Dict(allow_none=True)
    identifiers = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        allow_none=True,
        metadata={"example": {"loyalty_card": "L-1"}},
    )


class Profile(ma.Schema):
    external_id = fields.String(required=True)
    email = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    timezone = fields.String(allow_none=True)
    locale = fields.String(allow_none=True)
    score = fields.Integer(allow_none=True)
    tags = fields.List(fields.String())
    opted_out = fields.Boolean()
    attributes = fields.Dict()
    created_at = fields.String(allow_none=True, metadata=Instant)
    updated_at = fields.String(allow_none=True, metadata=Instant)


class Identifier(ma.Schema):
    kind = fields.String(required=True)
    value = fields.String(required=True)
    source = fields.String(allow_none=True)
    created_at = fields.String(allow_none=True, metadata=Instant)


class ContactAnswer(ma.Schema):
    contact = fields.Nested(Profile, required=True)
    identifiers = fields.List(fields.Nested(Identifier), required=True)


class ContactSaved(ContactAnswer):
    created = fields.Boolean(required=True)


class SegmentSince(ma.Schema):
    id = fields.String(required=True)
    since = fields.String(allow_none=True, metadata=Instant)


class EnrollmentSeen(ma.Schema):
    scenario = fields.String(required=True)
    status = fields.String(required=True)
    step = fields.String(allow_none=True)
    entered_at = fields.String(allow_none=True, metadata=Instant)


class EventSeen(ma.Schema):
    name = fields.String(required=True)
    occurred_at = fields.String(allow_none=True, metadata=Instant)
    properties = fields.Dict()


class ContactDetails(ContactAnswer):
    segments = fields.List(fields.Nested(SegmentSince), required=True)
    enrollments = fields.List(fields.Nested(EnrollmentSeen), required=True)
    events = fields.List(fields.Nested(EventSeen), required=True)


class ConsentIn(ma.Schema):
    channel = fields.String(required=True, metadata={"example": "email"})
    topic = fields.String(required=True, metadata={"example": "newsletter"})
    state = fields.String(required=True, metadata={"enum": ["opted_in", "opted_out"]})
    source = fields.String(required=True, metadata={"example": "form"})
    wording = fields.String(allow_none=True)
    wording_version = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    evidence = fields.Dict(allow_none=True)
    expires_at = fields.String(allow_none=True, metadata=Instant)


class ConsentRecord(ma.Schema):
    id = fields.Integer(required=True)
    channel = fields.String(required=True)
    topic = fields.String(required=True)
    state = fields.String(required=True)
    source = fields.String(allow_none=True)
    at = fields.String(allow_none=True, metadata=Instant)
    expires_at = fields.String(allow_none=True, metadata=Instant)


class Confirmation(ma.Schema):
    send_key = fields.String(required=True)


class ConsentDone(ma.Schema):
    consent = fields.Nested(ConsentRecord, required=True)
    already = fields.Boolean(metadata={"description": "The opt-in was already effective"})
    confirmation = fields.Nested(Confirmation, metadata={"description": "Double opt-in sent"})


class ConsentState(ma.Schema):
    channel = fields.String(required=True)
    topic = fields.String(required=True)
    state = fields.String(required=True)
    since = fields.String(allow_none=True, metadata=Instant)
    expires_at = fields.String(allow_none=True, metadata=Instant)
    record_id = fields.Integer(allow_none=True)


class ConsentChange(ConsentRecord):
    wording = fields.String(allow_none=True)
    wording_version = fields.String(allow_none=True)
    ip = fields.String(allow_none=True)
    evidence = fields.Dict(allow_none=True)


class SuppressionSeen(ma.Schema):
    channel = fields.String(required=True)
    address = fields.String(required=True)
    reason = fields.String(allow_none=True)
    source = fields.String(allow_none=True)
    at = fields.String(allow_none=True, metadata=Instant)


class Consents(ma.Schema):
    contact = fields.String(required=True)
    consents = fields.List(fields.Nested(ConsentState), required=True)
    history = fields.List(fields.Nested(ConsentChange), required=True)
    suppressions = fields.List(fields.Nested(SuppressionSeen), required=True)


class SuppressionIn(ma.Schema):
    channel = fields.String(required=True, metadata={"description": "A channel, or * for all"})
    address = fields.String(
        required=True, metadata={"description": "An email, a phone or contact:<id>"}
    )
    reason = fields.String(required=True)
    contact = fields.String(allow_none=True, metadata={"description": "An external id"})


class SuppressionDone(ma.Schema):
    suppression = fields.Nested(SuppressionSeen, required=True)
    created = fields.Boolean(required=True)


class EnrollIn(ma.Schema):
    contacts = fields.List(ExternalId, required=True, validate=validate.Length(max=1000))


class EnrollCounts(Open):
    """Contacts by outcome: entered, duplicate, deferred and each reason a contact was not
    entered (``audience``, ``already_enrolled``...)."""

    entered = fields.Integer(required=True)
    duplicate = fields.Integer(required=True)


class Health(Open):
    status = fields.String(
        required=True,
        validate=validate.OneOf(("ok", "degraded", "down")),
        metadata={"example": "ok"},
    )
    checks = fields.Dict(
        required=True,
        metadata={"description": "database, worker and providers, each with its state"},
    )
