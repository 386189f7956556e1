"""The experiments part of the JSON API: a scenario's split steps with their results, and the
winner declared (a new version routes new entries to it; audited as the API's).

Same key (``X-Api-Key``) and error shape as the rest of /api (see `designer.api`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint
from sqlalchemy.orm import Session

from designer import ApiError, parcours
from designer.api import authenticate, json_body
from engine.errors import NotFound

api_experiments = Blueprint("api_experiments", __name__, url_prefix="/api")
api_experiments.before_request(authenticate)

ACTOR = "api"  # the API key names no person


@api_experiments.get("/scenarios/<scenario_id>/experiments")
def list_experiments(scenario_id: str) -> dict[str, Any]:
    """Every split step of the published scenario: arms, rates with intervals, P(best),
    uplift against the holdout, minimum sample and the decision."""
    from engine.insights.experiments import current_scenario, reports

    with parcours().engine.connect() as conn:
        try:
            scenario = current_scenario(conn, scenario_id)
        except NotFound:
            raise ApiError(404, "not_found", f"No published scenario '{scenario_id}'.") from None
        return {"experiments": [r.to_dict() for r in reports(conn, scenario)]}


@api_experiments.post("/scenarios/<scenario_id>/experiments/<step_id>/winner")
def declare(scenario_id: str, step_id: str) -> tuple[dict[str, Any], int]:
    """``{"arm": "b"}``: publish a version whose split step sends every new entry to `arm`."""
    from engine.insights.experiments import WinnerRefused, declare_winner

    body = json_body()
    arm = body.get("arm") if isinstance(body, dict) else None
    if not isinstance(arm, str) or not arm:
        raise ApiError(422, "invalid", 'Give the winning branch: {"arm": "b"}.', "arm")
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
