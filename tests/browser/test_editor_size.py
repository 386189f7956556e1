"""A large journey opens whole in the editor: every step drawn, every connection laid out from
its output port to its target's input port."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Site

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from lint_size import generated

pytestmark = pytest.mark.browser

STEPS = 60
# each connection's path starts at its output port and ends at its target's input port
ENDS = """() => {
  const pre = document.querySelector('.drawflow').getBoundingClientRect();
  const zoom = window.ParcoursEditor ? (document.querySelector('.drawflow').style.transform.match(/scale\\(([^)]+)\\)/) || [0, 1])[1] : 1;
  const centre = el => { const r = el.getBoundingClientRect();
    return [(r.x + r.width / 2 - pre.x) / zoom, (r.y + r.height / 2 - pre.y) / zoom]; };
  return [...document.querySelectorAll('svg.connection')].map(svg => {
    const c = svg.classList, d = svg.querySelector('path').getAttribute('d') || '';
    const from = document.querySelector('#' + c[2].slice(9) + ' .' + c[3]);
    const into = document.querySelector('#' + c[1].slice(8) + ' .' + c[4]);
    const nums = (d.match(/-?[0-9.]+/g) || []).map(Number);
    return { d: d, start: nums.slice(0, 2), end: nums.slice(-2), from: centre(from), into: centre(into) };
  });
}"""


def test_a_large_journey_is_drawn_with_every_connection(
    page_for: Callable[[str], Any], site: Site
) -> None:
    text = generated("large-journey", STEPS, random.Random(3))
    (site.workspace / "large-journey.yaml").write_text(text, encoding="utf-8")
    edges = text.count("    next: s") + text.count("    then: s") + text.count("    else: s")
    page = page_for("marketer")
    page.goto(site.url + "/scenarios/large-journey/edit")
    page.wait_for_function(f"() => document.querySelectorAll('.drawflow-node').length === {STEPS}")
    connections = page.evaluate(ENDS)
    assert len(connections) == edges
    for c in connections:
        assert c["d"].strip().startswith("M"), c
        for got, want in ((c["start"], c["from"]), (c["end"], c["into"])):
            assert abs(got[0] - want[0]) < 2 and abs(got[1] - want[1]) < 2, c
