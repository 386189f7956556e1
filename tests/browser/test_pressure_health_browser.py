"""The Pressure page in a real browser with a raised health signal: the card, its advice, the
tightened caps and the trend chart drawn (screenshot `var/screenshots/pressure-health.png`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import Site
from tests.web.test_pressure_health import declare_health, seed

pytestmark = pytest.mark.browser


def test_pressure_page_shows_a_raised_signal(page_for: Callable[[str], Any], site: Site) -> None:
    declare_health(site.workspace)
    seed(site.state.engine, site.state.clock.now())
    page = page_for("viewer")
    page.goto(site.url + "/pressure")
    card = page.locator('.healthcard[data-channel="email"]')
    assert "raised" in (card.get_attribute("class") or "")
    assert card.locator('[data-testid="tightened"]').is_visible()
    assert "Unsubscribes are rising" in card.inner_text()
    page.wait_for_function(
        "() => { const c = document.getElementById('chart-health-email');"
        " return c && c.width > 0 && window.Chart && Chart.getChart(c); }"
    )
    card.scroll_into_view_if_needed()
    site.shot(page, "pressure-health")
