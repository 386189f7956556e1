"""The outbox resource of the API: the sends of the ledger page by page, what
`parcours outbox` shows (the rendered parts of each message, its status and why it was not
sent), filtered by scenario, channel, status and time."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from designer import parcours
from designer.api import authenticate
from designer.api_cursor import NEXT, PageQuery, after, next_cursor
from designer.rest import RestBlueprint
from engine.delivery.outbox import SendFilter, send_item, send_page
from engine.store.db import SQLITE_BEGIN
from engine.store.models import SEND_KINDS, SEND_STATUSES

api_outbox = RestBlueprint("api_outbox", __name__, url_prefix="/api", tag="outbox")
api_outbox.before_request(authenticate)


class OutboxQuery(PageQuery):
    scenario = fields.String(validate=validate.Length(1, 128))
    channel = fields.String(validate=validate.Length(1, 32))
    status = fields.String(validate=validate.OneOf(SEND_STATUSES))
    since = fields.AwareDateTime(
        default_timezone=UTC,
        metadata={"description": "Queued at or after this instant (ISO 8601; naive: UTC)"},
    )


class SendEntry(ma.Schema):
    at = fields.String(required=True, metadata={"format": "date-time"})
    contact = fields.String(required=True, metadata={"description": "External id"})
    scenario = fields.String(required=True)
    step = fields.String(required=True)
    channel = fields.String(required=True)
    topic = fields.String(allow_none=True, required=True)
    kind = fields.String(required=True, metadata={"enum": list(SEND_KINDS)})
    status = fields.String(required=True, metadata={"enum": list(SEND_STATUSES)})
    error = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "A provider's refusal, or the rule that cancelled the send"},
    )
    send_key = fields.String(required=True)
    sent_at = fields.String(allow_none=True, required=True, metadata={"format": "date-time"})
    attempts = fields.Integer(required=True)
    parts = fields.Dict(
        keys=fields.String(),
        values=fields.Raw(),
        required=True,
        metadata={"description": "The rendered message (subject, text, html...)"},
    )


class OutboxPage(ma.Schema):
    sends = fields.List(fields.Nested(SendEntry), required=True)
    next = NEXT


@api_outbox.get("/outbox")
@api_outbox.arguments(OutboxQuery, location="query", as_kwargs=True)
@api_outbox.response(200, OutboxPage)
def list_outbox(limit: int, cursor: str | None, **filters: Any) -> dict[str, Any]:
    """The sends, oldest first, a page at a time (pass `next` as `cursor`), with the rendered
    parts, status and error `parcours outbox` shows; `since` picks up the newer ones later."""
    start = after("outbox", cursor)
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        rows = send_page(conn, SendFilter(**filters), start, limit + 1)
    return {
        "sends": [send_item(r) for r in rows[:limit]],
        "next": next_cursor("outbox", rows, limit),
    }
