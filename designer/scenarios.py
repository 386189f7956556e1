"""Scenario list, live view, publish / pause / resume, versions with their diff, and the audit log.

A scenario is a file of the workspace (the draft, what developers commit) and, once published,
a record with immutable versions (what runs). The list joins both: a file that differs from its
current version has unpublished changes.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import distinct, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from designer import parcours
from designer.auth import audit, requires
from designer.forms import Choice, Form, Text
from designer.forms import query as query_values
from designer.i18n import gettext as _
from designer.workspace import ScenarioFile, Workspace
from engine.errors import NotFound, ScenarioInvalid
from engine.spec.loader import content_hash
from engine.store.db import SQLITE_BEGIN
from engine.store.models import (
    AuditEntry,
    Enrollment,
    JournalEntry,
    ScenarioRecord,
    ScenarioVersion,
)
from engine.worker.versions import publish_bundle, set_status

scenarios = Blueprint("scenarios", __name__)

STATUSES = ("live", "paused", "draft")


def workspace() -> Workspace:
    return Workspace(parcours().settings.scenarios_dir)


def _reader() -> Connection:
    conn = parcours().engine.connect()
    conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # reads take no write lock
    return conn


@dataclass
class Row:
    """One line of the scenario list."""

    id: str
    name: str
    status: str = "draft"
    objective: str | None = None
    priority: int | None = None
    problems: int = 0
    has_file: bool = False
    changed: bool = False  # the file differs from the current version
    version: int | None = None
    published_at: datetime | None = None
    published_by: str | None = None
    active: int = 0
    converted_week: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _file_hash(file: ScenarioFile) -> str | None:
    """The hash the file would publish under (kept with the file's lint while it is unchanged)."""
    if "hash" not in file.memo:
        try:
            file.memo["hash"] = content_hash(workspace().bundle(file.id))
        except ScenarioInvalid:
            file.memo["hash"] = None
    found: str | None = file.memo["hash"]
    return found


def scenario_rows() -> list[Row]:
    """Every scenario of the workspace and of the database, with its live counts."""
    now = parcours().clock.now()
    rows: dict[str, Row] = {}
    for file in workspace().all():
        data = file.data
        rows[file.id] = Row(
            id=file.id,
            name=file.name,
            objective=data.get("objective") if isinstance(data.get("objective"), str) else None,
            priority=data.get("priority") if isinstance(data.get("priority"), int) else None,
            problems=file.errors,
            has_file=True,
            extra={"hash": _file_hash(file)},
        )
    with _reader() as conn:
        records = conn.execute(
            select(
                ScenarioRecord.id,
                ScenarioRecord.name,
                ScenarioRecord.status,
                ScenarioVersion.number,
                ScenarioVersion.published_at,
                ScenarioVersion.published_by,
                ScenarioVersion.content_hash,
            ).join(
                ScenarioVersion,
                ScenarioVersion.id == ScenarioRecord.current_version_id,
                isouter=True,
            )
        ).all()
        active = dict(
            conn.execute(
                select(Enrollment.scenario_id, func.count())
                .where(Enrollment.status == "active")
                .group_by(Enrollment.scenario_id)
            ).all()
        )
        converted = dict(
            conn.execute(
                select(Enrollment.scenario_id, func.count())
                .where(
                    Enrollment.status == "converted", Enrollment.ended_at >= now - timedelta(days=7)
                )
                .group_by(Enrollment.scenario_id)
            ).all()
        )
    for rec in records:
        row = rows.setdefault(rec.id, Row(id=rec.id, name=rec.name))
        row.status = rec.status if rec.number is not None else "draft"
        row.version = rec.number
        row.published_at = rec.published_at
        row.published_by = rec.published_by
        row.changed = row.has_file and row.extra.get("hash") != rec.content_hash
        row.active = int(active.get(rec.id, 0))
        row.converted_week = int(converted.get(rec.id, 0))
    return sorted(rows.values(), key=lambda r: (STATUSES.index(r.status), r.name.lower()))


class ScenarioFilter(Form):
    q = Text(200, load_default="")
    status = Choice(STATUSES, load_default="")


class PublishForm(Form):
    status = Choice(("live", "paused"), load_default="live")  # a new version starts paused or not


class AuditFilter(Form):
    target = Text(200, load_default="")  # one journey's, segment's or user's entries


@scenarios.get("/scenarios")
@requires("viewer")
def index() -> Any:
    """The journeys: status, objective, priority, last publish, live counts; search and filter."""
    asked = query_values(ScenarioFilter(), request.args)
    q, status = asked["q"].lower(), asked["status"]
    rows = scenario_rows()
    totals = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    shown = [
        r
        for r in rows
        if (not q or q in r.id.lower() or q in r.name.lower())
        and (not status or r.status == status)
    ]
    return render_template(
        "scenarios.html", rows=shown, totals=totals, q=q, status=status, statuses=STATUSES,
        active=sum(r.active for r in rows), converted=sum(r.converted_week for r in rows),
    )  # fmt: skip


def step_counts(conn: Connection, scenario_id: str) -> dict[str, dict[str, int]]:
    """Per step: contacts that entered it, are waiting there now, converted or exited there,
    and sends by decision (allowed, or each policy reason)."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    entered = conn.execute(
        select(JournalEntry.step_id, func.count(distinct(JournalEntry.enrollment_id)))
        .where(
            JournalEntry.scenario_id == scenario_id,
            JournalEntry.kind.in_(("step", "send", "decision")),
            JournalEntry.step_id.is_not(None),
        )
        .group_by(JournalEntry.step_id)
    )
    for step, n in entered:
        counts[step]["entered"] = int(n)
    by_status = conn.execute(
        select(Enrollment.step_id, Enrollment.status, func.count())
        .where(Enrollment.scenario_id == scenario_id, Enrollment.step_id.is_not(None))
        .group_by(Enrollment.step_id, Enrollment.status)
    )
    names = {"active": "waiting", "converted": "converted", "exited": "exited", "failed": "failed"}
    for step, status, n in by_status:
        if status in names:
            counts[step][names[status]] = int(n)
    decisions = conn.execute(
        select(JournalEntry.step_id, JournalEntry.kind, JournalEntry.reason, func.count())
        .where(
            JournalEntry.scenario_id == scenario_id,
            JournalEntry.kind.in_(("send", "decision", "cancelled")),
        )
        .group_by(JournalEntry.step_id, JournalEntry.kind, JournalEntry.reason)
    )
    for step, kind, reason, n in decisions:
        # a send the delivery loop cancelled (the contact withdrew before it left) stays counted
        # as sent by the journey, and shows beside it with the rule that cancelled it
        if kind == "send":
            label = "sent"
        elif kind == "cancelled":
            label = f"cancelled:{reason}"
        else:
            label = reason or "blocked"
        counts[step][label] = counts[step].get(label, 0) + int(n)
    return dict(counts)


def _record(conn: Connection, scenario_id: str) -> Any:
    """(record, current version or None), or None when never published."""
    with Session(bind=conn) as db:
        return db.execute(
            select(ScenarioRecord, ScenarioVersion)
            .join(
                ScenarioVersion,
                ScenarioVersion.id == ScenarioRecord.current_version_id,
                isouter=True,
            )
            .where(ScenarioRecord.id == scenario_id)
        ).first()


def _load_file(scenario_id: str) -> ScenarioFile | None:
    try:
        return workspace().load(scenario_id)
    except NotFound:
        return None
    except ScenarioInvalid:
        return None


@scenarios.get("/scenarios/<scenario_id>")
@requires("viewer")
def detail(scenario_id: str) -> Any:
    """Live view: status, actions, the canvas with per-step counts, totals."""
    file = _load_file(scenario_id)
    with _reader() as conn:
        found = _record(conn, scenario_id)
        counts = step_counts(conn, scenario_id) if found else {}
        totals = dict(
            conn.execute(
                select(Enrollment.status, func.count())
                .where(Enrollment.scenario_id == scenario_id)
                .group_by(Enrollment.status)
            ).all()
        )
    if file is None and found is None:
        abort(404, _("No journey with this id."))
    record, version = (found[0], found[1]) if found else (None, None)
    doc: Any = file.data if file else {}
    if version is not None and (file is None or not doc):
        from engine.spec.yamlio import parse_yaml

        doc, _positions = parse_yaml(version.bundle["yaml"], None)
    row = next((r for r in scenario_rows() if r.id == scenario_id), None)
    return render_template(
        "scenario.html",
        scenario_id=scenario_id,
        row=row,
        record=record,
        version=version,
        file=file,
        doc=doc,
        counts=counts,
        totals={k: int(v) for k, v in totals.items()},
        canvas=_canvas_bootstrap(doc, counts),
    )


def _canvas_bootstrap(doc: Any, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    from designer.editor import node_types, strings

    return {
        "doc": doc,
        "counts": counts,
        "nodeTypes": node_types(),
        "strings": strings(),
        "readonly": True,
    }


def _impact(conn: Connection, scenario_id: str, new_steps: set[str]) -> list[dict[str, Any]]:
    """Per step of the running versions: contacts there now and what publishing does to them."""
    rows = conn.execute(
        select(ScenarioVersion.number, Enrollment.step_id, func.count())
        .join(ScenarioVersion, ScenarioVersion.id == Enrollment.version_id)
        .where(Enrollment.scenario_id == scenario_id, Enrollment.status == "active")
        .group_by(ScenarioVersion.number, Enrollment.step_id)
        .order_by(ScenarioVersion.number, Enrollment.step_id)
    ).all()
    impact = []
    for v, step, n in rows:
        if step in new_steps:
            what = _("stay on version %(n)d to the end; new entries use the new version", n=v)
        else:
            what = _("stay on version %(n)d to the end (their step is gone in the new one)", n=v)
        impact.append({"version": v, "step": step, "contacts": int(n), "what": what})
    return impact


def _diff(old: str, new: str, old_label: str, new_label: str) -> list[tuple[str, str]]:
    """Unified diff lines, each with its kind (add, del, hunk, ctx)."""
    out = []
    for line in difflib.unified_diff(
        old.splitlines(), new.splitlines(), old_label, new_label, lineterm="", n=2
    ):
        if line.startswith(("+++", "---")):
            kind = "hunk"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


def _bundle_text(bundle: dict[str, Any]) -> str:
    """A version's YAML, then its templates, as one text to compare."""
    text = str(bundle.get("yaml", ""))
    for name, parts in sorted((bundle.get("templates") or {}).items()):
        for part, source in sorted(parts.items()):
            text += f"\n# ---- template {name}/{part}\n{source}"
    return text


@scenarios.route("/scenarios/<scenario_id>/publish", methods=["GET", "POST"])
@requires("marketer")
def publish(scenario_id: str) -> Any:
    """Show what changes (diff, contacts inside per step) before publishing; publish on POST."""
    file = _load_file(scenario_id)
    if file is None:
        abort(404, _("No journey file with this id."))
    if file.errors:
        flash(_("Fix the problems before publishing."), "error")
        return redirect(url_for("editor.edit", scenario_id=scenario_id))
    bundle = workspace().bundle(scenario_id)
    if request.method == "POST":
        status = query_values(PublishForm(), request.form)["status"]
        with Session(parcours().engine) as db, db.begin():
            result = publish_bundle(db, bundle, str(file.path), by=g.user.username, status=status)
            if result.created:
                audit(db, "publish", "scenario", scenario_id, version=result.version_number)
        if result.created:
            flash(_("Version %(n)d published.", n=result.version_number), "ok")
        else:
            flash(_("Nothing to publish: the file is the current version."), "ok")
        return redirect(url_for("scenarios.detail", scenario_id=scenario_id))
    with _reader() as conn:
        found = _record(conn, scenario_id)
        steps = set(file.data.get("steps") or {})
        impact = _impact(conn, scenario_id, steps) if found else []
    version = found[1] if found else None
    old = _bundle_text(version.bundle) if version is not None else ""
    diff = _diff(
        old, _bundle_text(bundle),
        f"version {version.number}" if version is not None else "(nothing published)",
        _("file on disk"),
    )  # fmt: skip
    unchanged = version is not None and version.content_hash == content_hash(bundle)
    return render_template(
        "publish.html", scenario_id=scenario_id, file=file, version=version, diff=diff,
        impact=impact, unchanged=unchanged,
    )  # fmt: skip


def _set_status(scenario_id: str, status: str, action: str) -> Any:
    try:
        with Session(parcours().engine) as db, db.begin():
            set_status(db, scenario_id, status)
            audit(db, action, "scenario", scenario_id)
    except NotFound:
        abort(404, _("This journey was never published."))
    flash(_("Journey paused: no new entries; contacts inside wait.") if status == "paused"
          else _("Journey resumed."), "ok")  # fmt: skip
    parcours().notify()
    return redirect(url_for("scenarios.detail", scenario_id=scenario_id))


@scenarios.post("/scenarios/<scenario_id>/pause")
@requires("marketer")
def pause(scenario_id: str) -> Any:
    """Stop new entries; running contacts stay where they are."""
    return _set_status(scenario_id, "paused", "pause")


@scenarios.post("/scenarios/<scenario_id>/resume")
@requires("marketer")
def resume(scenario_id: str) -> Any:
    """Take new entries again."""
    return _set_status(scenario_id, "live", "resume")


@scenarios.get("/scenarios/<scenario_id>/versions")
@requires("viewer")
def versions(scenario_id: str) -> Any:
    """Every published version, newest first, each with its diff against the one before."""
    with _reader() as conn, Session(bind=conn) as db:
        found = db.scalars(
            select(ScenarioVersion)
            .where(ScenarioVersion.scenario_id == scenario_id)
            .order_by(ScenarioVersion.number)
        ).all()
        current = conn.scalar(
            select(ScenarioRecord.current_version_id).where(ScenarioRecord.id == scenario_id)
        )
    if not found:
        abort(404, _("This journey was never published."))
    listed = []
    previous = ""
    for v in found:
        text = _bundle_text(v.bundle)
        listed.append(
            {
                "version": v,
                "current": v.id == current,
                "diff": _diff(previous, text, f"version {v.number - 1}", f"version {v.number}"),
            }
        )
        previous = text
    return render_template("versions.html", scenario_id=scenario_id, versions=listed[::-1])


@scenarios.get("/audit")
@requires("viewer")
def audit_log() -> Any:
    """Who changed, published or paused what, and when (newest first)."""
    target = query_values(AuditFilter(), request.args)["target"]
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(300)
    if target:
        stmt = stmt.where(AuditEntry.target_id == target)
    with _reader() as conn, Session(bind=conn) as db:
        entries = db.scalars(stmt).all()
    return render_template("audit.html", entries=entries, target=target)
