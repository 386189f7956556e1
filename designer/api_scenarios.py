"""The scenarios resource of the API: the list with live counts, one scenario's status and
versions, and publish, pause and resume, done by the same functions as the designer's buttons
and audited with the API key's name.

Manual entry is ``POST /api/scenarios/<id>/enroll`` (`designer.api`).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response
from marshmallow import fields, validate
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import ApiError, parcours
from designer.api import authenticate
from designer.api_actor import actor
from designer.api_scope import requires
from designer.auth import audit
from designer.rest import RestBlueprint, problem, problems
from designer.scenarios import Row, scenario_rows, step_counts, workspace
from engine.errors import NotFound, ScenarioInvalid
from engine.spec.problems import did_you_mean
from engine.store.db import SQLITE_BEGIN
from engine.store.models import ScenarioRecord, ScenarioVersion
from engine.worker.versions import publish_bundle, set_status

api_scenarios = RestBlueprint("api_scenarios", __name__, url_prefix="/api", tag="scenarios")
api_scenarios.before_request(authenticate)


class ScenarioSummary(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["live", "paused", "draft"]})
    version = fields.Integer(
        allow_none=True, required=True, metadata={"description": "The current published version"}
    )
    published_at = fields.String(allow_none=True, required=True, metadata={"format": "date-time"})
    published_by = fields.String(allow_none=True, required=True)
    active = fields.Integer(required=True, metadata={"description": "Contacts inside now"})
    converted_week = fields.Integer(required=True, metadata={"description": "Last 7 days"})
    has_file = fields.Boolean(required=True)
    changed = fields.Boolean(
        required=True, metadata={"description": "The file differs from the current version"}
    )
    problems = fields.Integer(required=True, metadata={"description": "Errors in the file"})


class ScenarioList(ma.Schema):
    scenarios = fields.List(fields.Nested(ScenarioSummary), required=True)


class VersionEntry(ma.Schema):
    number = fields.Integer(required=True)
    content_hash = fields.String(required=True)
    published_at = fields.String(required=True, metadata={"format": "date-time"})
    published_by = fields.String(allow_none=True, required=True)
    current = fields.Boolean(required=True)


class ScenarioDetails(ScenarioSummary):
    versions = fields.List(fields.Nested(VersionEntry), required=True)
    steps = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Integer()),
        required=True,
        metadata={"description": "Per step: entered, waiting, converted, exited, sends..."},
    )


class ScenarioAnswer(ma.Schema):
    scenario = fields.Nested(ScenarioDetails, required=True)


class PublishQuery(ma.Schema):
    status = fields.String(
        load_default="live",
        validate=validate.OneOf(["live", "paused"]),
        metadata={"description": "paused: publish without taking entries yet"},
    )


class Published(ma.Schema):
    scenario = fields.String(required=True)
    version = fields.Integer(required=True)
    created = fields.Boolean(
        required=True, metadata={"description": "false: the file already was the current version"}
    )
    status = fields.String(required=True)


class StatusAnswer(ma.Schema):
    scenario = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["live", "paused"]})


def _summary(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "version": row.version,
        "published_at": row.published_at.isoformat() if row.published_at else None,
        "published_by": row.published_by,
        "active": row.active,
        "converted_week": row.converted_week,
        "has_file": row.has_file,
        "changed": row.changed,
        "problems": row.problems,
    }


def _unknown(scenario_id: str, known: list[str]) -> ApiError:
    hint = did_you_mean(scenario_id, known)
    return ApiError(
        404, "not_found", f"No scenario '{scenario_id}'." + (f" ({hint})" if hint else "")
    )


@api_scenarios.get("/scenarios")
@api_scenarios.response(200, ScenarioList)
def list_scenarios() -> dict[str, Any]:
    """Every scenario of the workspace and the database: status (live, paused, draft), current
    version, contacts inside now, conversions of the last 7 days, whether the file has
    unpublished changes or errors. Live first, then paused, then drafts."""
    return {"scenarios": [_summary(row) for row in scenario_rows()]}


@api_scenarios.get("/scenarios/<scenario_id>")
@api_scenarios.response(200, ScenarioAnswer)
@problems(404)
def get_scenario(scenario_id: str) -> dict[str, Any]:
    """One scenario: its status, every published version (oldest first) and per step the
    contacts that entered it, wait there, converted or exited, and its sends by decision."""
    rows = {row.id: row for row in scenario_rows()}
    if scenario_id not in rows:
        raise _unknown(scenario_id, list(rows))
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        current = conn.scalar(
            select(ScenarioRecord.current_version_id).where(ScenarioRecord.id == scenario_id)
        )
        versions = conn.execute(
            select(ScenarioVersion)
            .where(ScenarioVersion.scenario_id == scenario_id)
            .order_by(ScenarioVersion.number)
        ).all()
        steps = step_counts(conn, scenario_id)
    return {
        "scenario": {
            **_summary(rows[scenario_id]),
            "versions": [
                {
                    "number": v.number,
                    "content_hash": v.content_hash,
                    "published_at": v.published_at.isoformat(),
                    "published_by": v.published_by,
                    "current": v.id == current,
                }
                for v in versions
            ],
            "steps": steps,
        }
    }


@api_scenarios.post("/scenarios/<scenario_id>/publish")
@api_scenarios.arguments(PublishQuery, location="query", as_kwargs=True)
@api_scenarios.response(200, Published)
@problems(404, 422)
@requires("write")
def publish_scenario(scenario_id: str, status: str) -> Any:
    """Publish the workspace file as a new version, as the designer's Publish does: contacts
    inside stay on their version. Publishing the current content again creates nothing
    (`created: false`). A file with errors is refused (422, every error listed). Audited with
    the API key's name."""
    files = workspace()
    try:
        file = files.load(scenario_id)
    except (NotFound, FileNotFoundError):
        raise _unknown(scenario_id, files.ids()) from None
    except ScenarioInvalid as exc:
        return _invalid(exc.problems)
    errors = [p for p in file.result.problems if p.severity == "error"]
    if errors:
        return _invalid(errors)
    try:
        bundle = files.bundle(scenario_id)
        with Session(parcours().engine) as db, db.begin():
            result = publish_bundle(db, bundle, str(file.path), by=actor(), status=status)
            if result.created:
                audit(db, "publish", "scenario", scenario_id, actor=actor(),
                      version=result.version_number)  # fmt: skip
    except ScenarioInvalid as exc:
        return _invalid(exc.problems)
    return {
        "scenario": scenario_id,
        "version": result.version_number,
        "created": result.created,
        "status": status,
    }


def _invalid(found: list[Any]) -> Response:
    errors = [{"field": p.field or None, "message": p.format()} for p in found]
    first = errors[0]["message"] if errors else "The scenario has errors."
    return problem(422, "scenario_invalid", f"Fix the file before publishing: {first}", errors)


def _set_status(scenario_id: str, status: str, action: str) -> dict[str, Any]:
    try:
        with Session(parcours().engine) as db, db.begin():
            set_status(db, scenario_id, status)
            audit(db, action, "scenario", scenario_id, actor=actor())
    except NotFound:
        raise ApiError(404, "not_found", f"Scenario '{scenario_id}' was never published.") from None
    parcours().notify()
    return {"scenario": scenario_id, "status": status}


@api_scenarios.post("/scenarios/<scenario_id>/pause")
@api_scenarios.response(200, StatusAnswer)
@problems(404)
@requires("write")
def pause_scenario(scenario_id: str) -> dict[str, Any]:
    """Stop new entries, as the designer's Pause does; contacts inside stay where they are.
    Audited with the API key's name."""
    return _set_status(scenario_id, "paused", "pause")


@api_scenarios.post("/scenarios/<scenario_id>/resume")
@api_scenarios.response(200, StatusAnswer)
@problems(404)
@requires("write")
def resume_scenario(scenario_id: str) -> dict[str, Any]:
    """Take new entries again. Audited with the API key's name."""
    return _set_status(scenario_id, "live", "resume")
