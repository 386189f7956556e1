"""The experiments part of the JSON API: a scenario's split steps with their results, and the
winner declared (a new version routes new entries to it; audited as the API's).

Same key (``X-Api-Key``) and error shape as the rest of /api (see `designer.api`).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate
from sqlalchemy.orm import Session

from designer import ApiError, parcours
from designer.api import authenticate
from designer.rest import RestBlueprint, problems
from engine.errors import NotFound

api_experiments = RestBlueprint("api_experiments", __name__, url_prefix="/api", tag="experiments")
api_experiments.before_request(authenticate)

ACTOR = "api"  # the API key names no person


class Experiments(ma.Schema):
    experiments = fields.List(
        fields.Dict(),
        required=True,
        metadata={"description": "Per split step: arms, rates, intervals, uplift, decision"},
    )


class WinnerIn(ma.Schema):
    arm = fields.String(required=True, validate=validate.Length(min=1))


class WinnerDeclared(ma.Schema):
    scenario = fields.String(required=True)
    step = fields.String(required=True)
    arm = fields.String(required=True)
    version = fields.Integer(required=True, metadata={"description": "The version published"})


@api_experiments.get("/scenarios/<scenario_id>/experiments")
@api_experiments.response(200, Experiments)
@problems(404)
def list_experiments(scenario_id: str) -> dict[str, Any]:
    """Every split step of the published scenario with its results.

    Arms, rates with intervals, P(best), uplift against the holdout, minimum sample and the
    decision."""
    from engine.insights.experiments import current_scenario, reports

    with parcours().engine.connect() as conn:
        try:
            scenario = current_scenario(conn, scenario_id)
        except NotFound:
            raise ApiError(404, "not_found", f"No published scenario '{scenario_id}'.") from None
        return {"experiments": [r.to_dict() for r in reports(conn, scenario)]}


@api_experiments.post("/scenarios/<scenario_id>/experiments/<step_id>/winner")
@api_experiments.arguments(WinnerIn)
@api_experiments.response(201, WinnerDeclared)
@problems(404)
def declare_winner_arm(body: dict[str, Any], scenario_id: str, step_id: str) -> Any:
    """Declare the winning arm of a split step.

    ``{"arm": "b"}``: publish a version whose split step sends every new entry to `arm`."""
    from engine.insights.experiments import WinnerRefused, declare_winner

    arm = body["arm"]
    state = parcours()
    try:
        with Session(state.engine) as session, session.begin():
            done = declare_winner(session, scenario_id, step_id, arm, ACTOR, state.clock.now())
    except NotFound:
        raise ApiError(404, "not_found", f"No published scenario '{scenario_id}'.") from None
    except WinnerRefused as exc:
        field = "arm" if "branch" in str(exc) and "split step" not in str(exc) else "step"
        raise ApiError(422, "invalid", str(exc), field) from None
    return {
        "scenario": scenario_id,
        "step": step_id,
        "arm": arm,
        "version": done.published.version_number,
    }, 201
