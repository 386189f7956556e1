"""The Segments page in a real browser: a marketer creates a segment, builds its condition with
the builder while the live count follows, saves it (the file is the expected YAML and lints),
then changes one value and the file's diff is that line alone."""

from __future__ import annotations

import difflib
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Site
from tests.web.test_segments_page import seed

pytestmark = pytest.mark.browser

PageFor = Callable[[str], Any]
PARCOURS = Path(sys.executable).parent / "parcours"
EXPECTED = """\
format_version: 1
id: loyal-subscribers
name: Loyal subscribers
condition:
  all:
    - event: order_placed
      within: 90d
      count:
        op: gte
        value: 2
    - segment: newsletter-subscribers
"""


def _count_is(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => document.querySelector('[data-testid=live-count]').textContent.trim() === t "
        "&& !document.querySelector('[data-testid=live-count]').classList.contains('counting')",
        arg=text,
    )


def _save(page: Any) -> None:
    page.click('[data-testid="save"]')
    page.wait_for_function(
        "() => /^Saved/.test(document.querySelector('[data-testid=save-status]').textContent)"
    )


def test_build_a_segment_with_the_builder_watch_the_count_and_save(
    page_for: PageFor, site: Site
) -> None:
    seed(site.state.engine, site.workspace, datetime.now(UTC))
    page = page_for("marketer")
    page.click('[data-testid="nav-segments"]')
    page.wait_for_selector('[data-testid="segment-newsletter-subscribers"]')
    assert page.inner_text('[data-testid="count-newsletter-subscribers"]').startswith("4")
    site.shot(page, "segments-list")

    page.click('[data-testid="new-segment"]')
    page.fill('[data-testid="field-name"]', "Loyal subscribers")
    page.fill('[data-testid="field-id"]', "loyal-subscribers")
    page.click('[data-testid="create"]')
    page.wait_for_url("**/segments/loyal-subscribers")
    _count_is(page, "5 contacts match now")  # it starts as everyone with an email address

    rule = '[data-testid="rule-condition-0'
    page.select_option(rule + '-kind"]', "event")
    page.fill(rule + '-event"]', "order_placed")
    page.fill(rule + '-within"]', "90d")
    page.select_option(rule + '-measure"]', "count")
    page.fill(rule + '-value"]', "2")
    _count_is(page, "3 contacts match now")  # c1, c2, c5
    page.click('[data-testid="add-rule-condition"]')
    page.select_option('[data-testid="rule-condition-1-kind"]', "segment")
    options = page.eval_on_selector_all(
        '[data-testid="rule-condition-1-segment"] option', "os => os.map(o => o.value)"
    )
    assert "newsletter-subscribers" in options and "loyal-subscribers" not in options
    page.select_option('[data-testid="rule-condition-1-segment"]', "newsletter-subscribers")
    _count_is(page, "2 contacts match now")  # c1 and c5 are also subscribers
    sample = page.eval_on_selector_all(
        '[data-testid="live-sample"] a', "as => as.map(a => [a.textContent, a.pathname])"
    )
    assert sample == [["c1", "/contacts/c1"], ["c5", "/contacts/c5"]]
    assert "- segment: newsletter-subscribers" in page.inner_text('[data-testid="yaml-text"]')
    site.shot(page, "segment-edit")

    _save(page)
    assert "worker updates the membership within a minute" in page.inner_text(
        '[data-testid="save-status"]'
    )
    path = site.workspace / "segments" / "loyal-subscribers.yaml"
    assert path.read_text() == EXPECTED
    linted = subprocess.run(
        [str(PARCOURS), "lint", str(site.workspace)], capture_output=True, text=True
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr

    page.fill(rule + '-value"]', "3")
    _count_is(page, "2 contacts match now")
    _save(page)
    diff = [
        line
        for line in difflib.unified_diff(
            EXPECTED.splitlines(), path.read_text().splitlines(), lineterm="", n=0
        )
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff == ["-        value: 2", "+        value: 3"]

    page.click('[data-testid="live-sample"] a >> text=c5')
    page.wait_for_url("**/contacts/c5")
    block = page.inner_text('[data-testid="segments"]')
    assert "Newsletter subscribers" in block and "since" in block
    site.shot(page, "contact-segments")


def test_a_viewer_sees_the_segment_read_only(page_for: PageFor, site: Site) -> None:
    page = page_for("viewer")
    page.goto(site.url + "/segments/premium")
    page.wait_for_selector('[data-testid="rule-condition-0"]')
    assert page.locator('[data-testid="save"]').count() == 0
    assert page.is_disabled('[data-testid="rule-condition-0-kind"]')
    assert page.inner_text('[data-testid="live-count"]') in ("…", "0 contacts match now")
    page.goto(site.url + "/segments/vip-list")
    assert "parcours segment import vip-list" in page.inner_text('[data-testid="import-command"]')
    site.shot(page, "segment-manual")


def test_the_inspector_edits_a_condition_with_the_shared_builder(
    page_for: PageFor, site: Site
) -> None:
    path = site.workspace / "cart-abandonment.yaml"
    before = path.read_text()
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/cart-abandonment/edit")
    page.click('[data-testid="node-still-no-order"] .pc-title')
    rule = '[data-testid="rule-if-0'
    assert page.input_value(rule + '-kind"]') == "event"
    assert page.input_value(rule + '-measure"]') == "count"
    assert page.input_value(rule + '-within"]') == ""  # counted since the entry
    kinds = page.eval_on_selector_all(rule + '-kind"] option', "os => os.map(o => o.value)")
    assert kinds == ["attribute", "tag", "event", "segment", "consent", "pressure"]
    page.fill(rule + '-value"]', "1")
    site.shot(page, "inspector-condition")
    page.click('[data-testid="save"]')
    page.wait_for_function(
        "() => /^Saved/.test(document.querySelector('[data-testid=save-status]').textContent)"
    )
    diff = [
        line
        for line in difflib.unified_diff(
            before.splitlines(), path.read_text().splitlines(), lineterm="", n=0
        )
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff == ["-        value: 0", "+        value: 1"]
