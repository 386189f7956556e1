"""Who a journey is for, end to end in a real browser: a marketer builds a segment on the
Segments page, then a journey that starts when a contact enters it, and publishes it, without
typing YAML; the worker then builds the new segment and its members enter the journey."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from engine.store.models import Contact, Enrollment
from engine.worker.runner import Worker
from tests.browser.conftest import Site
from tests.browser.test_entry_browser import _email_step_and_goal, _saved, _simulate_and_publish
from tests.browser.test_entry_browser import _save as save_journey
from tests.browser.test_segments_browser import _count_is
from tests.browser.test_segments_browser import _save as save_segment
from tests.web.test_segments_page import seed

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]


def test_build_a_segment_then_a_journey_on_it_and_publish(page_for: PageFor, site: Site) -> None:
    seed(site.state.engine, site.workspace, datetime.now(UTC))
    page = page_for("marketer")

    # the segment: two orders or more in 90 days
    page.click('[data-testid="nav-segments"]')
    page.click('[data-testid="new-segment"]')
    page.fill('[data-testid="field-name"]', "Frequent buyers")
    page.fill('[data-testid="field-id"]', "frequent-buyers")
    page.click('[data-testid="create"]')
    page.wait_for_url("**/segments/frequent-buyers")
    rule = '[data-testid="rule-condition-0'
    page.select_option(rule + '-kind"]', "event")
    page.fill(rule + '-event"]', "order_placed")
    page.fill(rule + '-within"]', "90d")
    page.select_option(rule + '-measure"]', "count")
    page.fill(rule + '-value"]', "2")
    _count_is(page, "3 contacts match now")
    sample = page.eval_on_selector_all('[data-testid="live-sample"] a', "as => as.map(a => a.text)")
    save_segment(page)
    assert (site.workspace / "segments" / "frequent-buyers.yaml").exists()

    # the journey: starts when a contact enters the new segment
    page.goto(site.url + "/scenarios")
    page.click('[data-testid="new-scenario"]')
    page.fill('[data-testid="field-name"]', "Frequent buyers thanks")
    page.fill('[data-testid="field-id"]', "frequent-thanks")
    page.check('[data-testid="start-segment"] input[type=radio]')
    options = page.eval_on_selector_all(
        '[data-testid="field-segment"] option', "os => os.map(o => o.value)"
    )
    assert "frequent-buyers" in options  # the segment just saved is offered
    page.select_option('[data-testid="field-segment"]', "frequent-buyers")
    page.click('[data-testid="create"]')
    page.wait_for_url("**/frequent-thanks/edit")
    assert "enters frequent-buyers" in page.inner_text('[data-testid="entry-block"]')
    _email_step_and_goal(page)
    save_journey(page)
    data = _saved(site, "frequent-thanks")
    assert data["triggers"] == [{"segment_entered": "frequent-buyers"}]
    _simulate_and_publish(page, site, "frequent-thanks")
    site.shot(page, "audience-published")

    # the worker builds the new segment; its members enter the published journey
    Worker(site.state.engine, site.state.settings).run_once()
    with site.state.engine.connect() as conn:
        entered = conn.execute(
            select(Contact.external_id)
            .join(Enrollment, Enrollment.contact_id == Contact.id)
            .where(Enrollment.scenario_id == "frequent-thanks")
            .order_by(Contact.external_id)
        ).scalars()
        assert list(entered) == sorted(sample)
