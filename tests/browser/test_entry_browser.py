"""Who enters, in a real browser: a marketer builds a journey that starts when a contact enters a
segment, and one that starts on an event with a property filter, sets the entry rules, the
audience (with its live count) and the goal, then simulates and publishes them, without typing
any YAML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.audience.membership import rebuild
from engine.policy.consent import record_consent
from engine.spec.loader import lint_document
from engine.spec.segments import load_segments
from engine.spec.yamlio import parse_yaml
from engine.store.models import Contact
from tests.browser.conftest import Site

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]
SUBSCRIBERS = ("ana", "bo", "cy")  # opted in to the newsletter by email
OTHERS = ("dee", "ed")


def _seed(site: Site) -> None:
    """Five contacts, three of them newsletter subscribers, and the segment's stored members."""
    state, now = site.state, site.state.clock.now()
    segment = load_segments(site.workspace / "segments")["newsletter-subscribers"]
    assert segment.condition is not None
    with state.engine.begin() as conn:
        for name in SUBSCRIBERS + OTHERS:
            row = {"external_id": name, "email": f"{name}@example.com", "attributes": {}}
            contact_id = conn.execute(Contact.__table__.insert().values(**row)).inserted_primary_key
            if name in SUBSCRIBERS:
                record_consent(
                    conn, contact_id[0], "email", "newsletter", "opted_in", "operator", now,
                    policy=state.policy(),
                )  # fmt: skip
        rebuild(conn, "newsletter-subscribers", segment.condition, now)


def _new_journey(page: Any, site: Site, name: str, scenario_id: str) -> None:
    page.goto(site.url + "/scenarios")
    page.click('[data-testid="new-scenario"]')
    page.fill('[data-testid="field-name"]', name)
    page.fill('[data-testid="field-id"]', scenario_id)


def _entry_rules_and_audience(page: Any) -> None:
    """Re-entry after 30 days, audience: members of newsletter-subscribers (3 of 5 contacts)."""
    page.select_option('[data-testid="field-reentry"]', "cooldown")
    page.fill('[data-testid="field-cooldown"]', "30d")
    page.click('[data-testid="audience-mode-segment"]')
    page.select_option('[data-testid="field-audience-segment"]', "newsletter-subscribers")
    page.wait_for_function(
        "() => /^3 contacts match now/.test("
        "document.querySelector('[data-testid=audience-count]').textContent)"
    )
    # the entry block on the canvas says the same
    page.wait_for_function(
        "() => document.querySelector('[data-testid=entry-count]').textContent"
        ".startsWith('3 contacts')"
    )


def _email_step_and_goal(page: Any) -> None:
    page.dblclick('[data-testid="palette-send"]')
    page.wait_for_selector(".drawflow-node")
    page.select_option('[data-testid="field-channel"]', "email")
    page.click('[data-testid="field-content"] > .in-add')
    page.fill('[data-testid="field-content-subject"]', "A treat for you, {{ contact.first_name }}")
    page.click('[data-testid="field-content"] > .in-add')
    page.fill('[data-testid="field-content-text"]', "Thank you for being with us.")
    page.click('[data-testid="goal-block"]')
    page.check('[data-testid="field-goal-on"]')
    page.fill('[data-testid="field-goal-event"]', "order_placed")
    page.fill('[data-testid="field-goal-within"]', "14d")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=problems-toggle]').textContent === 'No problems'"
    )


def _save(page: Any) -> None:
    page.wait_for_selector('[data-testid="problem-entry"]', state="detached")
    page.click('[data-testid="save"]')
    page.wait_for_function(
        "() => document.querySelector('[data-testid=save-status]').dataset.state === 'saved'"
    )


def _saved(site: Site, scenario_id: str) -> dict[str, Any]:
    path = site.workspace / f"{scenario_id}.yaml"
    text = path.read_text()
    result = lint_document(text, str(path), site.workspace / "templates")
    assert [p.format() for p in result.problems if p.severity == "error"] == []
    data, _positions = parse_yaml(text, None)
    assert isinstance(data, dict)
    return data


def _simulate_and_publish(page: Any, site: Site, scenario_id: str) -> None:
    page.click('[data-testid="to-simulate"]')
    page.fill("input[name=contacts]", "60")
    page.fill("input[name=days]", "3")
    page.check("input[name=alone]")
    page.click("#simulate-run")
    page.wait_for_selector("#simulate-results:not([hidden])", timeout=120_000)
    assert page.eval_on_selector_all("#steps-table tbody tr", "rows => rows.length") >= 1
    page.goto(f"{site.url}/scenarios/{scenario_id}")
    page.click('[data-testid="publish"]')
    page.click('[data-testid="confirm-publish"]')
    page.wait_for_url(f"**/scenarios/{scenario_id}")
    assert page.inner_text('[data-testid="status"]').strip() == "live"


def test_a_journey_that_starts_when_a_contact_enters_a_segment(
    page_for: PageFor, site: Site
) -> None:
    _seed(site)
    page = page_for("marketer")
    _new_journey(page, site, "Premium welcome", "premium-welcome")
    page.check('[data-testid="start-segment"] input[type=radio]')
    page.select_option('[data-testid="field-segment"]', "premium")
    site.shot(page, "new-journey-start")
    page.click('[data-testid="create"]')
    page.wait_for_url("**/premium-welcome/edit")

    block = page.locator('[data-testid="entry-block"]')
    assert "enters premium" in block.inner_text()
    block.click()
    assert page.input_value('[data-testid="field-trigger-0-kind"]') == "segment_entered"
    assert page.input_value('[data-testid="field-trigger-0-segment"]') == "premium"
    _entry_rules_and_audience(page)
    page.select_option('[data-testid="field-topic"]', "newsletter")  # a topic the policy knows
    site.shot(page, "editor-entry-panel")
    _email_step_and_goal(page)
    site.shot(page, "editor-goal-panel")
    _save(page)

    data = _saved(site, "premium-welcome")
    assert data["triggers"] == [{"segment_entered": "premium"}]
    assert data["entry"] == {"reentry": "cooldown", "cooldown": "30d"}
    assert data["audience"] == {"segment": "newsletter-subscribers"}
    assert data["goal"] == {"event": "order_placed", "within": "14d"}
    assert data["topic"] == "newsletter" and "kind" not in data  # marketing, the default
    (step,) = data["steps"].values()
    assert step["type"] == "send" and step["channel"] == "email"
    _simulate_and_publish(page, site, "premium-welcome")


def test_a_journey_that_starts_on_an_event_with_a_filter(page_for: PageFor, site: Site) -> None:
    _seed(site)
    page = page_for("marketer")
    _new_journey(page, site, "Big order thanks", "big-order-thanks")
    page.check('[data-testid="start-event"] input[type=radio]')
    page.fill('[data-testid="field-event"]', "order_placed")
    page.click('[data-testid="create"]')
    page.wait_for_url("**/big-order-thanks/edit")

    page.click('[data-testid="entry-block"]')
    assert page.input_value('[data-testid="field-trigger-0-event"]') == "order_placed"
    filters = '[data-testid="field-trigger-0-where"]'
    page.click(f"{filters} > .in-add")
    page.fill(f"{filters} input[placeholder=property]", "total")
    page.select_option(f"{filters} .in-rule select", "gte")
    page.fill(f"{filters} .in-rule input:not([placeholder=property])", "50")
    _entry_rules_and_audience(page)
    # a second trigger, a weekly schedule, then removed again: undo brings it back
    page.click('[data-testid="add-trigger"]')
    page.select_option('[data-testid="field-trigger-1-kind"]', "schedule")
    page.select_option('[data-testid="field-trigger-1-frequency"]', "week")
    page.select_option('[data-testid="field-trigger-1-weekday"]', "fri")
    page.fill('[data-testid="field-trigger-1-at"]', "10:30")
    page.select_option('[data-testid="field-trigger-1-timezone"]', "Europe/Paris")
    assert page.input_value('[data-testid="field-trigger-1-schedule"]') == "30 10 * * fri"
    assert "every week" in page.inner_text('[data-testid="entry-block"]')
    page.click('[data-testid="remove-trigger-1"]')
    page.click('[data-testid="undo"]')
    page.wait_for_selector('[data-testid="trigger-1"]')
    page.click('[data-testid="remove-trigger-1"]')
    page.select_option('[data-testid="field-topic"]', "__other")  # one the policy does not list
    page.fill('[data-testid="field-topic-other"]', "big-orders")
    page.select_option('[data-testid="field-kind"]', "transactional")
    site.shot(page, "editor-entry-event")
    _email_step_and_goal(page)
    _save(page)

    data = _saved(site, "big-order-thanks")
    assert data["triggers"] == [
        {"event": "order_placed", "where": [{"property": "total", "op": "gte", "value": 50}]}
    ]
    assert data["entry"] == {"reentry": "cooldown", "cooldown": "30d"}
    assert data["audience"] == {"segment": "newsletter-subscribers"}
    assert data["topic"] == "big-orders" and data["kind"] == "transactional"
    _simulate_and_publish(page, site, "big-order-thanks")


def test_a_problem_shows_on_its_field_and_on_the_block(page_for: PageFor, site: Site) -> None:
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/cart-abandonment/edit")
    page.click('[data-testid="entry-block"]')
    page.fill('[data-testid="field-cooldown"]', "7 days")
    note = page.wait_for_selector('[data-testid="problem-at-entry.cooldown"]')
    assert "duration" in note.inner_text()
    page.wait_for_selector('[data-testid="problem-entry"]')  # flagged on the block too
    site.shot(page, "editor-entry-problem")
    page.fill('[data-testid="field-cooldown"]', "7d")
    page.wait_for_selector('[data-testid="problem-at-entry.cooldown"]', state="detached")
