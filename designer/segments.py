"""The Segments pages: every segment file with its member count and trend, and one segment edited
with the condition builder, its live count and sample, and a save that keeps the file's layout.

The files in `segments/` beside the scenarios are the source of truth, as for journeys: the page
sends the builder's document back as plain data that the round trip merges into the text (a
changed value is a one-line diff), every draft is linted as `parcours lint` would (the folder's
other segments included: unknown references, cycles) and counted with the query a rebuild runs.
Saving never overwrites a file changed on disk since it was loaded. Membership itself is the
worker's: after a save it rebuilds the segment; this page never does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from channels.registry import channel_info, channel_names
from designer import parcours
from designer.auth import audit, can, requires
from designer.condition_choices import condition_choices
from designer.editor import _body, _Stop, _text_field, json_error, json_response, seen_names
from designer.editor_words import strings
from designer.forms import Choice, Form, Identifier, Name, parse
from designer.i18n import gettext as _
from designer.segment_files import Draft, definition, files, folder, lint_draft, path_for, write
from designer.workspace import Conflict, text_hash
from engine.audience import membership
from engine.audience.preview import preview as count_condition
from engine.errors import NotFound, ScenarioInvalid
from engine.spec.conditions import ALL_OPERATORS, PROFILE_FIELDS
from engine.spec.jsonschema import condition_forms
from engine.spec.problems import Problem
from engine.spec.roundtrip import dump, load
from engine.spec.segments import lint_segment_folder, lint_segment_text
from engine.spec.yamlio import apply_text, read_source
from engine.store.db import SQLITE_BEGIN
from engine.store.models import Contact

segments = Blueprint("segments", __name__)

SAMPLE = 10  # external ids shown beside a count
TREND_DAYS = 30
NEW_CONDITION = "condition:\n  attribute: email\n  op: exists\n"  # everyone with an address


@segments.errorhandler(_Stop)
def _on_stop(exc: _Stop) -> Response:
    return exc.response


@contextmanager
def _reader() -> Iterator[Connection]:
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        yield conn


def _problem_dicts(draft: Draft) -> list[dict[str, object]]:
    return [p.to_dict() for p in draft.problems]


# ------------------------------------------------------------------ counts


def _external_ids(conn: Connection, contact_ids: list[int]) -> list[str]:
    if not contact_ids:
        return []
    rows = conn.execute(
        select(Contact.external_id).where(Contact.id.in_(contact_ids)).order_by(Contact.id)
    )
    return [str(x) for x in rows.scalars()]


def _sample(external_ids: list[str]) -> list[dict[str, str]]:
    return [{"id": x, "url": url_for("insights.contact", external_id=x)} for x in external_ids]


def stored(conn: Connection, segment_id: str, sample: int = SAMPLE) -> dict[str, Any]:
    """The stored membership: count now, `sample` members, the count by day and its change."""
    today = parcours().clock.now().astimezone(UTC).date()
    trend = membership.count_trend(conn, segment_id, since=today - timedelta(days=TREND_DAYS))
    count = trend[-1][1] if trend else membership.count(conn, segment_id)
    before = [n for day, n in trend if day < today]
    delta = count - before[-1] if before else None
    ids = membership.members(conn, segment_id, limit=sample) if sample else []
    first = _external_ids(conn, ids)
    days = [{"day": day.isoformat(), "count": n} for day, n in trend]
    return {"count": count, "delta": delta, "trend": days, "sample": _sample(first),
            "spark": sparkline(trend)}  # fmt: skip


def sparkline(trend: list[tuple[Any, int]], width: int = 96, height: int = 24) -> str:
    """The points of an SVG polyline of the counts (empty with fewer than two days)."""
    if len(trend) < 2:
        return ""
    counts = [n for _day, n in trend]
    low, high = min(counts), max(counts)
    step = width / (len(counts) - 1)
    span = (high - low) or 1
    points = (f"{i * step:.1f},{height - 2 - (n - low) * (height - 4) / span:.1f}"
              for i, n in enumerate(counts))  # fmt: skip
    return " ".join(points)


def live(conn: Connection, segment_id: str, draft: Draft) -> dict[str, Any]:
    """How many contacts the draft holds now, and who: counted for a rule, stored for a list."""
    if draft.segment is None:
        reason = _("Fix the problems to see how many contacts match.")
        return {"count": None, "sample": [], "reason": reason}
    if draft.segment.condition is None:
        found = stored(conn, segment_id)
        return {"count": found["count"], "sample": found["sample"], "reason": None}
    state = parcours()
    result = count_condition(
        conn,
        draft.segment.condition,
        state.clock.now(),
        pressure=state.policy().pressure,
        sample=SAMPLE,
    )
    if result.error is not None:
        reason = _("This condition cannot be counted in the database: %(why)s", why=result.error)
        return {"count": None, "sample": [], "reason": reason}
    return {"count": result.count, "sample": _sample(result.sample), "reason": None}


# ------------------------------------------------------------------ page data


def _builder_boot(conn: Connection, segment_id: str) -> dict[str, Any]:
    """Everything the builder reads on the segment page."""
    events, attributes = seen_names()
    return {
        **condition_choices(segment_id),
        "conditionScope": "segment",  # no "since the entry", no expressions offered
        "segmentId": segment_id,
        "conditionForms": condition_forms(),
        "operators": list(ALL_OPERATORS),
        "events": events,
        "attributes": sorted(set(PROFILE_FIELDS) | set(attributes)),
        "channels": [{"name": n, "label": channel_info(n).label} for n in channel_names()],
    }


def page_strings() -> dict[str, str]:
    """The words of the Segments page's script (the builder's included), in the current language."""
    return {
        **strings(),
        "condition": _("Who is in"),
        "match": _("{n} contacts match now"),
        "match_one": _("{n} contact matches now"),
        "members_count": _("{n} members"),
        "counting": _("Counting…"),
        "no_sample": _("Nobody matches now."),
        "no_members": _("No member yet: import a list."),
        "saved_rebuild": _("Saved. The worker updates the membership within a minute."),
        "saved_draft": _("Saved as a draft with errors: the worker keeps the last membership."),
    }


def _bootstrap(segment_id: str, text: str, draft: Draft) -> dict[str, Any]:
    with _reader() as conn:
        choices = _builder_boot(conn, segment_id)
        members = stored(conn, segment_id)
    return {
        **choices,
        "id": segment_id,
        "manual": isinstance(draft.data, Mapping)
        and draft.data.get("condition") is None
        and "manual" in draft.data,
        "yaml": text,
        "hash": text_hash(text) if text else "",
        "doc": draft.data if isinstance(draft.data, dict) else None,
        "problems": _problem_dicts(draft),
        "stored": members,
        "strings": page_strings(),
        "readonly": not can("marketer"),
        "urls": {
            name: url_for(f"segments.{name}", segment_id=segment_id) for name in ("preview", "save")
        },
    }


# ------------------------------------------------------------------ pages


@segments.get("/segments")
@requires("viewer")
def index() -> Any:
    """Every segment: name, id, kind, members now and their trend, problems in words."""
    linted = lint_segment_folder(folder())
    by_file: dict[str, list[Problem]] = {}
    for problem in linted.problems:
        by_file.setdefault(Path(problem.file or "").stem, []).append(problem)
    rows = []
    with _reader() as conn:
        for path, data in files():
            data = data if isinstance(data, Mapping) else {}
            name = data.get("name")
            rows.append({
                "id": path.stem,
                "name": name if isinstance(name, str) and name else path.stem,
                "description": data.get("description") or "",
                "manual": "manual" in data and data.get("condition") is None,
                "problems": by_file.get(path.stem, []),
                "stored": stored(conn, path.stem, sample=0),
            })  # fmt: skip
    rows.sort(key=lambda r: str(r["name"]).lower())
    return render_template("segments.html", rows=rows)


def _new_text(segment_id: str, name: str, manual: bool) -> str:
    body = "manual: {}\n" if manual else NEW_CONDITION
    doc = load(f"format_version: 1\nid: x\nname: x\ndescription: ''\n{body}")
    doc.update(id=segment_id, name=name)
    del doc["description"]
    return dump(doc)


class NewSegmentForm(Form):
    id = Identifier()
    name = Name()
    kind = Choice(("rule", "manual"), error="kind", load_default="rule")

    def words(self) -> dict[str, str]:
        return {"kind": _("Choose a rule or a manual list.")}


@segments.route("/segments/new", methods=["GET", "POST"])
@requires("marketer")
def new() -> Any:
    """Create a segment file (a rule to refine, or a manual list), then open it."""
    form = {"id": "", "name": "", "kind": "rule"}
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = {k: request.form.get(k, v).strip() for k, v in form.items()}  # shown back as typed
        values, errors = parse(NewSegmentForm(), request.form)
        if "id" not in errors and path_for(values["id"]).is_file():
            errors["id"] = _("A segment with this id already exists.")
        if not errors:
            form = values
            text = _new_text(form["id"], form["name"], form["kind"] == "manual")
            try:
                write(form["id"], text, None)
            except Conflict:
                errors["id"] = _("A segment with this id already exists.")
            else:
                with Session(parcours().engine) as db, db.begin():
                    audit(db, "create", "segment", form["id"], name=form["name"])
                return redirect(url_for("segments.edit", segment_id=form["id"]))
    return render_template("new_segment.html", form=form, errors=errors), (400 if errors else 200)


@segments.get("/segments/<segment_id>")
@requires("viewer")
def edit(segment_id: str) -> Any:
    """One segment: its definition in the builder, the live count and sample, the YAML."""
    try:
        path = path_for(segment_id)
        text = read_source(path, "segment file")
    except NotFound:
        abort(404, _("No segment with this id."))
    except ScenarioInvalid as exc:  # unreadable bytes: the problems show, nothing to edit
        text, draft = "", Draft("", list(exc.problems))
    else:
        draft = lint_draft(segment_id, text)
    data = _bootstrap(segment_id, text, draft)
    bootstrap = Markup(htmlsafe_json_dumps(data, dumps=json.dumps, ensure_ascii=False))
    doc = data["doc"] or {}
    return render_template(
        "segment.html", segment_id=segment_id, bootstrap=bootstrap, data=data,
        name=doc.get("name") if isinstance(doc.get("name"), str) else segment_id,
        manual=isinstance(doc, dict) and "manual" in doc and doc.get("condition") is None,
        source=(doc.get("manual") or {}).get("source") if isinstance(doc.get("manual"), dict)
        else None,
    )  # fmt: skip


# ------------------------------------------------------------------ JSON endpoints


def _existing(segment_id: str) -> Path:
    try:
        path = path_for(segment_id)
    except NotFound:
        path = None
    if path is None or not path.is_file():
        raise _Stop(json_error(404, "not_found", _("No segment with this id."), "id"))
    return path


@segments.post("/segments/<segment_id>/preview")
@requires("viewer")
def preview(segment_id: str) -> Response:
    """The page's draft (its text, with the builder's document merged in) → the text, its
    problems, and how many contacts it holds now with a sample."""
    _existing(segment_id)
    body = _body()
    text, doc = _text_field(body, "yaml"), body.get("doc")
    if doc is not None:
        if not isinstance(doc, dict):
            return json_error(400, "bad_request", _("'doc' must be an object."), "doc")
        try:
            text = apply_text(text, doc)
        except ScenarioInvalid as exc:
            problems = [p.to_dict() for p in exc.problems]
            return json_response({"yaml": text, "problems": problems, "valid": False}, 422)
    draft = lint_draft(segment_id, text)
    with _reader() as conn:
        counted = live(conn, segment_id, draft)
    return json_response(
        {"yaml": text, "doc": draft.data if isinstance(draft.data, dict) else None,
         "problems": _problem_dicts(draft), "valid": draft.errors == 0, **counted}
    )  # fmt: skip


@segments.post("/segments/<segment_id>/save")
@requires("marketer")
def save(segment_id: str) -> Response:
    """Write the file if it did not change on disk since it was loaded (409 otherwise)."""
    path = _existing(segment_id)
    body = _body()
    text, expected = _text_field(body, "yaml"), _text_field(body, "hash")
    draft = lint_draft(segment_id, text)
    unreadable = [p for p in draft.problems if p.code.startswith("yaml.")]
    if unreadable:
        # A draft may have errors, but never text that no longer reads as a segment file
        first = unreadable[0]
        message = _("Not saved: the YAML cannot be read (line %(line)s: %(problem)s).",
                    line=first.line or "?", problem=first.message)  # fmt: skip
        return json_error(422, first.code, message, "yaml")
    try:
        before = lint_segment_text(read_source(path, "segment file")).data
    except ScenarioInvalid:
        before = None
    try:
        write(segment_id, text, expected)
    except Conflict:
        message = _("The file changed on disk since you opened it: reload to see the new version.")
        return json_error(409, "conflict", message, "hash")
    changed = definition(before) != definition(draft.data)
    warnings = len(draft.problems) - draft.errors
    with Session(parcours().engine) as db, db.begin():
        audit(db, "save", "segment", segment_id, errors=draft.errors, warnings=warnings)
    if draft.errors:
        message = _("Saved as a draft with errors: the worker keeps the last membership.")
    elif changed:
        message = _("Saved. The worker updates the membership within a minute.")
    else:
        message = _("Saved.")
    return json_response(
        {"hash": text_hash(text), "problems": _problem_dicts(draft), "valid": draft.errors == 0,
         "rebuild": changed and not draft.errors, "message": message}
    )  # fmt: skip
