"""The Health card on a program's page and a journey's page, in a real browser: the charts are
drawn (the page's CSP allows health.js), a raised signal stands out, no console error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tests.browser.conftest import Site
from tests.health_seed import seed


def test_health_cards_on_the_program_and_journey_pages(
    page_for: Callable[[str], Any], site: Site
) -> None:
    yesterday = site.state.clock.now() - timedelta(days=1)
    seed(site.state.engine, "cart-abandonment", 200, 20, yesterday)  # bounce rate 10%: raised
    seed(site.state.engine, "win-back", 300, 0, yesterday)
    page = page_for("viewer")
    page.goto(site.url + "/programs/basket-growth")
    card = page.locator('[data-testid="pressure-health"] .healthcard[data-channel="email"]')
    assert "raised" in (card.get_attribute("class") or "")
    page.wait_for_function("document.getElementById('chart-health-email').width > 0")
    raised_row = card.locator("tr.raised").first
    assert "Bounce rate" in raised_row.inner_text()
    site.shot(page, "program-health")
    page.goto(site.url + "/scenarios/win-back")
    card = page.locator('[data-testid="pressure-health"] .healthcard[data-channel="email"]')
    assert "raised" not in (card.get_attribute("class") or "") and "Healthy" in card.inner_text()
    page.wait_for_function("document.getElementById('chart-health-email').width > 0")
    site.shot(page, "journey-health")
