"""The Programs pages, the journey page's report and the KPI API on a real database, with the
rollups filled by the worker from a real run of an example journey."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from designer import Parcours
from engine.store.models import KpiDaily
from engine.worker.versions import publish_dir
from tests.problems import field_of

DAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def filled(state: Parcours) -> Parcours:
    """Rollups for two days of win-back (a program's journey) and one row of another journey."""
    rows = [
        KpiDaily(scenario_id="win-back", day=DAY.date(), step_id="", channel="", arm="",
                 entries=120, conversions=9, revenue=1234.5),
        KpiDaily(scenario_id="win-back", day=DAY.date(), step_id="offer", channel="email",
                 arm="", sends=100, opens=40, clicks=12, cost=0.2),
        KpiDaily(scenario_id="cart-abandonment", day=DAY.date(), step_id="", channel="",
                 arm="", entries=7),
    ]  # fmt: skip
    with Session(state.engine) as session, session.begin():
        session.add_all(rows)
    return state


def test_programs_list_shows_every_program_with_its_panel_and_targets(
    login: Callable[[str], FlaskClient], filled: Parcours
) -> None:
    page = login("viewer").get("/programs").get_data(as_text=True)
    for program in ("basket-growth", "loyalty", "onboarding"):
        assert f'data-testid="program-{program}"' in page
    assert "Conversions" in page and "this month" in page


def test_program_page_reports_its_journeys_only_in_the_range(
    login: Callable[[str], FlaskClient], filled: Parcours
) -> None:
    viewer = login("viewer")
    page = viewer.get("/programs/loyalty?from=2026-03-01&to=2026-03-31").get_data(as_text=True)
    assert 'data-testid="program-name">Loyalty and win-back' in page
    assert 'data-testid="total-scenario-entries">120<' in page  # cart-abandonment's 7 left out
    assert 'data-testid="total-scenario-revenue">1,234.50<' in page
    assert "Days in Europe/Paris" in page
    french = viewer.get("/programs/loyalty?from=2026-03-01&to=2026-03-31&lang=fr")
    assert "1\u202f234,50" in french.get_data(as_text=True)  # the viewer's language
    outside = viewer.get("/programs/loyalty?from=2026-04-01&to=2026-04-30").get_data(as_text=True)
    assert 'data-testid="total-scenario-entries">0<' in outside
    assert viewer.get("/programs/nope").status_code == 404


def test_every_table_downloads_as_csv(
    login: Callable[[str], FlaskClient], filled: Parcours
) -> None:
    viewer = login("viewer")
    got = viewer.get("/programs/loyalty?from=2026-03-01&to=2026-03-31&format=csv&table=channel")
    assert got.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(got.get_data(as_text=True))))
    assert rows[0]["channel"] == "email" and rows[0]["sends"] == "100"
    journey = viewer.get("/scenarios/win-back/report.csv?from=2026-03-01&to=2026-03-31&table=day")
    rows = list(csv.DictReader(io.StringIO(journey.get_data(as_text=True))))
    assert rows[0]["day"] == "2026-03-02" and rows[-1]["day"] == "total"
    assert rows[-1]["conversions"] == "9"


def test_the_journey_page_has_its_report(
    login: Callable[[str], FlaskClient], filled: Parcours
) -> None:
    page = login("viewer").get("/scenarios/win-back?from=2026-03-01&to=2026-03-31")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'data-testid="journey-report"' in text
    assert 'data-testid="total-day-conversions">9<' in text


def test_live_counts_are_today_in_the_workspace_zone(
    login: Callable[[str], FlaskClient], filled: Parcours, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filled.clock, "now", lambda: DAY)
    body = login("viewer").get("/reports/live.json?program=loyalty").get_json()
    assert body["day"] == "2026-03-02"
    assert body["counts"]["entries"] == "120" and body["counts"]["sends"] == "100"


def test_the_api_reports_and_lists_programs(designer_app: Flask, filled: Parcours) -> None:
    api = designer_app.test_client()
    key = {"X-Api-Key": "k"}
    body = api.get("/api/reports?program=loyalty&by=channel", headers=key).get_json()
    assert body["timezone"] == "Europe/Paris"
    assert body["rows"][0]["channel"] == "email" and body["totals"]["opens"] == 40
    assert body["totals"]["conversion_rate"] == pytest.approx(9 / 100)
    listed = api.get("/api/programs", headers=key).get_json()["programs"]
    assert [p["id"] for p in listed] == ["basket-growth", "loyalty", "onboarding"]
    bad = api.get("/api/reports?from=March", headers=key)
    assert bad.status_code == 422 and field_of(bad) == "from"
    unknown = api.get("/api/reports?program=loyalti", headers=key)
    assert unknown.status_code == 404 and "did you mean 'loyalty'" in unknown.get_json()["detail"]
    assert api.get("/api/reports", headers={}).status_code == 401


def test_the_fixed_cost_of_the_published_version_counts_in_the_totals(
    login: Callable[[str], FlaskClient], state: Parcours, workspace: Path
) -> None:
    """win-back declares cost: {fixed: 250}; its published version is where the page reads it."""
    with Session(state.engine) as session, session.begin():
        publish_dir(session, workspace)
    page = login("viewer").get("/programs/loyalty?from=2026-03-01&to=2026-03-31")
    assert 'data-testid="total-scenario-cost">250.00<' in page.get_data(as_text=True)


def test_program_and_journey_pages_show_the_health_of_their_journeys(
    login: Callable[[str], FlaskClient], state: Parcours
) -> None:
    from datetime import timedelta

    from tests.health_seed import seed

    yesterday = state.clock.now() - timedelta(days=1)
    seed(state.engine, "cart-abandonment", 200, 20, yesterday)  # bounce rate 10%: raised
    seed(state.engine, "win-back", 300, 0, yesterday)
    viewer = login("viewer")
    basket = viewer.get("/programs/basket-growth").get_data(as_text=True)
    card = basket[basket.index('data-testid="pressure-health"') :]
    assert 'class="healthcard raised" data-channel="email"' in card
    assert "200 sends" in card and "Bounce rate" in card and "1 signal raised" in card
    assert "Bounces: clean the addresses before sending again." in card
    assert "static/health.js" in basket
    journey = viewer.get("/scenarios/win-back").get_data(as_text=True)
    card = journey[journey.index('data-testid="pressure-health"') :]
    assert 'class="healthcard" data-channel="email"' in card and "300 sends" in card
    assert "Healthy" in card and "static/health.js" in journey
    raised = viewer.get("/scenarios/cart-abandonment").get_data(as_text=True)
    assert 'class="healthcard raised" data-channel="email"' in raised
    french = viewer.get("/programs/basket-growth?lang=fr").get_data(as_text=True)
    assert "<h2>Santé</h2>" in french
