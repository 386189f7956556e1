"""The gate's rules, one by one, on hand-made contact data (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.policy.base import SendRequest
from engine.policy.gate import ContactPolicy, PastSend, PolicyGate, quiet_until
from engine.policy.loader import lint_policy_text
from engine.policy.model import Policy
from engine.runtime.state import ContactView

POLICY = """\
format_version: 1
topics: {promotions: Promotions, newsletter: Newsletter}
quiet_hours:
  - id: sms-night
    channels: [sms]
    from: "20:00"
    to: "08:00"
    days_off: [sun]
    holidays: FR
caps:
  - {id: email-week, channels: [email], max: 2, window: 7d}
  - {id: sms-week, channels: [sms], max: 1, per: week}
  - {id: marketing-day, channels: [marketing], max: 4, per: day}
spacing: 12h
outcome:
  action: skip
  defer_max: 2d
  fallback: {sms: email}
"""
# Tuesday 2026-03-10, 10:00 in Paris
NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def policy(text: str = POLICY) -> Policy:
    loaded, problems = lint_policy_text(text)
    assert loaded is not None, problems
    return loaded


def contact(**fields: object) -> ContactView:
    base: dict[str, object] = {"id": 1, "external_id": "c1", "email": "a@example.com",
                               "phone": "+33600000000", "timezone": "Europe/Paris"}  # fmt: skip
    base.update(fields)
    return ContactView(**base)  # type: ignore[arg-type]


def request(channel: str = "email", scenario: str = "s1", kind: str = "marketing",
            **extra: object) -> SendRequest:  # fmt: skip
    return SendRequest(f"k-{channel}-{scenario}", 1, scenario, 1, "step", channel, "promotions",
                       kind, 50, **extra)  # type: ignore[arg-type]  # fmt: skip


def gate(data: ContactPolicy | None = None, text: str = POLICY) -> PolicyGate:
    return PolicyGate(policy(text), "Europe/Paris", {1: data or ContactPolicy()})


def sent(*ats: tuple[datetime, str, str]) -> ContactPolicy:
    return ContactPolicy(sends=[PastSend(at, ch, sc, "marketing") for at, ch, sc in ats])


def test_allowed_and_counted() -> None:
    g = gate()
    assert g.decide(request(), contact(), NOW).action == "allow"
    assert [s.channel for s in g.contacts[1].sends] == ["email"]


def test_consent_block_and_reason() -> None:
    data = ContactPolicy(consent=lambda ch, topic: (False, f"consent:{topic}:opted_out"))
    decision = gate(data).decide(request(), contact(), NOW)
    assert (decision.action, decision.reason) == ("skip", "consent:promotions:opted_out")


def test_global_opt_out_flag_and_missing_address() -> None:
    assert gate().decide(request(), contact(opted_out=True), NOW).reason == "consent:all:opted_out"
    assert gate().decide(request("sms"), contact(phone=None), NOW).reason == "address:phone_missing"


def test_suppression_blocks_marketing_not_transactional() -> None:
    data = ContactPolicy(suppressed=lambda ch: "suppression:hard_bounce" if ch == "email" else None)
    assert gate(data).decide(request(), contact(), NOW).reason == "suppression:hard_bounce"
    assert gate(data).decide(request(kind="transactional"), contact(), NOW).action == "allow"


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        (datetime(2026, 3, 10, 21, 30), datetime(2026, 3, 11, 8, 0)),  # Tuesday night
        (datetime(2026, 3, 11, 7, 59), datetime(2026, 3, 11, 8, 0)),  # early morning
        (datetime(2026, 3, 14, 22, 0), datetime(2026, 3, 16, 8, 0)),  # Saturday night → Monday
        (datetime(2026, 7, 13, 20, 0), datetime(2026, 7, 15, 8, 0)),  # Bastille Day in between
        (datetime(2026, 3, 10, 12, 0), None),  # allowed
    ],
)
def test_quiet_hours_next_allowed_instant(local: datetime, expected: datetime | None) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Paris")
    rule = policy().quiet[0]
    until = quiet_until(rule, local.replace(tzinfo=zone), zone)
    assert until == (expected.replace(tzinfo=zone).astimezone(UTC) if expected else None)


def test_quiet_hours_defer_in_the_contacts_zone() -> None:
    evening_paris = datetime(2026, 3, 10, 20, 30, tzinfo=UTC)  # 21:30 Paris, 16:30 Montreal
    decision = gate().decide(request("sms"), contact(), evening_paris)
    assert (decision.action, decision.reason) == ("defer", "quiet:sms-night")
    assert decision.until == datetime(2026, 3, 11, 7, 0, tzinfo=UTC)  # 08:00 Paris
    assert (
        gate().decide(request("sms"), contact(timezone="America/Montreal"), evening_paris).allowed
    )


def test_unknown_zone_falls_back_to_the_workspace_zone() -> None:
    evening_paris = datetime(2026, 3, 10, 20, 30, tzinfo=UTC)
    assert gate().decide(request("sms"), contact(timezone=None), evening_paris).action == "defer"
    assert (
        gate().decide(request("sms"), contact(timezone="Mars/Base"), evening_paris).action
        == "defer"
    )


def test_rolling_cap_with_the_instant_a_slot_frees() -> None:
    data = sent((NOW - timedelta(days=6), "email", "a"), (NOW - timedelta(days=1), "email", "b"))
    g = gate(
        data,
        POLICY.replace("action: skip", "action: defer").replace("defer_max: 2d", "defer_max: 3d"),
    )
    decision = g.decide(request(), contact(), NOW)
    assert (decision.action, decision.reason) == ("defer", "cap:email-week")
    assert decision.until == NOW + timedelta(days=1)  # the 6-day-old one leaves the window


def test_defer_max_turns_into_skip() -> None:
    data = sent((NOW - timedelta(days=1), "email", "a"), (NOW - timedelta(hours=20), "email", "b"))
    g = gate(data, POLICY.replace("action: skip", "action: defer"))
    decision = g.decide(request(), contact(), NOW)
    assert (decision.action, decision.reason) == ("skip", "cap:email-week:expired")
    first = g.decide(request(blocked_since=NOW - timedelta(days=3)), contact(), NOW)
    assert first.action == "skip"


def test_calendar_week_cap_in_local_time_and_fallback() -> None:
    monday = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    data = sent((monday, "sms", "a"))
    decision = gate(data).decide(request("sms", on_blocked="fallback"), contact(), NOW)
    assert (decision.action, decision.channel, decision.reason) == (
        "fallback",
        "email",
        "cap:sms-week",
    )
    last_week = sent((monday - timedelta(hours=11), "sms", "a"))  # Sunday 23:00 Paris
    this_week = sent((monday - timedelta(hours=9), "sms", "a"))  # Monday 01:00 Paris
    assert gate(this_week).decide(request("sms"), contact(), NOW).reason == "cap:sms-week"
    assert gate(last_week).decide(request("sms"), contact(), NOW).allowed


def test_weighted_marketing_cap_across_channels() -> None:
    # today: one SMS (weight 3) → an email (1) fits in 4, a second SMS does not
    data = sent((NOW - timedelta(hours=1), "sms", "a"))
    g = gate(
        data, POLICY.replace("spacing: 12h\n", "").replace("max: 1, per: week", "max: 5, per: week")
    )
    assert g.decide(request("email", scenario="b"), contact(), NOW).allowed
    assert g.decide(request("sms", scenario="c"), contact(), NOW).reason == "cap:marketing-day"


def test_spacing_per_scenario() -> None:
    data = sent((NOW - timedelta(hours=3), "email", "s1"))
    assert gate(data).decide(request(), contact(), NOW).reason == "spacing:s1"
    assert gate(data).decide(request(scenario="s2"), contact(), NOW).allowed


def test_pressure_tightens_caps() -> None:
    data = sent((NOW - timedelta(days=1), "email", "a"))
    data.caps_factor = lambda ch: (0.5, 0.0)  # over-pressure: email-week becomes 1
    assert gate(data).decide(request(scenario="b"), contact(), NOW).reason == "cap:email-week"


def test_transactional_bypasses_caps_but_counts() -> None:
    data = sent((NOW - timedelta(days=1), "email", "a"), (NOW - timedelta(days=2), "email", "b"))
    g = gate(data)
    assert g.decide(request(kind="transactional", scenario="t"), contact(), NOW).allowed
    assert len(g.contacts[1].sends) == 3


def test_exit_outcome() -> None:
    data = ContactPolicy(consent=lambda ch, topic: (False, "consent:promotions:unknown"))
    decision = gate(data).decide(request(on_blocked="exit"), contact(), NOW)
    assert (decision.action, decision.reason) == ("exit", "consent:promotions:unknown")


def over_pressured() -> ContactPolicy:
    return ContactPolicy(pressure_state=lambda channel: "over")


BLOCK_OVER = POLICY + "pressure: {block_over: true}\n"


def test_over_pressure_blocks_intrusive_channels_only() -> None:
    assert policy(BLOCK_OVER).pressure.block_over_min_weight == 1.0
    g = gate(over_pressured(), BLOCK_OVER.replace("spacing: 12h\n", ""))
    for channel in ("email", "sms", "push", "mail", "call"):
        decision = g.decide(request(channel), contact(timezone="Asia/Tokyo"), NOW)
        assert decision.reason == "pressure:over:weight>=1", channel
    assert g.decide(request("onsite"), contact(), NOW).allowed  # weight 0.5


def test_block_over_min_weight_is_a_policy_setting() -> None:
    text = POLICY + "pressure: {block_over: true, block_over_min_weight: 0.5}\n"
    decision = gate(over_pressured(), text).decide(request("onsite"), contact(), NOW)
    assert decision.reason == "pressure:over:weight>=0.5"
    text = POLICY + "pressure: {block_over: true, block_over_min_weight: 3}\n"
    assert gate(over_pressured(), text).decide(request(), contact(), NOW).allowed
    lowered = POLICY + "weights: {email: 0.4}\npressure: {block_over: true}\n"
    assert gate(over_pressured(), lowered).decide(request(), contact(), NOW).allowed
    loaded, problems = lint_policy_text(POLICY + "pressure: {block_over_min_weight: -1}\n")
    assert loaded is None and [p.field for p in problems] == ["pressure.block_over_min_weight"]


def test_over_pressure_falls_back_to_a_quiet_channel() -> None:
    decision = gate(over_pressured(), BLOCK_OVER).decide(
        request(on_blocked="fallback", fallback="onsite"), contact(), NOW
    )
    assert (decision.action, decision.channel) == ("fallback", "onsite")


def test_transactional_sends_pass_pressure_and_caps_and_count_in_caps() -> None:
    data = over_pressured()
    data.sends = [PastSend(NOW - timedelta(days=1), "email", "t", "transactional")]
    g = gate(data, BLOCK_OVER.replace("max: 2, window", "max: 1, window"))
    assert g.decide(request(kind="transactional", scenario="t"), contact(), NOW).allowed
    data.pressure_state = None  # the cap alone: the receipts fill it
    assert g.decide(request(scenario="m"), contact(), NOW).reason == "cap:email-week"
