"""The Programs pages in a real browser: the list, a program's page with its charts drawn, the
live counts filled by the polled endpoint, the date range applied, and the journey report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session

from engine.store.models import KpiDaily
from tests.browser.conftest import Site

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]


def _fill(site: Site) -> None:
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Paris")).date()
    rows = []
    for back in range(10):
        day = today - timedelta(days=back)
        rows += [
            KpiDaily(scenario_id="win-back", day=day, step_id="", channel="", arm="",
                     entries=100 + back, conversions=5 + back % 3, revenue=400.0 + 10 * back),
            KpiDaily(scenario_id="win-back", day=day, step_id="miss-you", channel="email",
                     arm="", sends=90, opens=30, clicks=9, cost=0.18),
            KpiDaily(scenario_id="birthday", day=day, step_id="greeting", channel="sms",
                     arm="", sends=20, cost=1.0),
        ]  # fmt: skip
    with Session(site.state.engine) as session, session.begin():
        session.add_all(rows)


def test_open_a_program_page_with_its_charts_and_live_counts(page_for: PageFor, site: Site) -> None:
    _fill(site)
    page = page_for("viewer")
    page.click('[data-testid="nav-programs"]')
    page.wait_for_selector('[data-testid="program-loyalty"]')
    site.shot(page, "programs")
    page.click('[data-testid="program-loyalty"] a >> nth=0')
    page.wait_for_selector('[data-testid="program-name"]')
    # the polled endpoint fills today's counts (they start as a dash)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=live-entries]').textContent.trim() === '100'"
    )
    assert page.text_content('[data-testid="live-sends"]').strip() == "110"
    drawn = page.evaluate(
        "() => ['kpi-daily-chart', 'kpi-sends-chart'].map(id => !!window.Chart.getChart(id))"
    )
    assert drawn == [True, True]
    assert page.text_content('[data-testid="total-scenario-entries"]').strip() == "1,045"
    site.shot(page, "program")
    # a narrower range: the last two days only
    page.fill('[data-testid="kpi-from"]', page.input_value('[data-testid="kpi-to"]'))
    page.click('[data-testid="kpi-range"] button')
    page.wait_for_selector('[data-testid="total-scenario-entries"]:text-is("100")')


def test_the_journey_page_shows_its_report(page_for: PageFor, site: Site) -> None:
    _fill(site)
    page = page_for("viewer")
    page.goto(site.url + "/scenarios/win-back")
    page.wait_for_selector('[data-testid="journey-report"]')
    page.wait_for_function(
        "() => document.querySelector('[data-testid=live-conversions]').textContent.trim() === '5'"
    )
    assert page.evaluate("() => !!window.Chart.getChart('kpi-daily-chart')")
    site.shot(page, "journey-report")
