"""Blackout dates in the designer's words: the rule with the reason the policy gives it."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, g

from designer.insights import reason_label

BLACKOUT = """
blackout:
  - {id: year-end, dates: ["2026-12-24"], channels: [marketing], reason: end-of-year freeze}
  - {id: sale, dates: ["2026-06-24"], channels: [sms]}
"""


def test_a_blackout_reason_is_shown_with_its_rule(designer_app: Flask, workspace: Path) -> None:
    policy = workspace / "policy.yaml"
    policy.write_text(policy.read_text(encoding="utf-8") + BLACKOUT, encoding="utf-8")
    with designer_app.test_request_context("/"):
        assert reason_label("blackout:year-end") == "Blackout dates year-end: end-of-year freeze"
        assert reason_label("blackout:sale") == "Blackout dates sale"
        expired = reason_label("blackout:sale:expired")
        assert expired == "Blackout dates sale, waited too long"
        g.lang = "fr"
        assert reason_label("blackout:year-end") == "Dates bloquées year-end : end-of-year freeze"
