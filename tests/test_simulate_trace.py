"""`parcours simulate --trace FILE.jsonl`: every entry, send, decision and exit as a JSON line in
time order, so the cart-abandonment's one-hour wait and a blocked send's reason can be read off
the file."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    for key in list(__import__("os").environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios", scenarios)
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        "external_id,email,timezone,consent:email:*\n"
        "ann,ann@example.com,Europe/Paris,opted_in\n"
        "bob,bob@example.com,Europe/Paris,\n"  # no consent: the reminder is blocked
    )
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "contact": who,
                    "name": "cart_abandoned",
                    "properties": {"total": 80},
                    "occurred_at": "2026-03-03T09:00:00Z",
                    "event_key": f"cart-{who}",
                }
            )
            + "\n"
            for who in ("ann", "bob")
        )
    )
    out = tmp_path / "trace.jsonl"
    result = CliRunner().invoke(
        cli,
        ["simulate", str(scenarios / "cart-abandonment.yaml"), "--contacts", str(contacts),
         "--events", str(events), "--start", "2026-03-03T08:00:00Z", "--days", "1",
         "--trace", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "scenario cart-abandonment" in result.output  # the report is unchanged
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_trace_shows_the_send_an_hour_after_the_trigger(trace: list[dict[str, Any]]) -> None:
    entered = next(t for t in trace if t["kind"] == "entered" and t["contact"] == "ann")
    sent = next(t for t in trace if t["kind"] == "send" and t["contact"] == "ann")
    assert (
        entered["at"] == "2026-03-03T09:00:00+00:00" and entered["scenario"] == "cart-abandonment"
    )
    assert datetime.fromisoformat(sent["at"]) - datetime.fromisoformat(entered["at"]) == timedelta(
        hours=1
    )
    assert sent == {**sent, "step": "reminder-email", "channel": "email", "decision": "allow",
                    "reason": "allowed"}  # fmt: skip


def test_a_blocked_send_shows_its_reason_and_lines_are_in_time_order(
    trace: list[dict[str, Any]],
) -> None:
    blocked = [t for t in trace if t["kind"] == "decision" and t["contact"] == "bob"]
    assert blocked, trace
    assert blocked[0]["step"] == "reminder-email" and blocked[0]["channel"] == "email"
    assert blocked[0]["reason"].startswith("consent:promotions:")
    assert blocked[0]["decision"] in ("skip", "defer", "fallback")
    instants = [datetime.fromisoformat(t["at"]) for t in trace]
    assert instants == sorted(instants)
    assert not any(t["kind"] in ("step", "woken") for t in trace)
