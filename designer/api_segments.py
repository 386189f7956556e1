"""The segments part of the JSON API: the list with counts, one segment's definition and trend,
its members page by page, and a manual list's members added or removed.

Same key (``X-Api-Key``) and error shape as the rest of /api (see `designer.api`).
"""

from __future__ import annotations

from typing import Any, NoReturn

import marshmallow as ma
from marshmallow import fields, validate

from designer import ApiError, Parcours, parcours
from designer.api import MAX_BATCH, authenticate
from designer.rest import RestBlueprint, problems
from engine.audience.membership import count
from engine.audience.segment_import import Rejected, import_members
from engine.audience.segment_overview import details, sample, summaries, workspace_segments
from engine.errors import NotFound
from engine.spec.problems import did_you_mean
from engine.spec.segments import Segment, SegmentFolder
from engine.store.db import SQLITE_BEGIN

api_segments = RestBlueprint("api_segments", __name__, url_prefix="/api", tag="segments")
api_segments.before_request(authenticate)

PAGE, MAX_PAGE = 100, 1000


def _external_id(value: str) -> None:
    if not value.strip():
        raise ma.ValidationError("An external id is not blank.")


ExternalId = fields.String(validate=[validate.Length(1, 255), _external_id])


class SegmentSummary(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(allow_none=True)
    kind = fields.String(allow_none=True, metadata={"enum": ["condition", "manual"]})
    count = fields.Integer(required=True)
    change = fields.Integer(
        allow_none=True, metadata={"description": "Since the last recorded day; null: no day"}
    )
    file = fields.String()
    problems = fields.List(fields.String(), metadata={"description": "The file's errors"})


class SegmentList(ma.Schema):
    segments = fields.List(fields.Nested(SegmentSummary), required=True)


class TrendDay(ma.Schema):
    day = fields.String(required=True, metadata={"format": "date"})
    members = fields.Integer(required=True)


class LastChange(ma.Schema):
    at = fields.String(required=True, metadata={"format": "date-time"})
    reason = fields.String(allow_none=True)


class SegmentDetails(SegmentSummary):
    description = fields.String(allow_none=True)
    definition = fields.Dict(
        required=True,
        metadata={"description": "text (in words), yaml (as written) and the condition as JSON"},
    )
    manual_source = fields.String(allow_none=True)
    sample = fields.List(fields.String(), required=True)
    trend = fields.List(fields.Nested(TrendDay), required=True)
    last_change = fields.Nested(LastChange, allow_none=True)


class SegmentAnswer(ma.Schema):
    segment = fields.Nested(SegmentDetails, required=True)


class MembersQuery(ma.Schema):
    limit = fields.Integer(load_default=PAGE, validate=validate.Range(1, MAX_PAGE))
    after = fields.String(
        load_default=None, metadata={"description": "The `next` of the previous page"}
    )


class MembersPage(ma.Schema):
    segment = fields.String(required=True)
    members = fields.List(fields.String(), required=True)
    next = fields.String(allow_none=True, required=True)


class MemberChanges(ma.Schema):
    add = fields.List(ExternalId, load_default=list)
    remove = fields.List(ExternalId, load_default=list)


class MemberChangesDone(ma.Schema):
    segment = fields.String(required=True)
    added = fields.Integer(required=True)
    removed = fields.Integer(required=True)
    unknown = fields.List(fields.String(), required=True)
    members = fields.Integer(required=True)


def _invalid(message: str, field: str | None = None, code: str = "invalid") -> NoReturn:
    raise ApiError(422, code, message, field)


def _folder(state: Parcours) -> SegmentFolder:
    return workspace_segments(state.settings.scenarios_dir)


def _segment(folder: SegmentFolder, segment_id: str) -> Segment:
    """The loaded segment; 404 with "did you mean" if unknown, 409 if its file has errors."""
    if segment_id in folder.segments:
        return folder.segments[segment_id]
    ids = [f.stem for f in folder.files]
    if segment_id in ids:
        file = next(str(f) for f in folder.files if f.stem == segment_id)
        first = next(
            (p.format() for p in folder.problems if p.file == file and p.severity == "error"), ""
        )
        raise ApiError(
            409, "segment_invalid", f"Segment '{segment_id}' has errors; fix its file: {first}"
        )
    hint = did_you_mean(segment_id, ids)
    raise ApiError(404, "not_found", f"No segment '{segment_id}'." + (f" ({hint})" if hint else ""))


@api_segments.get("/segments")
@api_segments.response(200, SegmentList)
def list_segments() -> dict[str, Any]:
    """Every segment of the workspace with its kind, members now and change since the last
    recorded day; a file with errors is listed with its problems."""
    state = parcours()
    folder = _folder(state)
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        found = summaries(conn, folder, state.clock.now())
    return {"segments": [s.to_dict() for s in found]}


@api_segments.get("/segments/<segment_id>")
@api_segments.response(200, SegmentAnswer)
@problems(404, 409)
def get_segment(segment_id: str) -> dict[str, Any]:
    """One segment: count, definition (in words, as JSON and as written), sample, trend."""
    state = parcours()
    folder = _folder(state)
    _segment(folder, segment_id)
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        return {"segment": details(conn, folder, segment_id, state.clock.now())}


@api_segments.get("/segments/<segment_id>/members")
@api_segments.arguments(MembersQuery, location="query", as_kwargs=True)
@api_segments.response(200, MembersPage)
@problems(404, 409)
def get_members(segment_id: str, limit: int, after: str | None) -> dict[str, Any]:
    """A page of members' external ids in a stable order; pass `next` as `after` for the
    following page (null: the last page)."""
    state = parcours()
    _segment(_folder(state), segment_id)
    after = after or None
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        try:
            page = sample(conn, segment_id, limit, after)
        except NotFound:
            _invalid(f"No contact with external id '{after}' to start after.", "after")
    return {
        "segment": segment_id,
        "members": page,
        "next": page[-1] if len(page) == limit else None,
    }


@api_segments.post("/segments/<segment_id>/members")
@api_segments.arguments(MemberChanges)
@api_segments.response(200, MemberChangesDone)
@problems(404, 409)
def post_members(body: dict[str, Any], segment_id: str) -> dict[str, Any]:
    """Add and remove contacts (external ids) of a manual segment; unknown ids are listed in
    `unknown` and the others applied. A condition segment is refused (409)."""
    state = parcours()
    segment = _segment(_folder(state), segment_id)
    if not segment.is_manual:
        raise ApiError(
            409,
            "condition_segment",
            f"Segment '{segment_id}' is a condition segment: its members follow its condition "
            f"and cannot be added or removed; only manual segments take a list.",
        )
    add, remove = body["add"], body["remove"]
    if len(add) + len(remove) > MAX_BATCH:
        _invalid(f"At most {MAX_BATCH} external ids per request.", None, "too_many")
    both = sorted(set(add) & set(remove))
    if both:
        _invalid(f"'{both[0]}' is both added and removed.", "remove")
    unknown: list[str] = []

    def reject(r: Rejected) -> None:
        unknown.append(r.external_id)

    now = state.clock.now()
    with state.engine.begin() as conn:
        added = import_members(
            conn, segment, enumerate(add), "add", now, reason="api", on_reject=reject
        )
        removed = import_members(
            conn, segment, enumerate(remove), "remove", now, reason="api", on_reject=reject
        )
        members = count(conn, segment_id)
    if added.entered or removed.exited:
        state.notify()  # the worker acts on entries and exits
    return {
        "segment": segment_id,
        "added": added.entered,
        "removed": removed.exited,
        "unknown": list(dict.fromkeys(unknown)),
        "members": members,
    }
