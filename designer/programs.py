"""The Programs pages and the journey page's report: KPIs from the daily rollups, against the
programs' targets, with daily charts, a date range, CSV of every table and live counts.

Figures come from engine.insights (never the journal); numbers and dates go through the
designer's helpers (designer.insights) in the viewer's language, days in the workspace zone,
which every page names.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, Response, abort, render_template, request, url_for

from designer import ApiError, parcours
from designer.api_reports import programs_folder, scenarios_asked
from designer.auth import requires
from designer.forms import Choice, Date, Form
from designer.forms import query as query_values
from designer.i18n import gettext as _
from designer.insights import channel_label, number, percent, when
from designer.pressure_health import health_view
from engine.errors import ScenarioInvalid
from engine.insights.kpis import GROUPINGS, METRICS, Report, report, sends_by_channel
from engine.insights.programs import fixed_costs, overview
from engine.store.db import SQLITE_BEGIN

programs = Blueprint("programs", __name__)

DEFAULT_DAYS = 30
LIVE_SECONDS = 15


@programs.context_processor
def _helpers() -> dict[str, Any]:
    return {"number": number, "percent": percent, "channel_label": channel_label}


def metric_labels() -> dict[str, str]:
    """Each KPI in words."""
    return {
        "entries": _("Entries"), "sends": _("Messages sent"), "delivered": _("Delivered"),
        "opens": _("Opens"), "clicks": _("Clicks"), "bounces": _("Bounces"),
        "unsubscribes": _("Unsubscribes"), "complaints": _("Complaints"),
        "conversions": _("Conversions"), "conversion_rate": _("Conversion rate"),
        "revenue": _("Revenue"), "cost": _("Cost"), "cost_per_conversion": _("Cost per conversion"),
        "return_on_spend": _("Return on spend"),
    }  # fmt: skip


def period_labels() -> dict[str, str]:
    return {"day": _("today"), "week": _("this week"), "month": _("this month"),
            "quarter": _("this quarter")}  # fmt: skip


def metric(name: str, value: Any) -> str:
    """A KPI value in the viewer's language: rates as percentages, money with two digits."""
    if value is None:
        return "—"
    if name == "conversion_rate":
        return percent(float(value))
    if name in ("revenue", "cost", "cost_per_conversion"):
        return number(float(value), 2)
    if name == "return_on_spend":
        return number(float(value), 2) + "\u00d7"  # times
    return number(float(value))


class RangeQuery(Form):
    start = Date(data_key="from")
    end = Date(data_key="to")
    table = Choice(GROUPINGS, load_default="day")
    format = Choice(("html", "csv"), load_default="html")


def _range() -> tuple[date, date]:
    """The date range asked (`from`, `to`), by default the last 30 days in the workspace zone."""
    state = parcours()
    from designer.insights import _zone

    today = state.clock.now().astimezone(_zone()).date()
    asked = query_values(RangeQuery(), request.args)
    end = asked.get("end") or today
    start = asked.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        start, end = end, start
    return start, end


def _reports(scenarios: list[str] | None, start: date, end: date) -> dict[str, Any]:
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        costs = fixed_costs(conn, scenarios)
        found = {by: report(conn, scenarios=scenarios, start=start, end=end, by=by,
                            fixed_costs=costs) for by in GROUPINGS}  # fmt: skip
        channels = sends_by_channel(conn, scenarios=scenarios, start=start, end=end)
    return {"reports": found, "chart": _chart(found["day"], channels, start, end)}


def _chart(by_day: Report, channels: dict[str, dict[date, int]], start: date, end: date) -> Any:
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    rows = {r["day"]: r for r in by_day.rows}

    def series(name: str) -> list[float]:
        return [float(rows[d][name]) if d in rows else 0.0 for d in days]

    return {
        "days": [d.isoformat() for d in days],
        "labels": metric_labels(),
        "series": {m: series(m) for m in ("entries", "conversions", "revenue", "cost")},
        "channels": {channel_label(c): [by.get(d, 0) for d in days] for c, by in channels.items()},
        "sendsLabel": _("Messages sent by channel"),
        "lang": "fr-FR" if _("Programs") != "Programs" else "en-GB",
    }


def _csv(found: Report, name: str) -> Response:
    disposition = {"Content-Disposition": f"attachment; filename={name}.csv"}
    return Response(found.to_csv(), mimetype="text/csv", headers=disposition)


def _page_context(scenarios: list[str] | None) -> dict[str, Any] | Response:
    start, end = _range()
    data = _reports(scenarios, start, end)
    asked = query_values(RangeQuery(), request.args)
    table = asked["table"]
    if asked["format"] == "csv":
        return _csv(data["reports"][table], f"kpis-{table}-{start}-{end}")
    endpoint, args = request.endpoint or "", dict(request.view_args or {})

    def csv(name: str) -> str:
        return url_for(endpoint, **args, format="csv", table=name, **{"from": start, "to": end})

    return {**data, "start": start, "end": end, "metrics": METRICS, "labels": metric_labels(),
            "metric": metric, "zone": parcours().settings.timezone, "csv": csv,
            "live_seconds": LIVE_SECONDS}  # fmt: skip


@programs.get("/programs")
@requires("viewer")
def index() -> Any:
    """Every program with its panel, pressure states and KPIs against this period's targets."""
    state = parcours()
    folder = _folder_or_problems()
    found: list[dict[str, Any]] = []
    if folder is not None:
        with state.engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
            found = overview(conn, folder.programs.values(), state.clock.now(),
                             state.settings.timezone)  # fmt: skip
    problems = _problems()
    return render_template(
        "programs.html", rows=found, problems=problems, labels=metric_labels(), metric=metric,
        periods=period_labels(), zone=state.settings.timezone,
    )  # fmt: skip


def _folder_or_problems() -> Any:
    try:
        return programs_folder()
    except ApiError:
        return None


def _problems() -> list[Any]:
    from engine.spec.programs import workspace_programs

    folder = workspace_programs(parcours().settings.scenarios_dir)
    return [p for p in folder.problems if p.severity == "error"]


@programs.get("/programs/<program_id>")
@requires("viewer")
def detail(program_id: str) -> Any:
    """One program: targets, panel, daily charts, tables by scenario, step, channel and day."""
    state = parcours()
    folder = _folder_or_problems()
    program = folder.programs.get(program_id) if folder is not None else None
    if program is None:
        abort(404)
    context = _page_context(list(program.scenarios))
    if isinstance(context, Response):
        return context
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        summary = overview(conn, [program], state.clock.now(), state.settings.timezone)[0]
    live = url_for("programs.live", program=program_id)
    return render_template("program.html", program=program, summary=summary, live_url=live,
                           periods=period_labels(), health=journey_health(program.scenarios),
                           **context)  # fmt: skip


@programs.app_template_global("journey_health")
def journey_health(scenarios: Sequence[str]) -> dict[str, Any] | None:
    """The Health card of these journeys' sends and the events they caused (the pressure
    health signals filtered to them); None while policy.yaml does not lint (the Pressure page
    and `parcours lint` say why)."""
    from designer.insights import _zone

    state = parcours()
    try:
        policy = state.policy()
    except ScenarioInvalid:
        return None
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        return health_view(conn, state.clock.now(), policy, _zone(), scenarios=list(scenarios))


@programs.get("/reports/live.json")
@requires("viewer")
def live() -> Any:
    """Today's counts (workspace zone) of a program or a journey, polled by the pages."""
    state = parcours()
    from designer.insights import _zone

    today = state.clock.now().astimezone(_zone()).date()
    scenarios = scenarios_asked(request.args.get("program"), request.args.get("scenario"))
    with state.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        totals = report(conn, scenarios=scenarios, start=today, end=today).totals
    shown = ("entries", "sends", "opens", "clicks", "conversions", "revenue")
    return {"day": today.isoformat(), "at": when(state.clock.now()),
            "counts": {m: metric(m, totals[m]) for m in shown}}  # fmt: skip


@programs.get("/scenarios/<scenario_id>/report.csv")
@requires("viewer")
def journey_csv(scenario_id: str) -> Any:
    """A journey's report table as CSV (`table`: day, scenario, step or channel)."""
    start, end = _range()
    table = query_values(RangeQuery(), request.args)["table"]
    found = _reports([scenario_id], start, end)["reports"][table]
    return _csv(found, f"{scenario_id}-{table}-{start}-{end}")


@programs.app_template_global("journey_report")
def journey_report(scenario_id: str) -> dict[str, Any]:
    """What the journey page's report section shows (designer/templates/_journey_report.html)."""
    start, end = _range()
    data = _reports([scenario_id], start, end)
    return {**data, "start": start, "end": end, "labels": metric_labels(), "metric": metric,
            "zone": parcours().settings.timezone, "live_seconds": LIVE_SECONDS,
            "channel_label": channel_label,
            "live_url": url_for("programs.live", scenario=scenario_id),
            "csv": lambda table: url_for("programs.journey_csv", scenario_id=scenario_id,
                                         table=table, **{"from": start, "to": end})}  # fmt: skip
