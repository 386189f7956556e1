"""The experiment panel of the journey page: each split step's arms with their rates and
intervals, the probability to be best, the uplift against the holdout, the sample's progress and
the decision; and the marketer's "Declare winner" (a new version, audited, and the file saved
through the workspace so the next publish keeps it).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, request, url_for
from sqlalchemy.orm import Session

from designer import parcours
from designer.auth import requires
from designer.forms import Form, Text
from designer.forms import query as query_values
from designer.i18n import gettext as _
from designer.workspace import Conflict, Workspace, text_hash
from engine.errors import NotFound
from engine.store.db import SQLITE_BEGIN

experiments = Blueprint("experiments", __name__)


@experiments.app_template_global()
def experiment_reports(scenario_id: str) -> list[dict[str, Any]]:
    """The published scenario's experiments, for the panel (none when never published)."""
    from engine.insights.experiments import current_scenario, reports, split_steps

    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # reads take no write lock
        try:
            scenario = current_scenario(conn, scenario_id)
        except NotFound:
            return []
        if not split_steps(scenario):
            return []
        return [r.to_dict() for r in reports(conn, scenario)]


class WinnerForm(Form):
    arm = Text(100, required=True)  # a branch of the split step


@experiments.post("/scenarios/<scenario_id>/experiments/<step_id>/winner")
@requires("marketer")
def declare(scenario_id: str, step_id: str) -> Any:
    """Route the split step's new entries to the chosen branch; the file gets the same line."""
    from engine.insights.experiments import WinnerRefused, declare_winner

    arm = query_values(WinnerForm(), request.form)["arm"]
    state = parcours()
    try:
        with Session(state.engine) as db, db.begin():
            done = declare_winner(db, scenario_id, step_id, arm, g.user.username, state.clock.now())
    except NotFound:
        abort(404, _("This journey was never published."))
    except WinnerRefused as exc:
        flash(str(exc), "error")
        return redirect(url_for("scenarios.detail", scenario_id=scenario_id))
    flash(_("Version %(n)d sends every new entry to %(arm)s.", n=done.published.version_number,
            arm=arm), "ok")  # fmt: skip
    workspace = Workspace(state.settings.scenarios_dir)
    try:
        if workspace.exists(scenario_id):
            workspace.write(scenario_id, done.yaml, text_hash(done.previous_yaml))
    except Conflict:
        message = _("The file has unpublished changes: add the winner in the editor.")
        flash(message, "error")
    return redirect(url_for("scenarios.detail", scenario_id=scenario_id))
