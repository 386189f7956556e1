"""The visual journey editor: a canvas over the scenario's YAML file, the source of truth.

The page gets the file's text and parsed document; canvas edits come back as plain data that
`roundtrip.merge` writes over the text (so a moved node or a changed duration is a one-line diff),
and YAML edits go through the same lint as `parcours lint`. Saving refuses to overwrite a file
that changed on disk since it was loaded. Previews render with the sandboxed code used to send.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from zoneinfo import available_timezones

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from jinja2 import TemplateError
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from marshmallow import validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.registry import channel_info, channel_names
from designer import parcours
from designer.auth import audit, can, requires
from designer.condition_choices import condition_choices
from designer.editor_entry import START_FORM, STARTS, AudienceError, StartForm, count_audience
from designer.editor_words import node_types as node_types  # re-exported for the live view
from designer.editor_words import strings as strings
from designer.forms import Choice, Form, Identifier, Integer, Name, parse
from designer.i18n import gettext as _
from designer.jsonbody import request_json
from designer.workspace import Conflict, Workspace
from engine.errors import NotFound, ScenarioInvalid
from engine.policy.model import PressureConfig
from engine.runtime.state import ContactView
from engine.spec import model
from engine.spec.conditions import ALL_OPERATORS, PROFILE_FIELDS
from engine.spec.expressions import RenderError, compile_template
from engine.spec.jsonschema import condition_forms, scenario_json_schema
from engine.spec.loader import LintResult
from engine.spec.roundtrip import dump, load
from engine.spec.segments import SEGMENTS_FOLDER, segment_ids
from engine.spec.templates import TemplateLibrary, fill_payload, payload_strings
from engine.spec.yamlio import apply_text
from engine.store.models import Contact, Event
from engine.worker.enroll import contact_views

editor = Blueprint("editor", __name__)

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")  # two units each (escape + character)
SAMPLE_CONTACT = ContactView(
    0,
    "sample-contact",
    email="camille@example.com",
    phone="+33600000000",
    timezone="Europe/Paris",
    locale="fr",
    score=42,
    tags=["sample"],
    attributes={"first_name": "Camille", "last_name": "Martin", "city": "Lyon"},
)


def sms_length(text: str) -> dict[str, Any]:
    """Encoding, length in units and segments of an SMS text (GSM-7 160/153, UCS-2 70/67)."""
    if all(c in GSM7 or c in GSM7_EXTENDED for c in text):
        encoding, units, single, multi = "GSM-7", 0, 160, 153
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
    else:
        encoding, single, multi = "UCS-2", 70, 67
        units = len(text.encode("utf-16-le")) // 2  # an emoji takes two units
    segments = 0 if units == 0 else 1 if units <= single else math.ceil(units / multi)
    per_segment = single if segments <= 1 else multi
    return {"encoding": encoding, "length": units, "segments": segments, "per_segment": per_segment}


# ------------------------------------------------------------------ helpers


def workspace() -> Workspace:
    return Workspace(parcours().settings.scenarios_dir)


def json_response(body: Any, status: int = 200) -> Response:
    # not jsonify: it sorts keys, and the order of steps is meaningful (the first one starts)
    return Response(json.dumps(body, ensure_ascii=False), status, mimetype="application/json")


def json_error(status: int, code: str, message: str, field: str | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message, "field": field}}, status)


def _existing(scenario_id: str) -> Workspace:
    """The workspace, after checking the scenario's file exists (404 otherwise)."""
    ws = workspace()
    if not ws.exists(scenario_id):
        raise _Stop(json_error(404, "not_found", _("No scenario with this id."), "id"))
    return ws


class _Stop(Exception):
    """Ends a JSON view early with a prepared response."""

    def __init__(self, response: Response) -> None:
        self.response = response


@editor.errorhandler(_Stop)
def _on_stop(exc: _Stop) -> Response:
    return exc.response


def _body() -> dict[str, Any]:
    body = request_json()
    if not isinstance(body, dict):
        raise _Stop(json_error(400, "bad_request", _("Send a JSON object.")))
    return body


def _text_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise _Stop(json_error(400, "bad_request", _("'%(name)s' must be text.", name=name), name))
    return value


def _problems(result: LintResult) -> list[dict[str, object]]:
    return [p.to_dict() for p in result.problems]


def _errors(result: LintResult) -> int:
    return sum(1 for p in result.problems if p.severity == "error")


def _doc(result: LintResult) -> dict[str, Any] | None:
    return result.data if isinstance(result.data, dict) else None


# ------------------------------------------------------------------ page data


RECENT_EVENTS = 50_000  # the event names offered are those of the latest events


def seen_names(limit: int = 500) -> tuple[list[str], list[str]]:
    """Event names and contact attribute keys seen in the database, for autocompletion."""
    with Session(parcours().engine) as db:
        # the names of the latest events only: a bounded read of a table of millions
        latest = select(Event.name).order_by(Event.id.desc()).limit(RECENT_EVENTS).subquery()
        events = db.scalars(
            select(latest.c.name).distinct().order_by(latest.c.name).limit(limit)
        ).all()
        samples = db.scalars(select(Contact.attributes).limit(200)).all()
    keys = {str(k) for attributes in samples if isinstance(attributes, dict) for k in attributes}
    return list(events), sorted(keys)[:limit]


def _segments(ws: Workspace) -> list[str]:
    """The workspace's segment ids (the files of `segments/` beside the scenarios)."""
    return segment_ids(ws.folder / SEGMENTS_FOLDER)


def _topics() -> dict[str, str]:
    """Consent topics the policy knows (id → label); none when the policy file is broken."""
    try:
        return dict(parcours().policy().topics)
    except ScenarioInvalid:
        return {}


def _pressure() -> PressureConfig | None:
    try:
        return parcours().policy().pressure
    except ScenarioInvalid:
        return None


def _bootstrap(scenario_id: str, text: str, result: LintResult, file_hash: str) -> dict[str, Any]:
    events, attributes = seen_names()
    channels = []
    for name in channel_names():
        info = channel_info(name)
        channels.append({"name": name, "label": info.label, "parts": list(info.parts)})
    schema = scenario_json_schema()
    ws = workspace()
    return {
        **condition_choices(),  # computed attributes, consent and pressure states for the builder
        "id": scenario_id,
        "yaml": text,
        "hash": file_hash,
        "doc": _doc(result),
        "problems": _problems(result),
        "nodeTypes": node_types(),
        "conditionForms": condition_forms(),
        "operators": list(ALL_OPERATORS),
        "triggerSchema": schema["$defs"]["trigger"],
        "channels": channels,
        "objectives": list(model.OBJECTIVES),
        "events": events,
        "attributes": sorted(set(PROFILE_FIELDS) | set(attributes)),
        "templates": TemplateLibrary(ws.templates).names(),
        "scenarios": ws.ids(),
        "segments": _segments(ws),
        "topics": _topics(),
        "timezones": sorted(available_timezones()),
        "timezone": parcours().settings.timezone,
        "strings": strings(),
        "readonly": not can("marketer"),
        "urls": {
            name: url_for(f"editor.{name}", scenario_id=scenario_id)
            for name in ("check", "render", "save", "preview", "download", "audience")
        },
    }


# ------------------------------------------------------------------ pages


class NewScenarioForm(Form):
    id = Identifier()
    name = Name()
    objective = Choice(model.OBJECTIVES, error="objective", load_default="other")
    priority = Integer(
        load_default=50,
        validate=validate.Range(min=0, max=100, error="priority"),
        error_messages={"invalid": "priority"},
    )

    def words(self) -> dict[str, str]:
        return {
            "objective": _("Choose an objective."),
            "priority": _("A priority is a whole number from 0 to 100."),
        }


@editor.route("/scenarios/new", methods=["GET", "POST"])
@requires("marketer")
def new() -> Any:
    """Create a scenario file with the trigger chosen and no steps yet, then open the canvas."""
    form = {"id": "", "name": "", "objective": "other", "priority": "50"}
    form.update(START_FORM, timezone=parcours().settings.timezone)
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = {k: request.form.get(k, v).strip() for k, v in form.items()}  # shown back as typed
        ws = workspace()
        values, errors = parse(NewScenarioForm(), request.form)
        if "id" not in errors and ws.exists(values["id"]):
            errors["id"] = _("A scenario with this id already exists.")
        start, start_errors = parse(StartForm(_segments(ws)), request.form)
        errors.update(start_errors)
        if not errors:
            doc = load(
                "format_version: 1\nid: x\nname: x\nobjective: other\npriority: 50\n"
                "triggers:\n  - manual: true\nsteps: {}\n"
            )
            doc.update(
                id=values["id"],
                name=values["name"],
                objective=values["objective"],
                priority=values["priority"],
                triggers=[start["trigger"]],
            )
            try:
                ws.write(values["id"], dump(doc), None)
            except Conflict:
                errors["id"] = _("A scenario with this id already exists.")
            else:
                with Session(parcours().engine) as db, db.begin():
                    audit(db, "create", "scenario", values["id"], name=values["name"])
                return redirect(url_for("editor.edit", scenario_id=values["id"]))
    events, _attributes = seen_names()
    return render_template(
        "new_scenario.html",
        form=form,
        errors=errors,
        objectives=model.OBJECTIVES,
        starts=STARTS,
        events=events,
        segments=_segments(workspace()),
        timezones=sorted(available_timezones()),
    ), (400 if errors else 200)


@editor.get("/scenarios/<scenario_id>/edit")
@requires("viewer")
def edit(scenario_id: str) -> Any:
    """The canvas, full screen (read only below the marketer role)."""
    try:
        file = workspace().load(scenario_id)
    except NotFound:
        abort(404)
    except ScenarioInvalid as exc:  # unreadable bytes: the problems show, the canvas is empty
        data = _bootstrap(scenario_id, "", LintResult(None, list(exc.problems)), "")
        name = scenario_id
    else:
        data = _bootstrap(scenario_id, file.text, file.result, file.hash)
        name = file.name
    bootstrap = Markup(htmlsafe_json_dumps(data, dumps=json.dumps, ensure_ascii=False))
    return render_template("editor.html", bootstrap=bootstrap, scenario_id=scenario_id, name=name)


@editor.get("/scenarios/<scenario_id>/yaml")
@requires("viewer")
def download(scenario_id: str) -> Any:
    """The file as it is on disk."""
    try:
        file = workspace().load(scenario_id)
    except (NotFound, ScenarioInvalid):
        abort(404)
    response = Response(file.text, mimetype="application/yaml")
    response.headers["Content-Disposition"] = f'attachment; filename="{scenario_id}.yaml"'
    return response


# ------------------------------------------------------------------ JSON endpoints


@editor.post("/scenarios/<scenario_id>/check")
@requires("viewer")
def check(scenario_id: str) -> Response:
    """YAML text → parsed document and problems (the YAML tab's edits, for the canvas)."""
    ws = _existing(scenario_id)
    result = ws.lint(_text_field(_body(), "yaml"), ws.path_for(scenario_id))
    return json_response(
        {"doc": _doc(result), "problems": _problems(result), "valid": _errors(result) == 0}
    )


@editor.post("/scenarios/<scenario_id>/render")
@requires("viewer")
def render(scenario_id: str) -> Response:
    """Canvas document → YAML text (merged into the base text: minimal diff) and problems."""
    ws = _existing(scenario_id)
    body = _body()
    base, doc = _text_field(body, "yaml"), body.get("doc")
    if not isinstance(doc, dict):
        return json_error(400, "bad_request", _("'doc' must be an object."), "doc")
    try:
        text = apply_text(base, doc)
    except ScenarioInvalid as exc:
        problems = [p.to_dict() for p in exc.problems]
        return json_response({"yaml": base, "problems": problems, "valid": False}, 422)
    result = ws.lint(text, ws.path_for(scenario_id))
    return json_response(
        {"yaml": text, "problems": _problems(result), "valid": _errors(result) == 0}
    )


@editor.post("/scenarios/<scenario_id>/save")
@requires("marketer")
def save(scenario_id: str) -> Response:
    """Write the file if it did not change on disk since it was loaded (409 otherwise)."""
    ws = _existing(scenario_id)
    body = _body()
    text, expected = _text_field(body, "yaml"), _text_field(body, "hash")
    result = ws.lint(text, ws.path_for(scenario_id))
    unreadable = [p for p in result.problems if p.code.startswith("yaml.")]
    if unreadable:
        # A draft may have errors, but never text that no longer reads as a scenario file:
        # the file on disk (maybe a committed, working version) is kept as it is.
        first = unreadable[0]
        message = _("Not saved: the YAML cannot be read (line %(line)s: %(problem)s).",
                    line=first.line or "?", problem=first.message)  # fmt: skip
        return json_error(422, first.code, message, "yaml")
    try:
        ws.write(scenario_id, text, expected)
    except Conflict:
        message = _("The file changed on disk since you opened it: reload to see the new version.")
        return json_error(409, "conflict", message, "hash")
    errors = _errors(result)
    warnings = len(result.problems) - errors
    with Session(parcours().engine) as db, db.begin():
        audit(db, "save", "scenario", scenario_id, errors=errors, warnings=warnings)
    reload = ws.load(scenario_id)
    return json_response(
        {
            "hash": reload.hash,
            "problems": _problems(result),
            "publishable": errors == 0,
            "message": _("Saved.")
            if errors == 0
            else _("Saved as a draft: publishing is blocked until the errors are fixed."),
        }
    )


@editor.post("/scenarios/<scenario_id>/audience")
@requires("viewer")
def audience(scenario_id: str) -> Response:
    """The audience being edited → how many contacts it accepts now and a few of them."""
    ws = _existing(scenario_id)
    raw = _body().get("audience")
    state = parcours()
    with state.engine.connect() as conn:
        found = count_audience(conn, raw, _segments(ws), state.clock.now(), _pressure())
    if isinstance(found, AudienceError):
        return json_error(422, found.code, found.message, found.field)
    return json_response(found)


def _preview_contact(external_id: Any) -> ContactView:
    if not external_id:
        return SAMPLE_CONTACT
    with Session(parcours().engine) as db:
        found = db.scalar(select(Contact.id).where(Contact.external_id == str(external_id)))
        views = contact_views(db.connection(), [found]) if found is not None else {}
    if found is None:
        raise _Stop(json_error(404, "not_found", _("No contact with this external id."), "contact"))
    return views[found]


def _step_parts(ws: Workspace, step: Mapping[str, Any], content: Any) -> dict[str, str]:
    if isinstance(content, dict) and content:
        return {str(k): str(v) for k, v in content.items()}
    if step.get("type") == "webhook":
        return {pointer: text for pointer, _path, text in payload_strings(step.get("payload"))}
    name = step.get("template")
    if isinstance(name, str) and name:
        parts = TemplateLibrary(ws.templates).read(name)
        if parts is None:
            raise _Stop(
                json_error(
                    422,
                    "template.missing",
                    _("No template named '%(name)s'.", name=name),
                    "template",
                )
            )
        return parts
    inline = step.get("content")
    return {str(k): str(v) for k, v in inline.items()} if isinstance(inline, dict) else {}


@editor.post("/scenarios/<scenario_id>/preview")
@requires("viewer")
def preview(scenario_id: str) -> Response:
    """A send (or webhook) step rendered for a contact, with the sending code's sandbox."""
    ws = _existing(scenario_id)
    body = _body()
    text = body.get("yaml")
    result = ws.lint(text if isinstance(text, str) else ws.load(scenario_id).text)
    doc = _doc(result) or {}
    steps = doc.get("steps")
    wanted = body.get("step")
    step = steps.get(wanted) if isinstance(steps, dict) and isinstance(wanted, str) else None
    if not isinstance(step, dict) or step.get("type") not in ("send", "webhook"):
        return json_error(404, "not_found", _("No send or webhook step with this id."), "step")
    contact = _preview_contact(body.get("contact"))
    parts = _step_parts(ws, step, body.get("content"))
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    context = {
        "contact": contact.template_view(),
        "event": {},
        "scenario": {"id": scenario_id, "name": doc.get("name", scenario_id)},
        "data": data,
        "now": parcours().clock.now(),
        "links": {},
    }
    out: dict[str, Any] = {"step": body["step"], "channel": step.get("channel", "webhook")}
    out["contact"] = {"external_id": contact.external_id, "sample": contact is SAMPLE_CONTACT}
    try:
        rendered = compile_template(str(body["step"]), parts).render(context)
    except (TemplateError, RenderError) as exc:
        out.update(parts={}, errors=[str(exc)])
        return json_response(out)
    if step.get("type") == "webhook":
        out["payload"] = fill_payload(step.get("payload"), rendered)
    out.update(parts=rendered, errors=[])
    if step.get("channel") == "sms":
        out["sms"] = sms_length(rendered.get("text", ""))
    return json_response(out)
