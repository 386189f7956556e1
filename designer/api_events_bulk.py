"""Events in by the list, each row answered on its own: ``POST /api/events/bulk``.

Unlike ``POST /api/events`` (all or none), a bad row is reported and the others recorded.
Each event may carry an `idempotency_key`, which means what the single call's
``Idempotency-Key`` header means: it becomes the event's `event_key`, so posting the same list
again records nothing twice.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields

from designer import ApiError, parcours
from designer.api import IDEMPOTENCY_KEY, MAX_BATCH, MAX_IDEMPOTENCY_KEY, authenticate
from designer.api_scope import requires
from designer.rest import FieldError, RestBlueprint, problems
from engine.audience.contacts import RowInvalid
from engine.audience.event_bulk import record_event_rows
from engine.audience.ingest import clean_event

api_events_bulk = RestBlueprint("api_events_bulk", __name__, url_prefix="/api", tag="events")
api_events_bulk.before_request(authenticate)


class BulkEvents(ma.Schema):
    events = fields.List(
        fields.Raw(),
        required=True,
        metadata={
            "description": f"Up to {MAX_BATCH} events, each as POST /api/events takes one, "
            "plus an optional `idempotency_key`",
            "items": {"type": "object"},
        },
    )


class BulkEventRow(ma.Schema):
    index = fields.Integer(required=True)
    event_key = fields.String(allow_none=True, required=True)
    status = fields.String(required=True, metadata={"enum": ["recorded", "duplicate", "error"]})
    error = fields.Nested(FieldError, allow_none=True, required=True)


class BulkEventCounts(ma.Schema):
    recorded = fields.Integer(required=True)
    duplicate = fields.Integer(required=True)
    error = fields.Integer(required=True)


class BulkEventResult(ma.Schema):
    results = fields.List(fields.Nested(BulkEventRow), required=True)
    counts = fields.Nested(BulkEventCounts, required=True)


def _keyed(raw: Any) -> dict[str, Any]:
    """The event with its `idempotency_key` as its `event_key`; RowInvalid if they differ."""
    if not isinstance(raw, dict):
        raise RowInvalid("", "an event is a JSON object")
    key = raw.get("idempotency_key")
    if key is None:
        return raw
    if (
        not isinstance(key, str)
        or len(key) > MAX_IDEMPOTENCY_KEY
        or not IDEMPOTENCY_KEY.fullmatch(key)
    ):
        raise RowInvalid("idempotency_key", f"1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters")
    given = raw.get("event_key")
    if given not in (None, "") and str(given) != key:
        raise RowInvalid("event_key", "differs from idempotency_key")
    return {k: v for k, v in raw.items() if k != "idempotency_key"} | {"event_key": key}


@api_events_bulk.post("/events/bulk")
@api_events_bulk.arguments(BulkEvents)
@api_events_bulk.response(202, BulkEventResult)
@problems(413)
@requires("write")
def post_events_bulk(body: dict[str, Any]) -> dict[str, Any]:
    """Record up to 1,000 events in one transaction; 202 with one result per row, in order:
    `recorded`, `duplicate` (its key was stored before, or given earlier in the list) or
    `error` with the field that failed. A bad row does not stop the others. Unknown contacts
    are created; the worker is woken at once. More than 1,000: 413, nothing recorded."""
    state = parcours()
    given = body["events"]
    if len(given) > MAX_BATCH:
        raise ApiError(
            413,
            "too_many",
            f"At most {MAX_BATCH} events per request ({len(given)} sent).",
            "events",
        )
    now = state.clock.now()
    results: list[dict[str, Any]] = []
    good: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(given):
        result: dict[str, Any] = {
            "index": index,
            "event_key": None,
            "status": "error",
            "error": None,
        }
        results.append(result)
        try:
            event = clean_event(_keyed(raw), now)
        except RowInvalid as exc:
            field = f"events.{index}" + (f".{exc.field}" if exc.field else "")
            result["error"] = {"field": field, "message": exc.message}
            continue
        result["event_key"] = event["event_key"]
        good.append((index, event))
    with state.engine.begin() as conn:
        outcomes, recorded = record_event_rows(conn, [e for _, e in good], now)
    for (index, _), outcome in zip(good, outcomes, strict=True):
        results[index]["status"] = outcome
    if recorded:
        state.notify()
    counts = dict.fromkeys(("recorded", "duplicate", "error"), 0)
    for result in results:
        counts[result["status"]] += 1
    return {"results": results, "counts": counts}
