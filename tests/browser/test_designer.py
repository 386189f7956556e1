"""The designer in a real browser: draw a journey from an empty canvas, edit an example with a
one-line diff, publish and watch live counts move; screenshots of the main pages."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.insights.simulate import generate_contacts, simulate
from engine.spec.loader import lint_document
from engine.spec.yamlio import parse_yaml
from engine.worker.runner import Worker
from tests.browser.conftest import Site

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]


def _drop(page: Any, step_type: str, x: int, y: int) -> str:
    """Drag a step type from the palette onto the canvas; the new step's id."""
    before = set(page.eval_on_selector_all(".drawflow-node", "ns => ns.map(n => n.dataset.stepId)"))
    page.drag_and_drop(
        f'[data-testid="palette-{step_type}"]',
        '[data-testid="canvas"]',
        target_position={"x": x, "y": y},
    )
    page.wait_for_function(
        "n => document.querySelectorAll('.drawflow-node').length > n", arg=len(before)
    )
    after = page.eval_on_selector_all(".drawflow-node", "ns => ns.map(n => n.dataset.stepId)")
    (new,) = set(after) - before
    return str(new)


def _connect(page: Any, port: str, target: str) -> None:
    """Drag from an output port to a step's input, as a user does."""
    src = page.locator(f'[data-testid="{port}"]').bounding_box()
    dst = page.locator(f'[data-testid="in-{target}"]').bounding_box()
    page.mouse.move(src["x"] + src["width"] / 2, src["y"] + src["height"] / 2)
    page.mouse.down()
    page.mouse.move(dst["x"] + 20, dst["y"] + 10, steps=8)
    page.mouse.move(dst["x"] + dst["width"] / 2, dst["y"] + dst["height"] / 2, steps=3)
    page.mouse.up()


def _select(page: Any, step: str) -> None:
    page.click(f'[data-testid="node-{step}"] .pc-title')


def _save(page: Any) -> None:
    page.click('[data-testid="save"]')
    page.wait_for_function(
        "() => /^(Saved|Enregistré)/i.test(document.querySelector('[data-testid=save-status]')"
        ".textContent.trim())"
    )


def test_draw_a_journey_from_an_empty_canvas(page_for: PageFor, site: Site) -> None:
    page = page_for("marketer")
    page.click('[data-testid="new-scenario"]')
    page.fill('[data-testid="field-name"]', "Spring promo")
    page.fill('[data-testid="field-id"]', "spring-promo")
    page.click('[data-testid="create"]')
    page.wait_for_url("**/spring-promo/edit")
    assert page.locator('[data-testid="empty-hint"]').is_visible()

    send = _drop(page, "send", 260, 220)
    wait = _drop(page, "wait", 620, 260)
    _connect(page, f"port-{send}-next", wait)
    # A send needs a channel and content, a wait a duration: the canvas says so on the steps.
    page.wait_for_selector(f'[data-testid="problem-{send}"]')
    assert send in page.inner_text('[data-testid="problems"]')

    _select(page, send)
    page.select_option('[data-testid="field-channel"]', "email")
    page.click('[data-testid="field-content"] > .in-add')
    page.fill('[data-testid="field-content-subject"]', "Spring is here, {{ contact.first_name }}")
    page.click('[data-testid="field-content"] > .in-add')
    page.fill('[data-testid="field-content-text"]', "Our spring offers are waiting for you.")
    _select(page, wait)
    page.fill('[data-testid="field-duration"]', "2d")
    page.wait_for_selector(f'[data-testid="problem-{send}"]', state="detached")

    # The YAML tab: start the journey on an event instead of manual entry.
    page.click('[data-testid="tab-yaml"]')
    text = page.input_value('[data-testid="yaml-text"]')
    assert f"{send}:" in text and f"next: {wait}" in text and "duration: 2d" in text
    page.fill('[data-testid="yaml-text"]', text.replace("- manual: true", "- event: spring_visit"))
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=problems]').textContent.includes('yaml')"
    )
    site.shot(page, "editor-new-journey")
    _save(page)

    path = site.workspace / "spring-promo.yaml"
    saved = path.read_text()
    assert "event: spring_visit" in saved
    result = lint_document(saved, str(path), site.workspace / "templates")
    assert [p.format() for p in result.problems if p.severity == "error"] == []

    # It simulates as drawn: everyone who visits gets the email, then waits two days.
    start = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    contacts = generate_contacts(40, seed=3)
    events = [
        {"contact": c["external_id"], "name": "spring_visit", "occurred_at": start.isoformat()}
        for c in contacts
    ]
    report = simulate([path], contacts, events, start, days=3)
    entered = report.entries.get("spring-promo", 0)
    assert entered > 0
    assert report.total_sends("email") == report.steps["spring-promo"][send]
    assert report.steps["spring-promo"][wait] == report.steps["spring-promo"][send]


def _git(cwd: Any, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
        env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(cwd)},
    )  # fmt: skip
    return done.stdout


def test_changing_one_wait_is_a_one_line_diff(page_for: PageFor, site: Site) -> None:
    _git(site.workspace, "init", "-q")
    _git(site.workspace, "add", ".")
    _git(site.workspace, "commit", "-qm", "examples")
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/cart-abandonment/edit")
    page.wait_for_selector(".drawflow-node")
    site.shot(page, "editor-cart-abandonment")
    data, _positions = parse_yaml((site.workspace / "cart-abandonment.yaml").read_text(), None)
    steps = data["steps"]
    waits = [step_id for step_id, step in steps.items() if step["type"] == "wait"]
    assert waits, "the example has a wait step"
    _select(page, waits[0])
    old = page.input_value('[data-testid="field-duration"]')
    page.fill('[data-testid="field-duration"]', "90m" if old != "90m" else "2h")
    _save(page)
    numstat = _git(site.workspace, "diff", "--numstat").split()
    assert numstat == ["1", "1", "cart-abandonment.yaml"]


def _api(site: Site, method: str, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        site.url + path,
        method=method,
        data=json.dumps(body).encode(),
        headers={"X-Api-Key": "browser-key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def test_publish_then_live_counts_move(page_for: PageFor, site: Site) -> None:
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/welcome-series")
    page.click('[data-testid="publish"]')
    assert "+id: welcome-series" in page.inner_text('[data-testid="diff"]')
    site.shot(page, "publish")
    page.click('[data-testid="confirm-publish"]')
    page.wait_for_url("**/scenarios/welcome-series")
    assert page.inner_text('[data-testid="status"]').strip() == "live"
    assert page.inner_text('[data-testid="total-active"]').strip() == "0"

    for i in range(3):
        assert _api(site, "PUT", f"/api/contacts/w{i}", {"email": f"w{i}@example.com"}) in (
            200,
            201,
        )
        assert _api(site, "POST", "/api/events", {"contact": f"w{i}", "name": "signed_up"}) in (
            200,
            201,
            202,
        )
    now = site.state.clock.now() + timedelta(seconds=1)
    Worker(site.state.engine, site.state.settings).run_once(now)

    page.reload()
    assert page.inner_text('[data-testid="total-active"]').strip() == "3"
    waiting = page.eval_on_selector_all(
        "[data-testid^=waiting-]", "cells => cells.map(c => Number(c.textContent))"
    )
    assert sum(waiting) == 3
    page.wait_for_selector("[data-testid^=count-]")  # counts drawn on the canvas
    site.shot(page, "live-view")
    page.goto(site.url + "/scenarios")
    assert page.inner_text('[data-testid="active-welcome-series"]').strip() == "3"
    site.shot(page, "journeys")
    page.goto(site.url + "/contacts/w1")
    site.shot(page, "contact")
    page.goto(site.url + "/pressure")
    page.wait_for_selector("canvas")
    site.shot(page, "pressure")


def test_viewer_sees_a_read_only_canvas_in_french(page_for: PageFor, site: Site) -> None:
    page = page_for("viewer")
    page.goto(site.url + "/scenarios/birthday/edit?lang=fr")
    page.wait_for_selector(".drawflow-node")
    assert (
        page.locator('[data-testid="save"]').count() == 0
        or page.locator('[data-testid="save"]').is_disabled()
    )
    # the palette is only a legend: nothing can be dragged from it
    assert page.get_attribute('[data-testid="palette-wait"]', "draggable") in (None, "false")
    assert "Parcours clients" in page.inner_text("header")
    site.shot(page, "editor-viewer-fr")


def test_simulate_and_edit_a_template_in_the_browser(page_for: PageFor, site: Site) -> None:
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/cart-abandonment/simulate")
    page.fill("input[name=contacts]", "80")
    page.fill("input[name=days]", "3")
    page.click("#simulate-run")
    page.wait_for_selector("#simulate-results:not([hidden])", timeout=120_000)
    rows = page.eval_on_selector_all("#steps-table tbody tr", "rows => rows.length")
    assert rows >= 4  # one row per step of the journey
    page.wait_for_selector("#sends-chart")
    # With the other journeys of the workspace by default, and what they took from this one.
    rivals = page.eval_on_selector_all("#rivals-table tbody tr", "rows => rows.length")
    assert rivals == 6  # the six other examples, never published: run from their files
    assert page.is_visible("#lost-table") and "alone" in page.inner_text("#competition-note")
    site.shot(page, "simulate")
    page.check("input[name=alone]")
    page.click("#simulate-run")
    page.wait_for_function(
        "() => document.getElementById('competition-tables').hidden"
        " && document.getElementById('competition-note').textContent.includes('ran alone')",
        timeout=120_000,
    )

    page.goto(site.url + "/templates/welcome")
    page.wait_for_selector('[data-testid="part-subject"] textarea')
    page.fill('[data-testid="part-subject"] textarea', "Bienvenue {{ contact.first_name }} !")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=preview]').textContent.includes('Bienvenue')"
    )
    page.click('[data-testid="save-template"]')
    page.wait_for_selector("#tpl-status.ok")  # the server answered: saved
    site.shot(page, "template")
    saved = (site.workspace / "templates" / "welcome" / "subject.txt").read_text()
    assert saved.strip() == "Bienvenue {{ contact.first_name }} !"
