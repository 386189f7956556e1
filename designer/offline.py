"""The offline channels' daily batches under /api/batches, for the mail house and the call centre.

Same rules as the JSON API: the header ``X-Api-Key``, errors as RFC 9457 problems (see
`designer.rest`). See channels/ONSITE_OFFLINE.md.
"""

from __future__ import annotations

from datetime import date
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import marshmallow as ma
from flask import Response
from marshmallow import fields, validate

from designer import ApiError, parcours
from designer.api import authenticate, json_body
from designer.api_schemas import Open
from designer.rest import RestBlueprint, body, problems
from engine.delivery.offline import ACK_STATUSES, BATCH_CHANNELS, acknowledge, batch, to_csv
from engine.store.db import SQLITE_BEGIN

api_delivery = RestBlueprint("api_delivery", __name__, url_prefix="/api/batches", tag="batches")
api_delivery.before_request(authenticate)

MAX_KEYS = 1000
MAX_KEY_LENGTH = 200  # sends.send_key
MAX_NOTE = 1000


class DayQuery(ma.Schema):
    day = fields.Date(
        data_key="date",
        metadata={"description": "The day, YYYY-MM-DD; default today in the workspace zone"},
    )


class Batch(ma.Schema):
    channel = fields.String(required=True)
    date = fields.String(required=True, metadata={"format": "date"})
    items = fields.List(fields.Dict(), required=True)


class AckIn(ma.Schema):
    send_keys = fields.List(
        fields.String(validate=validate.Length(1, MAX_KEY_LENGTH)),
        required=True,
        validate=validate.Length(1, MAX_KEYS),
    )
    status = fields.String(required=True, validate=validate.OneOf(ACK_STATUSES))
    note = fields.String(allow_none=True, validate=validate.Length(max=MAX_NOTE))


class Acknowledged(Open):
    """The counts of the keys updated, already acknowledged and unknown."""

    channel = fields.String(required=True)
    status = fields.String(required=True)


def _invalid(message: str, field: str | None = None, code: str = "invalid") -> NoReturn:
    raise ApiError(422, code, message, field)


def _channel(channel: str) -> str:
    if channel not in BATCH_CHANNELS:
        raise ApiError(
            404,
            "not_found",
            f"No batch for channel '{channel}'; batches exist for {', '.join(BATCH_CHANNELS)}.",
        )
    return channel


def _today() -> date:
    state = parcours()
    return state.clock.now().astimezone(ZoneInfo(state.settings.timezone)).date()


def _items(channel: str, day: date | None) -> tuple[date, list[dict[str, Any]]]:
    state = parcours()
    day = day or _today()
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        return day, batch(conn, _channel(channel), day, state.settings.timezone)


@api_delivery.get("/<channel>")
@api_delivery.arguments(DayQuery, location="query", as_kwargs=True)
@api_delivery.response(200, Batch)
@problems(404)
def items(channel: str, day: date | None = None) -> dict[str, Any]:
    """The day's items not yet acknowledged.

    ``?date=YYYY-MM-DD``, default today."""
    day, found = _items(channel, day)
    return {"channel": channel, "date": day.isoformat(), "items": found}


@api_delivery.get("/<channel>.csv")
@api_delivery.arguments(DayQuery, location="query", as_kwargs=True)
@api_delivery.doc(
    responses={200: {"description": "The items", "content": {"text/csv": {"schema": {}}}}},
)
@problems(404)
def items_csv(channel: str, day: date | None = None) -> Response:
    """The day's items as CSV.

    UTF-8 with a byte order mark, comma-separated."""
    day, found = _items(channel, day)
    body = "\ufeff" + to_csv(channel, found)
    response = Response(body.encode("utf-8"), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{channel}-{day.isoformat()}.csv"'
    )
    return response


@api_delivery.post("/<channel>/ack")
@body(AckIn)
@api_delivery.alt_response(200, schema=Acknowledged, description="What changed")
@problems(404)
def ack(channel: str) -> dict[str, Any]:
    """Acknowledge items as delivered or failed.

    ``{"send_keys": [...], "status": "delivered"|"failed", "note"?}``."""
    _channel(channel)
    body = json_body()
    if not isinstance(body, dict):
        _invalid('Send {"send_keys": [...], "status": "delivered"}.')
    keys = body.get("send_keys")
    if not isinstance(keys, list) or not keys:
        _invalid("'send_keys' is a non-empty list of send keys.", "send_keys")
    if len(keys) > MAX_KEYS:
        _invalid(f"At most {MAX_KEYS} send keys per request.", "send_keys", "too_many")
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            _invalid(f"A send key is text of 1 to {MAX_KEY_LENGTH} characters.", f"send_keys.{i}")
    status = body.get("status")
    if status not in ACK_STATUSES:
        _invalid(f"'status' is one of {', '.join(ACK_STATUSES)}.", "status")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
        _invalid(f"'note' is text of at most {MAX_NOTE} characters.", "note")
    state = parcours()
    now = state.clock.now()
    with state.engine.begin() as conn:
        done = acknowledge(conn, channel, keys, str(status), now, note or None)
    if done.updated:
        state.notify()  # a journey may wait for mail_delivered or call_failed
    return {"channel": channel, "status": status, **done.as_json()}
