"""Simulate before publishing: the saved draft of a scenario, run by the real worker on a virtual
clock over a throw-away database (`engine.insights.simulate`), from the designer, with the
workspace's other live journeys (`designer.simulation_journeys`) and compared with a run alone.

This module checks the form and shapes the answer; `designer.simulation_run` samples real
contacts and runs the child process. One run at a time per process, since a run keeps a CPU core
busy for up to a few minutes. The answer holds counts only, never a contact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    url_for,
)

from designer import ApiError, parcours
from designer.auth import requires
from designer.editor_words import node_types
from designer.editor_words import strings as canvas_strings
from designer.i18n import current_language
from designer.i18n import gettext as _
from designer.i18n_formats import number as formatted
from designer.i18n_formats import when
from designer.jsonbody import request_json
from designer.simulation_competition import VERBS, compare
from designer.simulation_journeys import Lineup, lineup
from designer.simulation_run import Job, Options, run_with_limit, sample_contacts
from designer.workspace import Workspace
from engine.config import Settings
from engine.errors import NotFound, ParcoursError
from engine.policy.model import Policy
from engine.spec.model import Scenario
from engine.spec.nodes import NODE_TYPES

logger = logging.getLogger(__name__)

simulation = Blueprint("simulation", __name__)

MAX_CONTACTS = 20_000
MAX_DAYS = 90
MAX_SEED = 2**31 - 1
TIME_LIMIT = 240.0  # seconds; `SIMULATION_TIME_LIMIT` in the app config overrides it
DEFAULTS: dict[str, Any] = dict(
    population="generated", contacts=1000, sample="random", days=14, policy=True, seed=7,
    alone=False,
)  # fmt: skip
# One run at a time in this process; a second request is answered 409 rather than queued.
RUNNING = threading.Lock()


class ScenarioProblems(ApiError):
    """The saved file has errors: the answer lists them, as the editor shows them."""

    def __init__(self, problems: list[Any]) -> None:
        message = _("The scenario has problems: fix them in the editor, then simulate.")
        super().__init__(422, "scenario_invalid", message)
        self.problems = [p.to_dict() for p in problems]


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name, DEFAULTS.get(name))
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid", _("Enter a whole number."), name)
    if not low <= value <= high:
        message = _("Enter a number from %(low)s to %(high)s.", low=shown(low), high=shown(high))
        raise ApiError(400, "out_of_range", message, name)
    return value


def shown(number: int) -> str:
    """A number as the page's language writes it (20,000 / 20 000)."""
    return formatted(number)


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name, DEFAULTS[name])
    if value not in allowed:
        raise ApiError(400, "invalid", _("Choose one of: %(c)s.", c=", ".join(allowed)), name)
    return str(value)


def _start(raw: Any, settings: Settings, now: datetime) -> datetime:
    """ISO 8601; a time without offset is in the workspace zone. Default: the current hour."""
    if raw in (None, ""):
        return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        start = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid", _("Enter a date and time."), "start") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=ZoneInfo(settings.timezone))
    return start.astimezone(UTC)


def parse_options(body: Any, settings: Settings, now: datetime) -> Options:
    """The form's values, checked against the limits; ApiError names the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", _("Send the options as a JSON object."))
    policy, alone = (body.get(name, DEFAULTS[name]) for name in ("policy", "alone"))
    for name, value in (("policy", policy), ("alone", alone)):
        if not isinstance(value, bool):
            raise ApiError(400, "invalid", _("Choose yes or no."), name)
    return Options(
        population=_choice(body, "population", ("generated", "sample")),
        contacts=_integer(body, "contacts", 1, MAX_CONTACTS),
        sample=_choice(body, "sample", ("random", "recent")),
        days=_integer(body, "days", 1, MAX_DAYS),
        policy=policy,
        seed=_integer(body, "seed", 0, MAX_SEED),
        start=_start(body.get("start"), settings, now),
        alone=alone,
    )


def _type_label(step_type: str) -> str:
    node = NODE_TYPES.get(step_type)
    if node is None:
        return step_type
    return node.label_fr if current_language() == "fr" else node.label


def _step_order(scenario: Scenario) -> list[str]:
    """Steps as a reader follows them: each after every step leading to it (loops aside), ties
    in file order; steps the start never reaches come last."""
    steps = scenario.steps
    forward: dict[str, list[str]] = {s: [] for s in steps}
    seen: set[str] = set()

    def visit(step_id: str, path: set[str]) -> None:
        seen.add(step_id)
        for target in steps[step_id].targets():
            if target in steps and target not in path:  # an edge back up the path is a loop
                forward[step_id].append(target)
                if target not in seen:
                    visit(target, path | {target})

    if scenario.start in steps:
        visit(scenario.start, {scenario.start})
    incoming = Counter(t for s in seen for t in forward[s])
    rank = {s: i for i, s in enumerate(steps)}
    ready = [scenario.start] if scenario.start in steps else []
    order: list[str] = []
    while ready:
        step_id = min(ready, key=rank.__getitem__)
        ready.remove(step_id)
        order.append(step_id)
        for target in forward[step_id]:
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return order + [s for s in steps if s not in order]


def summary(
    scenario: Scenario, options: Options, result: dict[str, Any], journeys: Lineup
) -> dict[str, Any]:
    """The JSON answer: counts only, arranged for the page (steps in order, days filled in),
    for the open journey; `competition` says what the other journeys of the run took from it."""
    report, sid = result["report"], scenario.id
    reached = report["steps"].get(sid, {})
    at_step = result["at_step"]
    steps = [
        {
            "id": step_id,
            "type": scenario.steps[step_id].type,
            "type_label": _type_label(scenario.steps[step_id].type),
            "label": scenario.steps[step_id].label or step_id,
            "reached": reached.get(step_id, 0),
            "waiting": at_step.get(step_id, {}).get("waiting", 0),
            "ended": at_step.get(step_id, {}).get("ended", 0),
        }
        for step_id in _step_order(scenario)
    ]
    first = options.start.date()
    days = [(first + timedelta(days=i)).isoformat() for i in range(options.days + 1)]
    sends = {
        ch: [per_day.get(d, 0) for d in days] for ch, per_day in sorted(result["sends"].items())
    }
    policy = [
        {"reason": reason, **{k: n.get(k, 0) for k in VERBS}}
        for reason, n in sorted(result["policy"].items(), key=lambda kv: -sum(kv[1].values()))
    ]
    refused = report["refused_entries"].get(sid, {})
    return {
        "scenario": {"id": sid, "name": scenario.name},
        "options": options.to_dict(),
        "start": report["start"],
        # written here, in the workspace zone with its label, like every time of the designer
        "start_label": when(report["start"]),
        "end": report["end"],
        "contacts": report["contacts"],
        "totals": _totals(sid, result),
        "steps": steps,
        "not_entered": refused,
        "outcomes": report["outcomes"].get(sid, {}),
        "sends": {"days": days, "channels": sends},
        "decisions": result["decisions"],
        "policy": policy,
        "competition": _competition(sid, result, journeys),
    }


def _totals(sid: str, result: dict[str, Any]) -> dict[str, int]:
    """The open journey's headline counts in one run."""
    report, policy = result["report"], result["policy"].values()
    return {
        "entered": report["entries"].get(sid, 0),
        "not_entered": sum(report["refused_entries"].get(sid, {}).values()),
        "converted": report["converted"].get(sid, 0),
        "waiting": report["waiting"].get(sid, 0),
        "sent": sum(sum(per_day.values()) for per_day in result["sends"].values()),
        **{v: sum(n.get(v, 0) for n in policy) for v in VERBS},
    }


def _competition(sid: str, result: dict[str, Any], journeys: Lineup) -> dict[str, Any]:
    """The journeys the open one ran with, and per policy reason what it lost to them: the
    run with them against the run alone, on the same contacts and events."""
    alone, figures = result["alone"], result["rivals"]
    if alone is None:  # asked alone, or nothing else to run with
        return {"alone": True, "journeys": [], "left_out": [], "alone_totals": None, "reasons": []}
    return {
        "alone": False,
        "journeys": [{**r.to_dict(), **figures.get(r.id, {})} for r in journeys.rivals],
        "left_out": [j.to_dict() for j in journeys.left_out],
        "alone_totals": _totals(sid, alone),
        "reasons": compare(result["policy"], alone["policy"]),
    }


def _workspace() -> Workspace:
    return Workspace(parcours().settings.scenarios_dir)


def _error(exc: ApiError) -> tuple[Response, int]:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message, "field": exc.field}
    if isinstance(exc, ScenarioProblems):
        body["problems"] = exc.problems
    return jsonify({"error": body}), exc.status


@simulation.get("/scenarios/<scenario_id>/simulate")
@requires("viewer")
def page(scenario_id: str) -> Any:
    """The simulation form; a file with errors shows its problems instead."""
    try:
        found = _workspace().load(scenario_id)
    except NotFound:
        abort(404)
    scenario = found.result.scenario
    canvas = _canvas_assets()
    config: dict[str, Any] = {}
    if scenario is not None:
        config = {
            "url": url_for("simulation.run", scenario_id=scenario_id),
            "doc": found.data,
            "nodeTypes": node_types() if canvas["js"] else None,
            "canvasStrings": canvas_strings(),
        }
    return render_template(
        "simulate.html",
        file=found,
        scenario=scenario,
        problems=[p for p in found.result.problems if p.severity == "error"],
        canvas=canvas,
        config=config,
        defaults=DEFAULTS,
        limits={"contacts": MAX_CONTACTS, "days": MAX_DAYS, "seed": MAX_SEED},
        shown=shown,
    )


def _canvas_assets() -> dict[str, list[str]]:
    """The editor's canvas files, when they are there (the page feature-detects the canvas)."""
    static = Path(current_app.static_folder or "")
    wanted = {
        "css": ["vendor/drawflow/drawflow.min.css", "editor/editor.css"],
        "js": ["vendor/drawflow/drawflow.min.js", "editor/canvas.js", "editor/editor.js"],
    }
    found = {kind: [n for n in names if (static / n).is_file()] for kind, names in wanted.items()}
    complete = "editor/editor.js" in found["js"] and "editor/editor.css" in found["css"]
    return found if complete else {"css": [], "js": []}


@simulation.post("/scenarios/<scenario_id>/simulate")
@requires("marketer")
def run(scenario_id: str) -> Any:
    """Run the saved file of the scenario; JSON in, JSON out, errors as JSON too."""
    try:
        return jsonify(_simulate(scenario_id))
    except ApiError as exc:
        return _error(exc)
    except Exception:
        logger.exception("simulation of %s failed", scenario_id)
        message = _("Internal error; the server log has the details.")
        return _error(ApiError(500, "internal_server_error", message))


def _simulate(scenario_id: str) -> dict[str, Any]:
    state = parcours()
    body = request_json(optional=True) if request.is_json else None
    options = parse_options(body, state.settings, state.clock.now())
    try:
        found = _workspace().load(scenario_id)
    except NotFound:
        raise ApiError(404, "not_found", _("No scenario '%(id)s'.", id=scenario_id)) from None
    scenario = found.result.scenario
    if scenario is None:
        errors = [p for p in found.result.problems if p.severity == "error"]
        raise ScenarioProblems(errors)
    policy = _policy() if options.policy else None
    if not RUNNING.acquire(blocking=False):
        message = _("A simulation is already running: try again when it ends.")
        raise ApiError(409, "busy", message)
    try:
        began = time.monotonic()
        contacts: list[dict[str, Any]] | None = None
        history: list[dict[str, Any]] = []
        if options.population == "sample":
            contacts, history = sample_contacts(state.engine, options)
            if not contacts:
                message = _("There is no contact in the database yet: simulate generated ones.")
                raise ApiError(400, "no_contacts", message, "population")
        settings = state.settings.evolve(database_url="")
        journeys = lineup(state.engine, _workspace(), scenario_id)
        rivals, order = journeys.rivals, journeys.order
        job = Job(found.path, rivals, order, settings, policy, options, contacts, history)
        result = run_with_limit(
            job, float(current_app.config.get("SIMULATION_TIME_LIMIT", TIME_LIMIT))
        )
    finally:
        RUNNING.release()
    answer = summary(scenario, options, result, journeys)
    answer["elapsed"] = round(time.monotonic() - began, 2)
    return answer


def _policy() -> Policy:
    try:
        return parcours().policy()
    except ParcoursError as exc:
        message = _("The workspace policy (policy.yaml) has a problem: %(e)s", e=str(exc))
        raise ApiError(422, "policy_invalid", message, "policy") from None
