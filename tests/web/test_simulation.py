"""Simulate before publishing: the page, the JSON run, its limits and its errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from designer import Parcours
from designer.cli import cli
from designer.simulation import RUNNING
from engine.audience.ingest import (
    clean_contact,
    record_events,
    record_imported_consents,
    upsert_contacts,
)
from engine.spec.loader import scenario_bundle
from engine.store import models
from engine.worker.versions import publish_bundle

START = "2025-03-03T09:00:00Z"
SMALL: dict[str, Any] = {"contacts": 60, "days": 7, "seed": 7, "start": START}
Login = Callable[[str], FlaskClient]


def simulate(client: FlaskClient, scenario: str = "cart-abandonment", **body: Any) -> Any:
    headers = {"X-CSRF-Token": client.csrf}  # type: ignore[attr-defined]
    return client.post(f"/scenarios/{scenario}/simulate", json=body, headers=headers)


def test_viewer_sees_the_form_but_cannot_run(login: Login) -> None:
    viewer = login("viewer")
    page = viewer.get("/scenarios/cart-abandonment/simulate")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="simulate-form"' in html and "simulate.js" in html
    assert "Content-Security-Policy" in page.headers and "<script>" not in html
    response = simulate(viewer, **SMALL)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


@pytest.mark.slow  # starts a process
def test_a_generated_run_counts_steps_sends_and_policy(login: Login) -> None:
    response = simulate(login("marketer"), **SMALL)
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    totals, steps = data["totals"], {s["id"]: s for s in data["steps"]}
    assert data["contacts"] == 60 and data["scenario"]["id"] == "cart-abandonment"
    assert data["start_label"] == "Mar 3, 2025, 10:00 CET"  # workspace zone, with its label
    # Steps in reading order, from the start; everyone who entered reached the first step.
    assert data["steps"][0]["id"] == "wait-1h"
    assert 0 < totals["entered"] == steps["wait-1h"]["reached"]
    assert all(s["reached"] <= totals["entered"] for s in data["steps"])
    assert steps["reminder-sms"]["type"] == "send" and steps["reminder-sms"]["type_label"]
    # Every enrollment ends somewhere (or still waits), and the outcomes say how.
    assert sum(data["outcomes"].values()) == totals["entered"]
    assert totals["converted"] == data["outcomes"].get("converted", 0)
    # One column per day of the period, the first one being the start date.
    days, channels = data["sends"]["days"], data["sends"]["channels"]
    assert len(days) == 8 and days[0] == "2025-03-03"
    assert all(len(counts) == len(days) for counts in channels.values())
    assert max(max(counts) for counts in channels.values()) >= 1
    assert totals["sent"] == sum(map(sum, channels.values())) == data["decisions"]["allowed"]
    # The workspace policy acted, and each rule's effect is split by what it did.
    assert totals["removed"] > 0
    assert any(p["reason"].startswith("consent:") for p in data["policy"])
    assert totals["removed"] == sum(p["removed"] for p in data["policy"])
    assert data["elapsed"] > 0


@pytest.mark.slow  # starts a process
def test_the_same_seed_gives_the_same_result(login: Login) -> None:
    marketer = login("marketer")
    first = simulate(marketer, **SMALL).get_json()
    second = simulate(marketer, **SMALL).get_json()
    other = simulate(marketer, **{**SMALL, "seed": 8}).get_json()
    for answer in (first, second, other):
        answer.pop("elapsed")
    assert first == second
    assert other["options"]["seed"] == 8 and other["totals"] != first["totals"]


@pytest.mark.slow  # starts a process
def test_without_the_policy_nothing_is_removed_by_a_rule(login: Login) -> None:
    data = simulate(login("marketer"), **SMALL, policy=False).get_json()
    assert data["options"]["policy"] is False
    assert not any(p["reason"].startswith(("cap:", "quiet:", "pressure:")) for p in data["policy"])


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("contacts", 20_001, "out_of_range"),
        ("contacts", 0, "out_of_range"),
        ("days", 91, "out_of_range"),
        ("seed", "abc", "invalid"),
        ("population", "everyone", "invalid"),
        ("policy", "yes please", "invalid"),
        ("start", "next tuesday", "invalid"),
    ],
)
def test_values_out_of_bounds_are_refused_naming_the_field(
    login: Login, field: str, value: Any, code: str
) -> None:
    response = simulate(login("marketer"), **{**SMALL, field: value})
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": code,
        "message": response.get_json()["error"]["message"],
        "field": field,
    }
    assert response.get_json()["error"]["message"]


def test_a_file_with_errors_is_not_run_and_its_problems_show(login: Login, state: Parcours) -> None:
    path = state.settings.scenarios_dir / "cart-abandonment.yaml"
    path.write_text(path.read_text().replace("next: still-no-order", "next: nowhere"))
    marketer = login("marketer")
    response = simulate(marketer, **SMALL)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "scenario_invalid"
    assert any("nowhere" in p["message"] for p in error["problems"])
    html = marketer.get("/scenarios/cart-abandonment/simulate").get_data(as_text=True)
    assert 'data-testid="problems"' in html and "nowhere" in html
    assert "/scenarios/cart-abandonment/edit" in html and 'id="simulate-form"' not in html


def test_unknown_scenario_is_a_json_404(login: Login) -> None:
    response = simulate(login("marketer"), "no-such-journey", **SMALL)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert login("viewer").get("/scenarios/no-such-journey/simulate").status_code == 404


def _real_contacts(state: Parcours, count: int) -> None:
    now = datetime(2025, 2, 1, tzinfo=UTC)
    rows = [
        clean_contact(
            {
                "external_id": f"real-{i}",
                "email": f"real.{i}@example.com",
                "first_name": "Zoé",
                "consent:email:*": "opted_in",
            }
        )
        for i in range(count)
    ]
    with state.engine.begin() as conn:
        upsert_contacts(conn, rows, now)
        record_imported_consents(conn, rows, now)
        history = [
            {
                "contact": f"real-{i}",
                "name": "order_placed",
                "properties": {"total": 40},
                "occurred_at": now - timedelta(days=3),
                "event_key": f"order-{i}",
            }
            for i in range(0, count, 3)
        ]
        record_events(conn, history, now)


def _row_counts(state: Parcours) -> dict[str, int]:
    tables = [models.Contact, models.Event, models.Enrollment, models.Send, models.JournalEntry]
    tables += [models.ConsentRecord, models.ConsentState, models.ScenarioRecord, models.EventInbox]
    with state.engine.connect() as conn:
        return {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in tables}  # fmt: skip


@pytest.mark.slow  # starts a process
def test_a_sample_of_real_contacts_leaves_the_database_unchanged(
    login: Login, state: Parcours
) -> None:
    _real_contacts(state, 40)
    before = _row_counts(state)
    marketer = login("marketer")
    response = simulate(marketer, **{**SMALL, "population": "sample", "contacts": 25})
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    assert data["contacts"] == 25 and data["totals"]["entered"] > 0
    recent = simulate(
        marketer, **{**SMALL, "population": "sample", "contacts": 500, "sample": "recent"}
    )
    assert recent.get_json()["contacts"] == 40  # all there is
    assert _row_counts(state) == before
    assert before["contacts"] == 40 and before["enrollments"] == 0


def test_a_sample_from_an_empty_database_says_so(login: Login) -> None:
    response = simulate(login("marketer"), **SMALL, population="sample")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "population"


def test_without_the_csrf_token_nothing_runs(login: Login) -> None:
    marketer = login("marketer")
    response = marketer.post("/scenarios/cart-abandonment/simulate", json=SMALL)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "csrf"


@pytest.mark.slow  # starts a process
def test_one_simulation_at_a_time(login: Login) -> None:
    marketer = login("marketer")
    with RUNNING:
        response = simulate(marketer, **SMALL)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "busy"
    assert simulate(marketer, **SMALL).status_code == 200  # the lock is free again


@pytest.mark.slow  # starts a process
def test_a_run_past_the_time_limit_is_stopped(login: Login, designer_app: Flask) -> None:
    designer_app.config["SIMULATION_TIME_LIMIT"] = 0.05
    response = simulate(login("marketer"), **SMALL)
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "timeout"
    assert not RUNNING.locked()


# Two offers on the same sign-up, and a cap of one email a week: the first (higher priority,
# sending at once) always wins, the second (an hour later) loses whenever both run.
OFFER = """\
format_version: 1
id: {id}
name: {name}
objective: activation
priority: {priority}
topic: promotions
triggers:
  - event: signed_up
entry:
  reentry: never
steps:
  {first}
  offer:
    type: send
    channel: email
    template: welcome
"""
ONE_EMAIL_A_WEEK = """\
format_version: 1
topics:
  promotions: Promotions
caps:
  - id: email-once
    channels: [email]
    max: 1
    window: 7d
outcome:
  action: skip
pressure:
  under_extra: 0  # no extra message for contacts who have had few
"""


def _offer(folder: Path, scenario_id: str, priority: int, wait: bool) -> Path:
    first = "wait-1h:\n    type: wait\n    duration: 1h\n    next: offer" if wait else ""
    text = OFFER.format(id=scenario_id, name=scenario_id.title(), priority=priority, first=first)
    path = folder / f"{scenario_id}.yaml"
    path.write_text(text.replace("  \n", ""), encoding="utf-8")
    return path


@pytest.fixture
def competing(state: Parcours) -> Path:
    """A workspace of three offers: `first-offer` published and live, `second-offer` only a
    file (never published), `paused-offer` published then paused; a one-email-a-week cap."""
    folder = state.settings.scenarios_dir
    for path in folder.glob("*.yaml"):
        path.unlink()
    (folder / "policy.yaml").write_text(ONE_EMAIL_A_WEEK, encoding="utf-8")
    first = _offer(folder, "first-offer", 90, wait=False)
    paused = _offer(folder, "paused-offer", 95, wait=False)
    _offer(folder, "second-offer", 10, wait=True)
    with Session(state.engine) as session, session.begin():
        publish_bundle(session, scenario_bundle(first), str(first), by="test")
        publish_bundle(session, scenario_bundle(paused), str(paused), by="test", status="paused")
    return folder


@pytest.mark.slow  # starts a process
def test_by_default_the_open_journey_runs_with_the_other_live_journeys(
    login: Login, competing: Path
) -> None:
    data = simulate(login("marketer"), "second-offer", **SMALL).get_json()
    competition = data["competition"]
    assert competition["alone"] is False
    # Live in the database, or never published (the file, as `parcours simulate` runs it);
    # a paused journey takes no entry, so it competes with nothing.
    assert [j["id"] for j in competition["journeys"]] == ["first-offer"]
    assert competition["journeys"][0]["source"] == "published"
    assert [(j["id"], j["status"]) for j in competition["left_out"]] == [("paused-offer", "paused")]
    first = competition["journeys"][0]
    assert first["sent"] > 0 and first["entered"] == data["totals"]["entered"]
    # With the others, the cap removes the open journey's emails; alone, it removes none and
    # each of them goes out. Consent or suppression remove the same messages in both runs.
    reasons = {r["reason"]: r for r in competition["reasons"]}
    assert list(reasons) == ["cap:email-once"]
    capped = reasons["cap:email-once"]
    assert capped["removed"] > 0 and capped["alone_removed"] == 0
    alone = competition["alone_totals"]
    assert data["totals"]["sent"] == 0 and alone["sent"] == capped["removed"]
    assert alone["removed"] == data["totals"]["removed"] - capped["removed"]
    assert alone["entered"] == data["totals"]["entered"]
    # Each removed message went to a contact the competitor had just written to.
    assert first["removed"] == capped["removed"]
    # Only the open journey's own figures fill the page, not the competitor's sends.
    assert "allowed" not in data["decisions"]
    assert data["decisions"]["cap:email-once"] == capped["removed"]


@pytest.mark.slow  # starts a process
def test_alone_the_open_journey_meets_no_competition(login: Login, competing: Path) -> None:
    marketer = login("marketer")
    alone = simulate(marketer, "second-offer", **SMALL, alone=True).get_json()
    assert alone["options"]["alone"] is True
    assert alone["competition"]["journeys"] == [] and alone["competition"]["reasons"] == []
    assert alone["competition"]["alone_totals"] is None
    assert not any(p["reason"].startswith("cap:") for p in alone["policy"])
    assert alone["totals"]["sent"] > 0
    together = simulate(marketer, "second-offer", **SMALL).get_json()
    assert alone["totals"]["sent"] > together["totals"]["sent"]
    # The same contacts and events: alone is what the comparison with the others ran.
    assert alone["totals"] == together["competition"]["alone_totals"]


@pytest.mark.slow  # starts a process
def test_with_no_database_state_the_other_journeys_are_the_files_like_the_cli(
    login: Login, state: Parcours, competing: Path, tmp_path: Path
) -> None:
    with state.engine.begin() as conn:
        conn.execute(update(models.ScenarioRecord).values(current_version_id=None))
        conn.execute(delete(models.ScenarioVersion))
        conn.execute(delete(models.ScenarioRecord))
    data = simulate(login("marketer"), "second-offer", **SMALL).get_json()
    journeys = {j["id"]: j for j in data["competition"]["journeys"]}
    assert sorted(journeys) == ["first-offer", "paused-offer"]
    assert {j["source"] for j in journeys.values()} == {"file"}
    assert data["competition"]["left_out"] == []
    args = ["simulate", str(competing), "--generate", "60", "--days", "7", "--seed", "7"]
    result = CliRunner().invoke(cli, [*args, "--start", START, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["entries"] == {
        "second-offer": data["totals"]["entered"],
        **{k: j["entered"] for k, j in journeys.items()},
    }
    assert sum(report["sends"]["email"].values()) == data["totals"]["sent"] + sum(
        j["sent"] for j in journeys.values()
    )


def test_the_form_offers_to_run_the_journey_alone(login: Login) -> None:
    html = login("viewer").get("/scenarios/cart-abandonment/simulate").get_data(as_text=True)
    assert 'name="alone"' in html and "This journey alone" in html
    french = login("viewer").get("/scenarios/cart-abandonment/simulate?lang=fr")
    assert "Ce parcours seul" in french.get_data(as_text=True)
