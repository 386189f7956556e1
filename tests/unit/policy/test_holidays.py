"""Public holidays from the `holidays` package, per contact or fixed, and blackout dates: the
gate on hand-made contacts, the policy's errors with their lines."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from engine.policy.base import Decision, SendRequest
from engine.policy.gate import ContactPolicy, PolicyGate
from engine.policy.holidays import (
    calendar_of,
    contact_calendar,
    holiday_days,
    holiday_names,
    is_holiday,
)
from engine.policy.loader import lint_policy_text
from engine.policy.model import Policy
from engine.runtime.state import ContactView

POLICY = """\
format_version: 1
country: FR
quiet_hours:
  - {id: sms-holidays, channels: [sms], holidays: contact}
  - {id: call-fr, channels: [call], holidays: FR}
blackout:
  - id: year-end
    dates: ["2026-12-24", "2026-12-31"]
    channels: [email, sms]
    reason: end-of-year freeze
  - id: summer
    from: "2026-08-10"
    to: "2026-08-14"
    channels: [marketing]
outcome: {action: skip, defer_max: 3d}
"""
BERLIN, PARIS = ZoneInfo("Europe/Berlin"), ZoneInfo("Europe/Paris")
UNITY_DAY = datetime(2026, 10, 3, 10, 0, tzinfo=BERLIN)  # German Unity Day, a Saturday
BASTILLE_DAY = datetime(2026, 7, 14, 10, 0, tzinfo=PARIS)


def policy(text: str = POLICY) -> Policy:
    loaded, problems = lint_policy_text(text, "policy.yaml")
    assert loaded is not None, problems
    return loaded


def contact(country: str | None = None, zone: str = "Europe/Paris") -> ContactView:
    attributes = {"country": country} if country is not None else {}
    return ContactView(1, "c1", email="a@example.com", phone="+33600000000", timezone=zone,
                       attributes=attributes)  # fmt: skip


def request(channel: str = "sms", kind: str = "marketing") -> SendRequest:
    return SendRequest(f"k-{channel}", 1, "s1", 1, "step", channel, "promotions", kind, 50)


def decide(who: ContactView, at: datetime, channel: str = "sms", text: str = POLICY) -> Decision:
    gate = PolicyGate(policy(text), "Europe/Paris", {1: ContactPolicy()})
    return gate.decide(request(channel), who, at.astimezone(UTC))


def test_a_german_contact_waits_out_german_unity_day_a_french_one_does_not() -> None:
    german = decide(contact("DE", "Europe/Berlin"), UNITY_DAY)
    assert (german.action, german.reason) == ("defer", "quiet:sms-holidays")
    assert german.until == datetime(2026, 10, 4, 0, 0, tzinfo=BERLIN)
    assert decide(contact("FR"), UNITY_DAY).allowed


def test_a_contact_without_a_country_has_the_workspace_calendar() -> None:
    assert decide(contact(None), BASTILLE_DAY).reason == "quiet:sms-holidays"
    assert decide(contact("DE"), BASTILLE_DAY).allowed
    # a country the package does not know is no country: the workspace's, never none
    assert decide(contact("Germany"), BASTILLE_DAY).reason == "quiet:sms-holidays"
    german_workspace = POLICY.replace("country: FR", "country: DE")
    assert decide(contact(None), BASTILLE_DAY, text=german_workspace).allowed
    assert decide(contact(None), UNITY_DAY, text=german_workspace).action == "defer"


def test_a_fixed_calendar_ignores_the_contacts_country() -> None:
    assert decide(contact("DE"), BASTILLE_DAY, "call").reason == "quiet:call-fr"
    assert decide(contact("DE", "Europe/Berlin"), UNITY_DAY, "call").allowed


def test_the_french_calendar_is_the_eleven_public_holidays() -> None:
    assert holiday_days("FR", 2026) == {
        date(2026, 1, 1), date(2026, 4, 6), date(2026, 5, 1), date(2026, 5, 8),
        date(2026, 5, 14), date(2026, 5, 25), date(2026, 7, 14), date(2026, 8, 15),
        date(2026, 11, 1), date(2026, 11, 11), date(2026, 12, 25),
    }  # fmt: skip
    assert holiday_names("DE", 2026)[date(2026, 10, 3)] == "German Unity Day"


def test_subdivisions_have_their_own_holidays() -> None:
    good_friday = date(2026, 4, 3)  # a public holiday in Moselle, not in the rest of France
    assert calendar_of("fr-57") == "FR-57" and calendar_of("de-by") == "DE-BY"
    assert is_holiday("FR-57", good_friday) and not is_holiday("FR", good_friday)
    assert contact_calendar("FR-57", "FR") == "FR-57"
    assert contact_calendar("FR-99", "FR") == "FR"  # unknown subdivision: the workspace's
    assert contact_calendar(57, "DE") == "DE"
    assert calendar_of("XX") is None and calendar_of("DEU") is None


def test_a_batch_builds_each_calendar_once_not_per_contact() -> None:
    holiday_days.cache_clear()
    holiday_names.cache_clear()
    gate = PolicyGate(policy(), "Europe/Paris", {})
    countries = ["DE", "FR", "BE", None, "de", "FR-57"]
    for i in range(600):
        gate.decide(request(), contact(countries[i % len(countries)]), UNITY_DAY.astimezone(UTC))
    assert holiday_names.cache_info().misses == 4  # DE, FR, BE, FR-57 in 2026
    assert holiday_days.cache_info().hits >= 590


def test_blackout_defers_to_the_day_after_with_its_rule() -> None:
    eve = datetime(2026, 12, 24, 15, 0, tzinfo=PARIS)
    decision = decide(contact("FR"), eve, "email")
    assert (decision.action, decision.reason) == ("defer", "blackout:year-end")
    assert decision.until == datetime(2026, 12, 25, 0, 0, tzinfo=PARIS)
    assert decide(contact("FR"), eve, "push").allowed
    # a range covers every day, both ends included, on every channel with [marketing]
    decision = decide(contact("FR"), datetime(2026, 8, 12, 9, 0, tzinfo=PARIS), "push")
    assert decision.reason == "blackout:summer"
    assert decision.until == datetime(2026, 8, 15, 0, 0, tzinfo=PARIS)
    assert decide(contact("FR"), datetime(2026, 8, 15, 9, 0, tzinfo=PARIS), "push").allowed


def test_blackout_days_are_the_contacts_local_days_and_spare_transactional_sends() -> None:
    # 23:30 on the 23rd in Paris is already the 24th in Tokyo
    late = datetime(2026, 12, 23, 23, 30, tzinfo=PARIS)
    assert decide(contact("FR"), late, "email").allowed
    assert decide(contact("FR", "Asia/Tokyo"), late, "email").reason == "blackout:year-end"
    gate = PolicyGate(policy(), "Europe/Paris", {})
    eve = datetime(2026, 12, 24, 15, 0, tzinfo=UTC)
    assert gate.decide(request("email", "transactional"), contact("FR"), eve).allowed


def test_a_blackout_longer_than_defer_max_skips_the_send() -> None:
    long = POLICY.replace('to: "2026-08-14"', 'to: "2026-08-30"')
    decision = decide(contact("FR"), datetime(2026, 8, 12, 9, 0, tzinfo=PARIS), "push", long)
    assert (decision.action, decision.reason) == ("skip", "blackout:summer:expired")


def _problems(text: str) -> list[tuple[str, int | None, str, str | None]]:
    loaded, problems = lint_policy_text(text, "policy.yaml")
    assert loaded is None
    return [(p.code, p.line, p.message, p.hint) for p in problems]


@pytest.mark.parametrize(
    ("snippet", "line", "words", "hint"),
    [
        ("quiet_hours:\n  - {id: q, channels: [sms], holidays: XX}\n", 3, "Unknown country 'XX'",
         None),
        ("quiet_hours:\n  - id: q\n    channels: [sms]\n    holidays: FRA\n", 5, "ISO 3166",
         "did you mean 'FR'?"),
        ("quiet_hours:\n  - {id: q, channels: [sms], holidays: FR-58}\n", 3, "subdivision '58'",
         "did you mean 'FR-57'?"),
        ("country: Germany\n", 2, "Unknown country 'Germany'", None),
        ("quiet_hours:\n  - {id: q, channels: [sms], holidays: contact}\n", 3,
         "needs the workspace's country", "add 'country: FR' at the top of the policy"),
        ("blackout:\n  - id: b\n    channels: [email]\n    dates: [2026-12-24, \"2026-02-30\"]\n",
         5, "'2026-02-30' is not a date", None),
        ("blackout:\n  - id: b\n    channels: [email]\n    dates: [\"24/12/2026\"]\n", 5,
         "expected YYYY-MM-DD", None),
        ("blackout:\n  - id: b\n    channels: [email]\n    from: \"2026-12-31\"\n"
         "    to: \"2026-12-24\"\n", 6, "is before 'from'", None),
        ("blackout:\n  - id: b\n    channels: [email]\n    from: \"2026-12-31\"\n", 3,
         "Give both 'from' and 'to'", None),
        ("blackout:\n  - {id: b, channels: [email]}\n", 3, "Give 'dates'", None),
        ("blackout:\n  - {id: b, channels: [emial], dates: [\"2026-12-24\"]}\n", 3,
         "Unknown channel 'emial'", "did you mean 'email'?"),
        ("blackout:\n  - {id: b, chanels: [email], dates: [\"2026-12-24\"]}\n", 3,
         "Unknown field 'chanels'", "did you mean 'channels'?"),
    ],
)  # fmt: skip
def test_bad_calendars_and_dates_are_errors_at_their_line(
    snippet: str, line: int, words: str, hint: str | None
) -> None:
    found = _problems("format_version: 1\n" + snippet)
    assert any(at == line and words in message and (hint is None or got == hint)
               for _code, at, message, got in found), found  # fmt: skip


def test_duplicate_blackout_ids_are_an_error() -> None:
    text = POLICY.replace("id: summer", "id: year-end")
    assert any(code == "policy.duplicate_id" for code, *_ in _problems(text))


def test_unquoted_yaml_dates_and_case_are_accepted() -> None:
    loaded = policy("format_version: 1\ncountry: de-by\nblackout:\n"
                    "  - {id: b, channels: [email], dates: [2026-12-24]}\n")  # fmt: skip
    assert loaded.country == "DE-BY"
    assert loaded.blackouts[0].days == {date(2026, 12, 24)}


def test_upcoming_quiet_days_name_their_holiday_and_blackout() -> None:
    from engine.policy.blackouts import upcoming

    ahead = upcoming(policy(), "DE", date(2026, 10, 1), days=5)
    assert (ahead["calendar"], ahead["from_contact"]) == ("DE", True)
    assert ahead["days"] == [{"date": date(2026, 10, 3), "rule": "quiet:sms-holidays",
                              "channels": ["sms"], "why": "German Unity Day"}]  # fmt: skip
    ahead = upcoming(policy(), None, date(2026, 12, 24), days=2)
    assert [(d["date"].day, d["rule"], d["why"]) for d in ahead["days"]] == [
        (24, "blackout:year-end", "end-of-year freeze"),
        (25, "quiet:sms-holidays", "Christmas Day"),
        (25, "quiet:call-fr", "Christmas Day"),
    ]
