"""The experiment panel in a real browser: a marketer opens the win-back journey, reads the arms
(rates with interval bars, probability to be best, uplift, the decision), declares the winner
after the confirmation, and the panel then says which branch new entries take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import Site
from tests.web.test_experiments_page import seed

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]


def test_the_experiment_panel_and_declare_winner(page_for: PageFor, site: Site) -> None:
    seed(site.state.engine, site.workspace)
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/win-back")
    panel = page.locator('[data-testid="experiment-test"]')
    panel.wait_for()
    assert page.locator('[data-testid="rate-test-email-offer"]').inner_text() == "13.5%"
    best = page.locator('[data-testid="best-test-email-offer"]').inner_text()
    assert float(best.rstrip("%")) > 99
    assert "Uplift against the holdout" in page.locator('[data-testid="uplift-test"]').inner_text()
    assert panel.locator(".interval").count() == 3  # a bar per arm, the holdout's included
    site.shot(page, "experiment-panel")
    page.select_option('[data-testid="winner-arm-test"]', "email-offer")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('[data-testid="declare-test"]')
    page.wait_for_selector("text=email-offer was declared the winner")
    assert page.locator('[data-testid="declare-test"]').count() == 0
    assert "winner: email-offer" in (site.workspace / "win-back.yaml").read_text(encoding="utf-8")
    site.shot(page, "experiment-declared")
