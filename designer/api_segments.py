"""The segments part of the JSON API: the list with counts, one segment's definition and trend,
its members page by page, and a manual list's members added or removed.

Same key (``X-Api-Key``) and error shape as the rest of /api (see `designer.api`).
"""

from __future__ import annotations

from typing import Any, NoReturn

from flask import Blueprint, request

from designer import ApiError, Parcours, parcours
from designer.api import MAX_BATCH, authenticate, json_body
from engine.audience.membership import count
from engine.audience.segment_import import Rejected, import_members
from engine.audience.segment_overview import details, sample, summaries, workspace_segments
from engine.errors import NotFound
from engine.spec.problems import did_you_mean
from engine.spec.segments import Segment, SegmentFolder
from engine.store.db import SQLITE_BEGIN

api_segments = Blueprint("api_segments", __name__, url_prefix="/api")
api_segments.before_request(authenticate)

PAGE, MAX_PAGE = 100, 1000


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
def get_segment(segment_id: str) -> dict[str, Any]:
    """One segment: count, definition (in words, as JSON and as written), sample, trend."""
    state = parcours()
    folder = _folder(state)
    _segment(folder, segment_id)
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        return {"segment": details(conn, folder, segment_id, state.clock.now())}


def _limit() -> int:
    raw = request.args.get("limit", str(PAGE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        _invalid(f"limit is a whole number from 1 to {MAX_PAGE}.", "limit")
    return int(raw)


@api_segments.get("/segments/<segment_id>/members")
def get_members(segment_id: str) -> dict[str, Any]:
    """A page of members' external ids in a stable order; pass `next` as `after` for the
    following page (null: the last page)."""
    state = parcours()
    _segment(_folder(state), segment_id)
    limit = _limit()
    after = request.args.get("after") or None
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


def _external_ids(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list):
        _invalid(f"'{name}' is a list of external ids.", name)
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or len(item) > 255:
            message = "An external id is a non-empty string of at most 255 characters."
            _invalid(message, f"{name}.{i}")
    return value


@api_segments.post("/segments/<segment_id>/members")
def post_members(segment_id: str) -> dict[str, Any]:
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
    body = json_body()
    if not isinstance(body, dict) or not set(body) <= {"add", "remove"}:
        _invalid('Send {"add": [external ids], "remove": [external ids]}.')
    add, remove = _external_ids(body, "add"), _external_ids(body, "remove")
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
