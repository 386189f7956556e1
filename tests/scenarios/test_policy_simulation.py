"""The examples under their workspace policy: every rule of policy.yaml removes some messages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from engine.insights.simulate import generate_contacts, generate_events, simulate
from engine.policy.loader import load_policy_file
from engine.spec.lint import scenario_files
from engine.spec.loader import load_scenario_file

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
START = datetime(2026, 3, 2, tzinfo=UTC)


def test_examples_under_the_policy_meet_every_rule() -> None:
    files = scenario_files([SCENARIOS])
    contacts = generate_contacts(400, seed=11)
    events = generate_events([load_scenario_file(f) for f in files], contacts, START, 31, seed=11)
    policy = load_policy_file(SCENARIOS / "policy.yaml")
    report = simulate(files, contacts, events, START, 31, policy=policy)
    families = {reason.split(":")[0] for reason in report.decisions}
    assert {
        "allowed",
        "consent",
        "address",
        "suppression",
        "quiet",
        "spacing",
        "cap",
        "pressure",
    } <= families
    # every decision other than an allowed send removed or delayed a message for a reason
    assert report.decisions["allowed"] > 10 * sum(
        n for r, n in report.decisions.items() if r.startswith("cap:")
    )
    # the policy never lets an SMS go out at night or a cap be exceeded: see the property test;
    # here, the counts by reason are what a marketer reads before going live
    assert report.total_sends("sms") > 0 and report.total_sends("email") > 0
