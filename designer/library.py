"""The template library: message templates listed, edited with a live preview, and saved.

A template is a folder of part files beside the scenarios (``templates/welcome/subject.txt``).
Checks and previews go through the engine's sandboxed compile and render, the code that sends;
saving refuses parts that would not compile, and files that changed on disk since they were loaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from jinja2 import TemplateError
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup
from marshmallow import ValidationError, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.registry import channel_info, channel_names
from designer import parcours
from designer.auth import audit, can, requires
from designer.editor import (
    GSM7,
    GSM7_EXTENDED,
    SAMPLE_CONTACT,
    _preview_contact,
    _Stop,
    json_error,
    json_response,
    sms_length,
)
from designer.forms import Form, Text, parse
from designer.i18n import gettext as _
from designer.i18n_formats import number
from designer.jsonbody import request_json
from designer.workspace import Workspace, write_atomically
from engine.spec.expressions import (
    HTML_ENV,
    TEXT_ENV,
    RenderError,
    check_source,
    compile_template,
    private_accesses,
)
from engine.spec.nodes import TEMPLATE_PARTS
from engine.spec.templates import (
    MAX_PART_BYTES,
    PART_EXTENSIONS,
    TemplateReadError,
    _issue_line,
    read_template_dir,
    template_files,
    valid_template_name,
)
from engine.store.models import Contact

library = Blueprint("library", __name__)
library.register_error_handler(_Stop, lambda exc: exc.response)

MAX_NAME = 100
Parts = Mapping[str, str]  # part name → source
Problem = dict[str, Any]  # part, line, code, message, hint, severity
_WRITING = threading.Lock()  # one save at a time: the conflict check and the writes go together


# ------------------------------------------------------------------ files


def _root() -> Path:
    return Workspace(parcours().settings.scenarios_dir).templates


def parts_hash(parts: Mapping[str, str]) -> str:
    """What the editor sends back on save, to detect files changed on disk meanwhile."""
    text = json.dumps(dict(parts), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _ordered(parts: Mapping[str, str]) -> dict[str, str]:
    rank = {p: i for i, p in enumerate(TEMPLATE_PARTS)}
    return {k: parts[k] for k in sorted(parts, key=lambda p: (rank.get(p, len(rank)), p))}


def _read(name: str) -> dict[str, str]:
    """A template's parts; 404 for a name that is not a template folder."""
    if len(name) > MAX_NAME or not valid_template_name(name) or not (_root() / name).is_dir():
        abort(404)
    try:
        return _ordered(read_template_dir(_root(), name))
    except (TemplateReadError, OSError) as exc:
        abort(422, _("This template cannot be read: %(problem)s", problem=str(exc)))


def _write(name: str, parts: Mapping[str, str]) -> None:
    """Write each part (an existing file keeps its name) and remove the parts left out."""
    folder = _root() / name
    files = template_files(_root(), name)
    for part, text in parts.items():
        path = files.get(part) or folder / f"{part}{'.html' if part == 'html' else '.txt'}"
        write_atomically(path, text)
    for part in set(files) - set(parts):
        for suffix in PART_EXTENSIONS:
            (folder / f"{part}{suffix}").unlink(missing_ok=True)


# ------------------------------------------------------------------ checks


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _private_names(source: str, html: bool) -> list[int]:
    """Lines reading an attribute or key starting with '_': the sandbox refuses to render them."""
    return [line for _, line in private_accesses((HTML_ENV if html else TEXT_ENV).parse(source))]


def check_part(part: str, source: str, data: Mapping[str, Any]) -> list[Problem]:
    """Problems of one part: size, syntax and filters, unknown names, private attributes.
    Unknown `data.x` keys are warnings: the journeys using the template declare them."""

    def problem(code: str, message: str, line: int | None, hint: str | None = None) -> Problem:
        severity = "warning" if code == "template.unknown_data" else "error"
        found = {"part": part, "line": line, "code": code, "message": message, "hint": hint}
        return {**found, "severity": severity}

    if len(source.encode("utf-8")) > MAX_PART_BYTES:
        limit = number(MAX_PART_BYTES)
        return [problem("template.limit", _("Over %(limit)s bytes.", limit=limit), None)]
    html = part == "html"
    try:
        issues = check_source(source, part, data, html=html)
    except TemplateError as exc:  # an unknown filter shows only when jinja2 compiles
        return [problem("template.syntax", _first_line(exc), getattr(exc, "lineno", None))]
    found = []
    for issue in issues:
        code = issue.code
        if code == "template.private_attribute":
            continue  # said below, in the marketer's language
        if code == "template.unknown_variable" and issue.message.startswith("'data."):
            code = "template.unknown_data"
        message = issue.message.removeprefix("template does not compile: ").splitlines()[0]
        found.append(problem(code, message, _issue_line(issue, source, html), issue.hint))
    if any(p["code"] == "template.syntax" for p in found):
        return found
    for line in _private_names(source, html):
        message = _("Names starting with '_' are not available in templates.")
        found.append(problem("template.unsafe", message, line))
    return found


def _parts_field(body: Mapping[str, Any], existing: Mapping[str, str]) -> dict[str, str]:
    parts = body.get("parts")
    if not isinstance(parts, dict) or not all(isinstance(v, str) for v in parts.values()):
        message = _("'parts' must map part names to text.")
        raise _Stop(json_error(400, "bad_request", message, "parts"))
    for part in parts:
        if part not in TEMPLATE_PARTS and part not in existing:
            message = _("Unknown part '%(part)s'.", part=part)
            raise _Stop(json_error(422, "template.unknown_part", message, "parts"))
    return _ordered(parts)


def _body() -> dict[str, Any]:
    body = request_json()
    if not isinstance(body, dict):
        raise _Stop(json_error(400, "bad_request", _("Send a JSON object.")))
    return body


def _refusal(parts: Parts, data: Mapping[str, Any]) -> tuple[list[Problem], Response | None]:
    """Every part's problems, and the 422 answer when one of them is an error."""
    problems = [p for part, text in parts.items() for p in check_part(part, text, data)]
    if not parts:
        message = _("A template needs at least one part.")
        return problems, json_error(422, "template.empty", message, "parts")
    if not any(p["severity"] == "error" for p in problems):
        return problems, None
    message = _("Not saved: fix the parts marked in red.")
    body = {"error": {"code": "template.invalid", "message": message, "field": "parts"}}
    return problems, json_response({**body, "problems": problems}, 422)


# ------------------------------------------------------------------ usage and preview


def usage() -> dict[str, list[dict[str, Any]]]:
    """Template name → the journeys whose send steps use it (id, name, channels, data)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for file in Workspace(parcours().settings.scenarios_dir).all():
        steps = file.data.get("steps")
        data = file.data.get("data") if isinstance(file.data.get("data"), dict) else {}
        for step in steps.values() if isinstance(steps, dict) else ():
            name = step.get("template") if isinstance(step, dict) else None
            if not isinstance(name, str):
                continue
            users = found.setdefault(name, [])
            entry = next((u for u in users if u["id"] == file.id), None)
            if entry is None:
                entry = {"id": file.id, "name": file.name, "channels": [], "data": data}
                users.append(entry)
            channel = step.get("channel")
            if isinstance(channel, str) and channel not in entry["channels"]:
                entry["channels"].append(channel)
    return found


def _merged_data(users: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: v for user in users for k, v in user["data"].items()}


def _render(
    name: str, parts: Parts, context: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Each part rendered on its own, so one broken part does not hide the others."""
    rendered: dict[str, str] = {}
    errors: dict[str, dict[str, Any]] = {}
    for part, source in parts.items():
        try:
            compiled = compile_template(name, {part: source})
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            errors[part] = {"line": line, "message": _first_line(exc), "code": "template.syntax"}
            continue
        try:
            rendered.update(compiled.render(context))
        except RenderError as exc:
            # over the render budget or not, the marketer gets the line and the reason
            message = _first_line(exc.__cause__ or exc)
            errors[part] = {"line": exc.line, "message": message, "code": exc.code}
    return rendered, errors


@library.post("/templates/<name>/preview")
@requires("viewer")
def preview(name: str) -> Response:
    """Parts rendered for a contact (or the sample contact), with the sending code's sandbox."""
    existing = _read(name)
    body = _body()
    parts = _parts_field(body, existing)
    contact = _preview_contact(body.get("contact"))
    users = usage().get(name, [])
    journey = next((u for u in users if u["id"] == body.get("scenario")), None)
    data = journey["data"] if journey else _merged_data(users)
    event = body.get("event") if isinstance(body.get("event"), dict) else {}
    context = {
        "contact": contact.template_view(),
        "event": event,
        "scenario": {"id": journey["id"], "name": journey["name"]}
        if journey
        else {"id": "", "name": ""},
        "data": data,
        "now": parcours().clock.now(),
        "links": {},
    }
    rendered, errors = _render(name, parts, context)
    problems = [p for part, text in parts.items() for p in check_part(part, text, data)]
    out: dict[str, Any] = {"parts": rendered, "errors": errors, "problems": problems}
    out["contact"] = {
        "external_id": contact.external_id,
        "sample": contact is SAMPLE_CONTACT,
        "email": contact.email,
        "phone": contact.phone,
    }
    if "text" in rendered:
        text = rendered["text"]
        outside = dict.fromkeys(c for c in text if c not in GSM7 and c not in GSM7_EXTENDED)
        out["sms"] = {**sms_length(text), "outside": list(outside)[:8]}
    return json_response(out)


# ------------------------------------------------------------------ pages


def _default_channel(parts: Mapping[str, str], users: list[dict[str, Any]]) -> str:
    for user in users:
        if user["channels"]:
            return str(user["channels"][0])
    if "subject" in parts or "html" in parts:
        return "email"
    return "push" if "title" in parts or "body" in parts else "sms"


def _channels() -> list[dict[str, Any]]:
    out = []
    for name in channel_names():
        info = channel_info(name)
        if name != "webhook":
            out.append({"name": name, "label": _(info.label), "parts": list(info.parts)})
    return out


def _recent_contacts(limit: int = 50) -> list[str]:
    with Session(parcours().engine) as db:
        query = select(Contact.external_id).order_by(Contact.updated_at.desc()).limit(limit)
        return list(db.scalars(query).all())


def _strings() -> dict[str, str]:
    """The editor script's words, translated here (the script has no catalog)."""
    return {
        "remove": _("Remove"),
        "removeConfirm": _("Remove the %(part)s part?", part="{part}"),
        "line": _("line %(line)s", line="{line}"),
        "saving": _("Saving…"),
        "saved": _("Saved."),
        "unsaved": _("Unsaved changes"),
        "conflict": _("The files changed on disk since you opened them: reload to see them."),
        "failed": _("The server did not answer; your text is still here."),
        "sample": _("sample contact"),
        "to": _("To"),
        "subject": _("Subject"),
        "noSubject": _("(no subject)"),
        "textTab": _("Text"),
        "htmlTitle": _("Email as the contact sees it"),
        "noPart": _("This template has no %(part)s part.", part="{part}"),
        "characters": _("%(n)s characters", n="{n}"),
        "segments": _("%(n)s SMS", n="{n}"),
        "perSegment": _("%(n)s per SMS", n="{n}"),
        "ucs2": _(
            "Not in GSM-7: %(chars)s. Each SMS holds 70 characters instead of 160.", chars="{chars}"
        ),
        "badEvent": _("The sample event must be a JSON object."),
        "leave": _("Leave without saving?"),
        "bytes": _("%(n)s B", n="{n}"),
        "kilobytes": _("%(n)s KB", n="{n}"),
        "renderedFor": _("Rendered for %(contact)s", contact="{contact}"),
        "brokenPart": _("Fix the %(part)s part to see it here.", part="{part}"),
        "label.subject": _("Subject"),
        "label.text": _("Text"),
        "label.html": _("HTML"),
        "label.title": _("Title"),
        "label.body": _("Body"),
        "label.url": _("Link"),
        "label.image": _("Image"),
        "help.subject": _("Email subject line"),
        "help.text": _("Plain text: the SMS, the email's text version, a letter"),
        "help.html": _("Email HTML body"),
        "help.title": _("Push or banner title"),
        "help.body": _("Push or banner text"),
        "help.url": _("Link opened on tap"),
        "help.image": _("Image address"),
    }


def _list_page(form: Mapping[str, str], errors: Mapping[str, str]) -> str:
    root = _root()
    used = usage()
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    rows = []
    for name in (n for n in names if valid_template_name(n)):
        files = template_files(root, name)
        changed = max((f.stat().st_mtime for f in files.values()), default=None)
        users = used.get(name, [])
        rows.append(
            {
                "name": name,
                "parts": list(_ordered(dict.fromkeys(files, ""))),
                "users": users,
                "channels": sorted({c for u in users for c in u["channels"]}),
                "changed": datetime.fromtimestamp(changed, UTC) if changed else None,
            }
        )
    missing = sorted(n for n in used if n not in names)
    return render_template("template_list.html", rows=rows, missing=missing,
                           channels=_channels(), form=form, errors=errors)  # fmt: skip


@library.get("/templates")
@requires("viewer")
def index() -> str:
    """Every template folder, its parts and the journeys that use it."""
    return _list_page(_new_form(), {})


@library.get("/templates/<name>")
@requires("viewer")
def edit(name: str) -> str:
    """The editor: one text box per part and a preview that follows the typing."""
    parts = _read(name)
    users = usage().get(name, [])
    data = {
        "name": name,
        "parts": parts,
        "hash": parts_hash(parts),
        "readonly": not can("marketer"),
        "allParts": list(TEMPLATE_PARTS),
        "channels": _channels(),
        "channel": _default_channel(parts, users),
        "scenarios": [{"id": u["id"], "name": u["name"]} for u in users],
        "dataKeys": sorted(_merged_data(users)),
        "maxBytes": MAX_PART_BYTES,
        "contacts": _recent_contacts(),
        "strings": _strings(),
        "urls": {
            "preview": url_for("library.preview", name=name),
            "save": url_for("library.save", name=name),
        },
    }
    bootstrap = Markup(htmlsafe_json_dumps(data, dumps=json.dumps, ensure_ascii=False))
    return render_template("template_edit.html", name=name, parts=parts, users=users,
                           bootstrap=bootstrap, max_bytes=MAX_PART_BYTES)  # fmt: skip


@library.put("/templates/<name>")
@requires("marketer")
def save(name: str) -> Response:
    """Write the parts if they compile and the files did not change since they were loaded."""
    existing = _read(name)
    body = _body()
    parts = _parts_field(body, existing)
    problems, refused = _refusal(parts, _merged_data(usage().get(name, [])))
    if refused is not None:
        return refused
    with _WRITING:
        if parts_hash(_read(name)) != body.get("hash"):
            message = _("The files changed on disk since you opened them: reload to see them.")
            return json_error(409, "conflict", message, "hash")
        _write(name, parts)
    with Session(parcours().engine) as db, db.begin():
        audit(db, "save", "template", name, parts=list(parts))
    saved = _read(name)
    return json_response({"hash": parts_hash(saved), "problems": problems, "message": _("Saved.")})


def _new_form() -> dict[str, str]:
    return {"name": "", "channel": "email"}


# What a new template's parts start with (the contact's first name is in almost every message).
STARTERS = {"text": "{{ contact.first_name }},\n", "html": "<p>{{ contact.first_name }},</p>\n"}


def _template_name(value: str) -> None:
    if not valid_template_name(value):
        raise ValidationError("template")


def _known_channel(value: str) -> None:
    if value not in channel_names():
        raise ValidationError("channel")


class NewTemplateForm(Form):
    """A new template: its folder's name and the channel it is written for."""

    name = Text(
        required=True,
        validate=[validate.Length(max=MAX_NAME, error="template"), _template_name],
        error_messages={"required": "template", "invalid": "template"},
    )
    channel = Text(load_default="email", validate=_known_channel)

    def words(self) -> dict[str, str]:
        return {
            "template": _("Letters, digits, '-' and '_' only; start with a letter or digit."),
            "channel": _("Choose a channel."),
        }


@library.post("/templates")
@requires("marketer")
def create() -> Any:
    """A new template folder, with the parts its channel takes (JSON: the parts given)."""
    body = request_json(optional=True) if request.is_json else None
    source = body if isinstance(body, dict) else request.form
    form = {k: str(source.get(k) or v).strip() for k, v in _new_form().items()}  # shown back
    # JSON gives the parts themselves; the form, the channel whose parts the template starts with.
    asked = NewTemplateForm(only=("name",)) if isinstance(body, dict) else NewTemplateForm()
    values, errors = parse(asked, source)
    root = _root()
    if "name" not in errors and (root / values["name"]).exists():
        errors["name"] = _("A template with this name already exists.")
    name = values.get("name", "")
    if isinstance(body, dict):
        parts = _parts_field(body, {})
    elif "channel" in values:
        wanted = channel_info(values["channel"]).parts
        parts = {p: STARTERS.get(p, "") for p in wanted if p in TEMPLATE_PARTS}
    else:
        parts = {}
    if not errors:
        _problems, refused = _refusal(parts, {})
        if refused is not None:
            return refused
        try:
            (root / name).mkdir(parents=True)
        except FileExistsError:
            errors["name"] = _("A template with this name already exists.")
    if errors:
        if isinstance(body, dict):
            field = next(iter(errors))
            return json_error(422, "invalid", errors[field], field)
        return _list_page(form, errors), 400
    _write(name, parts)
    with Session(parcours().engine) as db, db.begin():
        audit(db, "create", "template", name, parts=list(parts))
    target = url_for("library.edit", name=name)
    if isinstance(body, dict):
        return json_response({"name": name, "url": target, "hash": parts_hash(parts)}, 201)
    return redirect(target)
