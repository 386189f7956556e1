"""The KPI part of the JSON API: reports read from the daily rollups, and the programs with their
panel and targets. Same key (``X-Api-Key``) and error shape as the rest of /api.

    GET /api/reports?program=ID|scenario=ID&from=YYYY-MM-DD&to=YYYY-MM-DD
                    &by=day|scenario|step|channel (&format=csv for the rows as CSV)
    GET /api/programs
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import Response
from marshmallow import fields, validate

from designer import ApiError, parcours
from designer.api import authenticate
from designer.api_schemas import Open
from designer.rest import RestBlueprint, problems
from engine.insights.kpis import GROUPINGS, Report, report
from engine.insights.programs import fixed_costs, overview
from engine.spec.problems import did_you_mean
from engine.spec.programs import ProgramFolder, workspace_programs
from engine.store.db import SQLITE_BEGIN

api_reports = RestBlueprint("api_reports", __name__, url_prefix="/api", tag="reports")


class ReportQuery(ma.Schema):
    program = fields.String(metadata={"description": "A program's scenarios"})
    scenario = fields.String(metadata={"description": "One scenario"})
    start = fields.Date(data_key="from", metadata={"description": "First day, YYYY-MM-DD"})
    end = fields.Date(data_key="to", metadata={"description": "Last day, YYYY-MM-DD"})
    by = fields.String(load_default="day", validate=validate.OneOf(GROUPINGS))
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "csv"]))


class ReportAnswer(Open):
    """KPIs as rows (one per day, scenario, step or channel) and their totals."""

    by = fields.String(required=True)
    start = fields.String(data_key="from", allow_none=True, metadata={"format": "date"})
    end = fields.String(data_key="to", allow_none=True, metadata={"format": "date"})
    rows = fields.List(fields.Dict(), required=True)
    totals = fields.Dict(required=True)
    timezone = fields.String(required=True)


class Programs(ma.Schema):
    programs = fields.List(
        fields.Dict(), required=True, metadata={"description": "Panel, pressure, KPIs, targets"}
    )
    timezone = fields.String(required=True)


api_reports.before_request(authenticate)


def programs_folder() -> ProgramFolder:
    """The workspace's programs; 409 when a program file has errors."""
    folder = workspace_programs(parcours().settings.scenarios_dir)
    errors = [p for p in folder.problems if p.severity == "error"]
    if errors:
        raise ApiError(409, "program_invalid", f"A program file has errors: {errors[0].format()}")
    return folder


def scenarios_asked(program_id: str | None, scenario_id: str | None) -> list[str] | None:
    """The scenarios a report covers: a program's, one, or every one (None)."""
    scenarios: list[str] | None = None
    if program_id:
        folder = programs_folder()
        program = folder.programs.get(program_id)
        if program is None:
            hint = did_you_mean(program_id, folder.programs)
            message = f"No program '{program_id}'." + (f" ({hint})" if hint else "")
            raise ApiError(404, "not_found", message, "program")
        scenarios = list(program.scenarios)
    if scenario_id:
        scenarios = [s for s in (scenarios or [scenario_id]) if s == scenario_id]
    return scenarios


def asked_report(asked: dict[str, Any]) -> Report:
    """The report the query asks for (ReportQuery: program, scenario, from, to, by)."""
    start, end, by = asked.get("start"), asked.get("end"), asked["by"]
    if start and end and start > end:
        raise ApiError(422, "invalid", "'from' is after 'to'.", "from")
    scenarios = scenarios_asked(asked.get("program"), asked.get("scenario"))
    state = parcours()
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        costs = fixed_costs(conn, scenarios)
        return report(conn, scenarios=scenarios, start=start, end=end, by=by, fixed_costs=costs)


@api_reports.get("/reports")
@api_reports.arguments(ReportQuery, location="query", as_kwargs=True)
@api_reports.alt_response(200, schema=ReportAnswer, description="The report")
@api_reports.doc(responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
@problems(404, 409)
def get_report(**asked: Any) -> Any:
    """KPIs by day, scenario, step or channel.

    Days in the workspace zone (`timezone`); ``format=csv`` gives the rows as CSV."""
    found = asked_report(asked)
    if asked["format"] == "csv":
        disposition = {"Content-Disposition": "attachment; filename=report.csv"}
        return Response(found.to_csv(), mimetype="text/csv", headers=disposition)
    return {**found.to_json(), "timezone": parcours().settings.timezone}


@api_reports.get("/programs")
@api_reports.response(200, Programs)
@problems(409)
def list_programs() -> dict[str, Any]:
    """Every program with its panel size, pressure states and KPIs against targets."""
    folder = programs_folder()
    state = parcours()
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        found = overview(conn, folder.programs.values(), state.clock.now(), state.settings.timezone)
    return {"programs": found, "timezone": state.settings.timezone}
