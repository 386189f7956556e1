"""Shared fixtures for the scenario-language tests: the cart-abandonment example and its templates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.spec.loader import lint_text
from engine.spec.problems import Problem

CART_YAML = """\
# Cart abandonment: remind by email, then SMS; an order at any time converts.
format_version: 1
id: cart-abandonment
name: Cart abandonment
objective: basket
priority: 60
topic: promotions
triggers:
  - event: cart_abandoned
    where:
      - property: total
        op: gte
        value: 20
entry:
  reentry: cooldown
  cooldown: 7d
goal:
  event: order_placed
  within: 7d
exit_on:
  - event: unsubscribed
steps:
  wait-1h:
    type: wait
    duration: 1h
    next: reminder
  reminder:
    type: send
    channel: email
    template: cart-reminder
    next: wait-click
  wait-click:
    type: wait_event
    event: email_clicked
    timeout: 2d
    on_event: done
    on_timeout: sms
  sms:
    type: send
    channel: sms
    content:
      text: "{{ contact.first_name }}, your cart is waiting: {{ event.cart_url }}"
    next: done
  done:
    type: exit
    reason: finished
"""

CART_TEMPLATE = {
    "subject": "{{ contact.first_name }}, you left something behind\n",
    "text": "Hello {{ contact.first_name }},\n\nYour cart is waiting: {{ event.cart_url }}\n",
    "html": '<p>Hello {{ contact.first_name }},</p>\n<p><a href="{{ event.cart_url }}">Your cart</a></p>\n',
}
EXTENSIONS = {"html": ".html"}


def write_templates(root: Path, templates: dict[str, dict[str, str]]) -> None:
    """Write template folders (`<root>/templates/<name>/<part>.txt|.html`)."""
    for name, parts in templates.items():
        folder = root / "templates" / name
        folder.mkdir(parents=True, exist_ok=True)
        for part, source in parts.items():
            (folder / f"{part}{EXTENSIONS.get(part, '.txt')}").write_text(source, encoding="utf-8")


@pytest.fixture
def templates_writer() -> Callable[[Path, dict[str, dict[str, str]]], None]:
    """`write(root, {name: {part: source}})` creates template folders under root/templates."""
    return write_templates


@pytest.fixture
def cart_dir(tmp_path: Path) -> Path:
    """A scenarios folder holding cart-abandonment.yaml and its cart-reminder template."""
    (tmp_path / "cart-abandonment.yaml").write_text(CART_YAML, encoding="utf-8")
    write_templates(tmp_path, {"cart-reminder": CART_TEMPLATE})
    return tmp_path


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


@pytest.fixture(scope="session")
def line_of() -> Callable[[str, str], int]:
    """`line_of(text, needle)`: 1-based number of the first line containing `needle`."""
    return _line_of


@pytest.fixture(scope="session")
def cart_yaml() -> str:
    """The cart-abandonment example scenario text."""
    return CART_YAML


@pytest.fixture
def cart_template() -> dict[str, str]:
    """The parts of the cart-reminder email template."""
    return dict(CART_TEMPLATE)


# a manual scenario 's' in five lines: what a test writes after it starts at line 6
HEAD = "format_version: 1\nid: s\nname: S\nobjective: other\ntriggers: [{manual: true}]\n"


def problems_of(body: str, head: str = HEAD) -> list[Problem]:
    """The problems of `head + body`, linted as s.yaml without templates."""
    return lint_text(head + body, "s.yaml", template_sources={})[1]
