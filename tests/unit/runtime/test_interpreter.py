"""The pure interpreter: `Interpreter.advance` on scenarios written as YAML text.

No database, no clock: each test builds a scenario, an enrollment state, a contact and a history,
advances at chosen instants and checks the new state, the journal and the effects.
"""

from __future__ import annotations

import json
import textwrap
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.policy.base import ALLOW, Decision, OptOutGate, SendRequest, defer, exit_journey, skip
from engine.runtime.interpreter import (
    MAX_STEPS_PER_ADVANCE,
    Interpreter,
    JournalRecord,
    Transition,
    send_key,
)
from engine.runtime.state import (
    ACTIVE,
    COMPLETED,
    CONVERTED,
    EXITED,
    FAILED,
    ContactView,
    EnrollmentState,
    EventView,
    History,
)
from engine.spec.loader import load_scenario_text
from engine.spec.model import Scenario

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # Monday 10:00 in Paris
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
VERSION = 7

HEAD = """\
format_version: 1
id: test
name: Test scenario
objective: other
topic: promotions
triggers:
  - event: go
"""
MAIL = {"promo": {"subject": "Hello {{ contact.first_name }}", "text": "Code {{ data.code }}"}}


def build(body: str, templates: Mapping[str, Mapping[str, str]] | None = None) -> Scenario:
    """A scenario from the YAML after the common header (triggers included)."""
    text = HEAD + textwrap.dedent(body)
    return load_scenario_text(text, template_sources=templates or {})


Rule = Callable[[SendRequest, datetime], Decision]


@dataclass
class FakeGate:
    """Answers with `rule`, remembering every request it was asked about."""

    rule: Rule = lambda request, now: ALLOW
    calls: list[SendRequest] = field(default_factory=list)

    def decide(self, request: SendRequest, contact: ContactView, now: datetime) -> Decision:
        self.calls.append(request)
        return self.rule(request, now)


def contact(**changes: Any) -> ContactView:
    values: dict[str, Any] = {
        "id": 1,
        "external_id": "ext-1",
        "email": "ana@example.com",
        "phone": "+33600000000",
        "timezone": "Europe/Paris",
        "attributes": {"first_name": "Ana"},
    }
    values.update(changes)
    return ContactView(**values)


def ev(event_id: int, name: str, at: datetime, **properties: Any) -> EventView:
    return EventView(event_id, name, properties, at)


def history(*events: EventView) -> History:
    by_name: dict[str, list[EventView]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e.occurred_at, e.id)):
        by_name[e.name].append(e)
    return History(dict(by_name))


def fresh(
    scenario: Scenario,
    entered: datetime = T0,
    enrollment_id: int = 1,
    trigger: EventView | None = None,
) -> EnrollmentState:
    return EnrollmentState(
        id=enrollment_id,
        scenario_id=scenario.id,
        version_id=VERSION,
        contact_id=1,
        status=ACTIVE,
        step_id=scenario.start,
        entered_at=entered,
        trigger_event=trigger,
    )


@dataclass
class Journey:
    """Advance one enrollment several times, keeping every transition."""

    scenario: Scenario
    gate: FakeGate = field(default_factory=FakeGate)
    person: ContactView = field(default_factory=contact)
    events: list[EventView] = field(default_factory=list)
    state: EnrollmentState | None = None
    transitions: list[Transition] = field(default_factory=list)
    zone: str = "Europe/Paris"

    def advance(self, now: datetime) -> Transition:
        if self.state is None:
            self.state = fresh(self.scenario)
        it = Interpreter(self.scenario, self.gate, self.zone)
        tr = it.advance(self.state, self.person, history(*self.events), now)
        self.state = tr.state
        self.transitions.append(tr)
        return tr

    @property
    def sends(self) -> list[Any]:
        return [s for tr in self.transitions for s in tr.sends]

    @property
    def journal(self) -> list[JournalRecord]:
        return [r for tr in self.transitions for r in tr.journal]


def kinds(records: list[JournalRecord]) -> list[tuple[str, str | None, str | None]]:
    return [(r.kind, r.step_id, r.reason) for r in records]


# ---------------------------------------------------------------- waits


WAIT_THEN_SEND = """\
data: {code: WELCOME}
steps:
  pause:
    type: wait
    duration: 2h
    next: hello
  hello:
    type: send
    channel: email
    template: promo
"""


def test_wait_parks_until_the_duration_then_continues() -> None:
    j = Journey(build(WAIT_THEN_SEND, MAIL))
    first = j.advance(T0)
    assert first.state.status == ACTIVE and first.state.step_id == "pause"
    assert first.state.due_at == first.state.deadline == T0 + 2 * HOUR
    assert kinds(first.journal) == [("step", "pause", "wait")]
    assert first.journal[0].data == {"until": (T0 + 2 * HOUR).isoformat()}
    early = j.advance(T0 + HOUR)  # woken early (an event for another step, say): stays
    assert early.state.step_id == "pause" and early.state.due_at == T0 + 2 * HOUR
    assert early.journal == [] and early.sends == []
    done = j.advance(T0 + 2 * HOUR)
    assert [s.request.step_id for s in done.sends] == ["hello"]
    assert done.sends[0].parts == {"subject": "Hello Ana", "text": "Code WELCOME"}
    assert done.state.status == COMPLETED and done.state.end_reason == "completed"
    assert done.state.ended_at == T0 + 2 * HOUR and done.state.due_at is None


def test_advance_never_changes_the_callers_state() -> None:
    scenario = build(WAIT_THEN_SEND, MAIL)
    state = fresh(scenario)
    before = state.evolve()
    tr = Interpreter(scenario, FakeGate()).advance(state, contact(), History(), T0)
    assert tr.state.visits == 1 and tr.state.due_at is not None
    assert state == before


def test_inactive_enrollment_is_left_alone() -> None:
    scenario = build(WAIT_THEN_SEND, MAIL)
    state = fresh(scenario).evolve(status=EXITED, end_reason="exit")
    tr = Interpreter(scenario, FakeGate()).advance(state, contact(), History(), T0 + DAY)
    assert tr.state.status == EXITED and tr.journal == [] and tr.sends == []


WAIT_UNTIL = """\
steps:
  midweek:
    type: wait_until
    at: "10:00"
    weekdays: [wed, fri]
    next: hello
  hello:
    type: send
    channel: email
    content: {subject: Hi, text: Hello}
"""


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        # Monday 10:00 Paris → Wednesday 10:00 CET
        ("Europe/Paris", T0, datetime(2025, 3, 5, 9, 0, tzinfo=UTC)),
        # Monday 04:00 in New York → Wednesday 10:00 EST
        ("America/New_York", T0, datetime(2025, 3, 5, 15, 0, tzinfo=UTC)),
        # no zone: the workspace zone given to the interpreter
        (None, T0, datetime(2025, 3, 5, 9, 0, tzinfo=UTC)),
        # an unknown zone is treated the same
        ("Mars/Olympus", T0, datetime(2025, 3, 5, 9, 0, tzinfo=UTC)),
        # Wednesday 10:30 Paris: already past, so Friday 10:00
        (
            "Europe/Paris",
            datetime(2025, 3, 5, 9, 30, tzinfo=UTC),
            datetime(2025, 3, 7, 9, 0, tzinfo=UTC),
        ),
    ],
)
def test_wait_until_local_time_on_weekdays(
    zone: str | None, start: datetime, expected: datetime
) -> None:
    j = Journey(build(WAIT_UNTIL), person=contact(timezone=zone))
    j.state = fresh(j.scenario, entered=start)
    tr = j.advance(start)
    assert tr.state.due_at == expected and tr.sends == []
    assert j.advance(expected - timedelta(seconds=1)).sends == []
    assert [s.request.step_id for s in j.advance(expected).sends] == ["hello"]


def test_wait_until_at_the_very_instant_passes_at_once() -> None:
    wednesday_ten = datetime(2025, 3, 5, 9, 0, tzinfo=UTC)
    j = Journey(build(WAIT_UNTIL))
    j.state = fresh(j.scenario, entered=wednesday_ten)
    tr = j.advance(wednesday_ten)
    assert [s.request.step_id for s in tr.sends] == ["hello"]
    assert kinds(tr.journal)[0] == ("step", "midweek", None)


WAIT_DATE = """\
steps:
  before-renewal:
    type: wait_date
    attribute: renewal_date
    offset: -7d
    at: "09:00"
    next: reminder
  reminder:
    type: send
    channel: email
    content: {subject: Renewal, text: "Your renewal is on {{ contact.renewal_date }}"}
"""


def test_wait_date_with_an_offset_at_local_time() -> None:
    person = contact(attributes={"first_name": "Ana", "renewal_date": "2025-04-10"})
    j = Journey(build(WAIT_DATE), person=person)
    tr = j.advance(T0)
    assert tr.state.due_at == datetime(2025, 4, 3, 7, 0, tzinfo=UTC)  # 09:00 CEST, a week before
    later = j.advance(datetime(2025, 4, 3, 7, 0, tzinfo=UTC))
    assert later.sends[0].parts["text"] == "Your renewal is on 2025-04-10"


@pytest.mark.parametrize("value", [None, "soon", 42])
def test_wait_date_without_a_usable_date_goes_on_at_once(value: Any) -> None:
    attributes = {"first_name": "Ana"}
    if value is not None:
        attributes["renewal_date"] = value
    j = Journey(build(WAIT_DATE), person=contact(attributes=attributes))
    tr = j.advance(T0)
    assert kinds(tr.journal)[0] == ("step", "before-renewal", "date_missing")
    # no wait: the journey went straight on to the reminder and ended in the same advance
    assert any(r.step_id == "reminder" for r in tr.journal)
    assert tr.state.status == COMPLETED and tr.state.due_at is None


def test_wait_date_in_the_past_goes_on_at_once() -> None:
    person = contact(attributes={"first_name": "Ana", "renewal_date": "2025-03-05"})
    tr = Journey(build(WAIT_DATE), person=person).advance(T0)
    assert [s.request.step_id for s in tr.sends] == ["reminder"]


WAIT_EVENT = """\
steps:
  wait-click:
    type: wait_event
    event: email_clicked
    where:
      - property: campaign
        op: eq
        value: spring
    timeout: 2d
    on_event: thanks
    on_timeout: reminder
  thanks:
    type: exit
    reason: clicked
  reminder:
    type: send
    channel: sms
    content: {text: "Still there?"}
"""


def test_wait_event_leaves_by_on_event_when_the_event_comes() -> None:
    j = Journey(build(WAIT_EVENT))
    parked = j.advance(T0)
    assert parked.state.waiting_for == "email_clicked"
    assert parked.state.due_at == parked.state.deadline == T0 + 2 * DAY
    j.events = [
        ev(1, "email_clicked", T0 - HOUR, campaign="spring"),  # before the step: ignored
        ev(2, "email_clicked", T0 + HOUR, campaign="autumn"),  # does not match `where`
    ]
    still = j.advance(T0 + 2 * HOUR)
    assert still.state.step_id == "wait-click" and still.state.status == ACTIVE
    assert still.state.waiting_for == "email_clicked" and still.state.due_at == T0 + 2 * DAY
    j.events.append(ev(3, "email_clicked", T0 + 3 * HOUR, campaign="spring"))
    woken = j.advance(T0 + 3 * HOUR)
    assert ("woken", "wait-click", "event") in kinds(woken.journal)
    assert woken.journal[0].data == {"event_id": 3}
    assert woken.state.status == EXITED and woken.state.end_reason == "clicked"
    assert j.sends == []


def test_wait_event_leaves_by_on_timeout() -> None:
    j = Journey(build(WAIT_EVENT))
    j.advance(T0)
    assert j.advance(T0 + 2 * DAY - timedelta(seconds=1)).sends == []
    late = j.advance(T0 + 2 * DAY)
    assert kinds(late.journal)[0] == ("woken", "wait-click", "timeout")
    assert [s.request.channel for s in late.sends] == ["sms"]
    assert late.state.status == COMPLETED


def test_wait_event_sees_an_event_that_arrived_with_the_entry() -> None:
    # the trigger and the awaited event came in the same batch, at the same instant
    j = Journey(build(WAIT_EVENT), events=[ev(5, "email_clicked", T0, campaign="spring")])
    tr = j.advance(T0)
    assert kinds(tr.journal)[:2] == [("step", "wait-click", None), ("woken", "wait-click", "event")]
    assert tr.state.status == EXITED and tr.state.end_reason == "clicked"


def test_wait_event_ignores_the_event_that_started_the_enrollment() -> None:
    scenario = build(
        """\
        steps:
          again:
            type: wait_event
            event: go
            timeout: 1d
            on_event: twice
            on_timeout: null
          twice:
            type: exit
            reason: twice
        """
    )
    trigger = ev(9, "go", T0)
    j = Journey(scenario, events=[trigger])
    j.state = fresh(scenario, trigger=trigger)
    assert j.advance(T0).state.step_id == "again"
    j.events.append(ev(10, "go", T0 + HOUR))
    assert j.advance(T0 + HOUR).state.end_reason == "twice"


# ---------------------------------------------------------------- conditions and switch

CONDITION = """\
steps:
  test:
    type: condition
    if: {cond}
    then: yes-step
    else: no-step
  yes-step:
    type: exit
    reason: "yes"
  no-step:
    type: exit
    reason: "no"
"""

ORDERS = [
    ev(101, "order_placed", T0 - 40 * DAY, total=120, channel="web"),
    ev(102, "order_placed", T0 - 10 * DAY, total=30, channel="shop"),
    ev(103, "order_placed", T0 - 2 * DAY, total=25, channel="web"),
]


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ("{attribute: country, op: eq, value: FR}", True),
        ("{attribute: country, op: in, value: [BE, CA]}", False),
        ("{attribute: score, op: gte, value: 42}", True),
        ("{attribute: score, op: gt, value: 42}", False),
        ("{attribute: address.city, op: eq, value: Lyon}", True),
        ("{attribute: address.zip, op: exists}", False),
        ("{attribute: nickname, op: not_exists}", True),
        ("{attribute: email, op: ends_with, value: '@example.com'}", True),
        ("{attribute: last_login, op: older_than, value: 30d}", True),
        ("{attribute: last_login, op: within_last, value: 30d}", False),
        ("{tag: vip}", True),
        ("{tag: churned}", False),
        # events: count (default ≥ 1), windows, where, sum, recency
        ("{event: order_placed}", True),
        ("{event: order_placed, count: {op: eq, value: 3}}", True),
        ("{event: order_placed, within: 30d, count: {op: eq, value: 2}}", True),
        ("{event: order_placed, within: 1d}", False),
        (
            "{event: order_placed, where: [{property: channel, op: eq, value: web}],"
            " count: {op: eq, value: 2}}",
            True,
        ),
        ("{event: order_placed, sum: {property: total, op: eq, value: 175}}", True),
        ("{event: order_placed, within: 30d, sum: {property: total, op: gt, value: 55}}", False),
        ("{event: order_placed, recency: {op: within_last, value: 3d}}", True),
        ("{event: order_placed, recency: {op: older_than, value: 3d}}", False),
        ("{event: refund_requested, recency: {op: older_than, value: 3650d}}", True),
        ("{event: refund_requested}", False),
        # since entry: the order 2 days ago is before the entry 1 day ago; the future one is not yet
        ("{event: order_placed, since: entry}", False),
        ("{expr: \"contact.score > 40 and event.total >= 50 and 'vip' in contact.tags\"}", True),
        ('{expr: "data.threshold < event.total"}', True),
        ("{expr: 'contact.missing.deeper == 3'}", False),
        ("{all: [{tag: vip}, {attribute: country, op: eq, value: FR}]}", True),
        ("{all: [{tag: vip}, {tag: churned}]}", False),
        ("{any: [{tag: churned}, {attribute: score, op: lt, value: 50}]}", True),
        ("{not: {tag: vip}}", False),
    ],
)
def test_condition_forms(cond: str, expected: bool) -> None:
    scenario = build("data: {threshold: 10}\n" + CONDITION.format(cond=cond))
    person = contact(
        score=42,
        tags=["vip"],
        attributes={
            "first_name": "Ana",
            "country": "FR",
            "address": {"city": "Lyon"},
            "last_login": (T0 - 45 * DAY).isoformat(),
        },
    )
    trigger = ev(1, "go", T0 - DAY, total=80)
    future = ev(104, "order_placed", T0 + HOUR, total=500)  # not yet: never counted
    j = Journey(scenario, person=person, events=[*ORDERS, future, trigger])
    j.state = fresh(scenario, entered=T0 - DAY, trigger=trigger)
    tr = j.advance(T0)
    assert kinds(tr.journal)[0] == ("step", "test", "then" if expected else "else")
    assert tr.state.end_reason == ("yes" if expected else "no")


def test_since_entry_counts_events_after_entry() -> None:
    scenario = build(CONDITION.format(cond="{event: email_opened, since: entry}"))
    j = Journey(scenario, events=[ev(1, "email_opened", T0 - HOUR)])
    j.state = fresh(scenario, entered=T0 - 2 * HOUR)
    assert j.advance(T0).state.end_reason == "yes"
    j = Journey(scenario, events=[ev(1, "email_opened", T0 - 3 * HOUR)])
    j.state = fresh(scenario, entered=T0 - 2 * HOUR)
    assert j.advance(T0).state.end_reason == "no"


SWITCH = """\
steps:
  route:
    type: switch
    cases:
      - name: big
        when: {expr: "event.total >= 100"}
        next: big
      - when: {expr: "event.total >= 50"}
        next: medium
      - name: also-big
        when: {expr: "event.total >= 100"}
        next: medium
    default: small
  big: {type: exit, reason: big}
  medium: {type: exit, reason: medium}
  small: {type: exit, reason: small}
"""


@pytest.mark.parametrize(
    ("total", "case", "end"),
    [(150, "big", "big"), (60, "case 1", "medium"), (10, "default", "small")],
)
def test_switch_first_matching_case_wins(total: int, case: str, end: str) -> None:
    scenario = build(SWITCH)
    trigger = ev(1, "go", T0, total=total)
    j = Journey(scenario)
    j.state = fresh(scenario, trigger=trigger)
    tr = j.advance(T0)
    assert kinds(tr.journal)[0] == ("step", "route", case)
    assert tr.state.end_reason == end


# ---------------------------------------------------------------- split: see test_split.py


# ---------------------------------------------------------------- update, webhook, start, exit


def test_update_sets_attributes_score_and_tags() -> None:
    scenario = build(
        """\
        steps:
          mark:
            type: update
            set: {stage: lead, plan: {name: pro}}
            add_score: 15
            add_tags: [engaged, vip]
            remove_tags: [cold]
        """
    )
    person = contact(score=5, tags=["cold", "vip"])
    tr = Journey(scenario, person=person).advance(T0)
    assert person.attributes["stage"] == "lead" and person.attributes["plan"] == {"name": "pro"}
    assert person.score == 20 and person.tags == ["vip", "engaged"]
    assert tr.profile.set == {"stage": "lead", "plan": {"name": "pro"}}
    assert tr.profile.score_delta == 15
    assert tr.profile.add_tags == ["engaged", "vip"] and tr.profile.remove_tags == ["cold"]
    assert tr.state.status == COMPLETED


WEBHOOK = """\
steps:
  hand-off:
    type: webhook
    url: https://crm.example.com/hooks/leads
    method: PUT
    payload:
      lead: "{{ contact.external_id }}"
      details:
        score: "{{ contact.score }}"
        tags: ["{{ contact.tags | join(',') }}", fixed]
        count: 3
        active: true
      note: plain text
"""


def test_webhook_renders_each_payload_string_in_place() -> None:
    j = Journey(build(WEBHOOK), person=contact(score=120, tags=["a", "b"]))
    tr = j.advance(T0)
    (effect,) = tr.sends
    assert json.loads(effect.parts["body"]) == {
        "lead": "ext-1",
        "details": {"score": "120", "tags": ["a,b", "fixed"], "count": 3, "active": True},
        "note": "plain text",
    }
    assert effect.metadata == {"url": "https://crm.example.com/hooks/leads", "method": "PUT"}
    assert effect.request.channel == "webhook" and effect.request.kind == "transactional"
    assert effect.request.send_key == f"{VERSION}:1:hand-off:1"
    assert ("send", "hand-off", "webhook") in kinds(tr.journal)
    assert j.gate.calls == []  # webhooks are not marketing messages: no gate


def test_webhook_render_failure_is_journaled_and_the_journey_goes_on() -> None:
    # a division by an attribute that is zero for this contact fails at render time only
    body = WEBHOOK.replace("{{ contact.score }}", "{{ 100 // contact.orders }}")
    body += "    next: after\n  after:\n    type: update\n    add_tags: [went-on]\n"
    person = contact(attributes={"orders": 0})
    tr = Journey(build(body), person=person).advance(T0)
    assert tr.sends == []
    errors = [r for r in tr.journal if r.kind == "error"]
    assert [(r.step_id, r.reason) for r in errors] == [("hand-off", "render_failed")]
    assert "division" in errors[0].data["error"]  # type: ignore[index]
    assert person.tags == ["went-on"] and tr.state.status == COMPLETED


def test_start_scenario_and_exit() -> None:
    scenario = build(
        """\
        steps:
          start-other:
            type: start_scenario
            scenario: welcome-series
            next: leave
          leave:
            type: exit
            reason: handed-over
        """
    )
    tr = Journey(scenario).advance(T0)
    assert tr.starts == ["welcome-series"]
    assert tr.journal[0].data == {"scenario": "welcome-series"}
    assert (tr.state.status, tr.state.end_reason, tr.state.step_id) == (
        EXITED,
        "handed-over",
        "leave",
    )
    assert kinds(tr.journal)[-1] == ("exited", "leave", "handed-over")
    assert not tr.profile


def test_end_without_next_completes() -> None:
    scenario = build("steps:\n  only:\n    type: update\n    add_score: 1\n")
    tr = Journey(scenario).advance(T0)
    assert (tr.state.status, tr.state.end_reason) == (COMPLETED, "completed")
    assert kinds(tr.journal) == [("step", "only", None), ("completed", "only", "completed")]


# ---------------------------------------------------------------- goal and exit rules

GOAL_EXIT = """\
goal:
  event: order_placed
  where:
    - property: total
      op: gte
      value: 20
  within: 7d
exit_on:
  - event: unsubscribed
steps:
  pause:
    type: wait
    duration: 10d
    next: offer
  offer:
    type: send
    channel: email
    content: {subject: Offer, text: Offer}
"""


def _goal_journey(*events: EventView, trigger: EventView | None = None) -> Journey:
    scenario = build(GOAL_EXIT)
    j = Journey(scenario, events=list(events))
    j.state = fresh(scenario, trigger=trigger)
    j.advance(T0)
    return j


def test_goal_converts_and_exit_rule_wins_over_goal() -> None:
    j = _goal_journey()
    j.events = [ev(1, "order_placed", T0 + DAY, total=50)]
    tr = j.advance(T0 + DAY)
    assert (tr.state.status, tr.state.end_reason) == (CONVERTED, "goal:order_placed")
    assert tr.journal[-1].data == {"event_id": 1}
    j = _goal_journey()
    j.events = [ev(1, "order_placed", T0 + DAY, total=50), ev(2, "unsubscribed", T0 + DAY)]
    tr = j.advance(T0 + DAY)
    assert (tr.state.status, tr.state.end_reason) == (EXITED, "exit_on:unsubscribed")
    assert tr.journal[-1].data == {"event_id": 2}
    assert j.sends == []


@pytest.mark.parametrize(
    "event",
    [
        ev(1, "order_placed", T0 + DAY, total=10),  # fails the goal's `where`
        ev(1, "order_placed", T0 + 8 * DAY, total=50),  # after the 7-day window
        ev(1, "order_placed", T0 - DAY, total=50),  # before entry
        ev(1, "order_placed", T0 + 12 * DAY, total=50),  # not yet happened at T0 + 10d
    ],
)
def test_goal_ignores_events_outside_its_rules(event: EventView) -> None:
    j = _goal_journey()
    j.events = [event]
    tr = j.advance(T0 + 10 * DAY)
    assert tr.state.status == COMPLETED
    assert [s.request.step_id for s in tr.sends] == ["offer"]


def test_the_triggering_event_is_not_the_goal() -> None:
    order = ev(1, "order_placed", T0, total=50)
    j = _goal_journey(order, trigger=order)
    assert j.state is not None and j.state.status == ACTIVE
    assert j.advance(T0 + HOUR).state.status == ACTIVE
    j.events.append(ev(2, "order_placed", T0 + 2 * HOUR, total=50))
    assert j.advance(T0 + 2 * HOUR).state.status == CONVERTED


# ---------------------------------------------------------------- the gate's decisions

SEND_TWICE = """\
data: {code: SPRING}
steps:
  promo:
    type: send
    channel: email
    template: promo
    next: after
  after:
    type: update
    add_tags: [after-promo]
"""


def test_defer_parks_until_the_instant_and_retries_with_the_same_key() -> None:
    later = T0 + 8 * HOUR

    def rule(request: SendRequest, now: datetime) -> Decision:
        return defer(later, "quiet_hours") if now < later else ALLOW

    j = Journey(build(SEND_TWICE, MAIL), gate=FakeGate(rule))
    parked = j.advance(T0)
    assert parked.sends == [] and parked.state.step_id == "promo"
    assert parked.state.due_at == parked.state.deadline == later
    assert kinds(parked.journal) == [("decision", "promo", "quiet_hours")]
    assert parked.journal[0].data == {"action": "defer", "channel": "email"}
    assert j.advance(later - HOUR).sends == []  # woken early: still parked, gate not asked
    assert len(j.gate.calls) == 1
    sent = j.advance(later)
    assert [s.request.send_key for s in sent.sends] == [f"{VERSION}:1:promo:1"]
    assert [c.send_key for c in j.gate.calls] == [f"{VERSION}:1:promo:1"] * 2
    assert sent.sends[0].parts == {"subject": "Hello Ana", "text": "Code SPRING"}
    assert "after-promo" in j.person.tags and sent.state.status == COMPLETED


def test_skip_goes_on_without_sending() -> None:
    j = Journey(build(SEND_TWICE, MAIL), gate=FakeGate(lambda r, now: skip("cap:daily")))
    tr = j.advance(T0)
    assert tr.sends == []
    assert ("decision", "promo", "cap:daily") in kinds(tr.journal)
    assert "after-promo" in j.person.tags and tr.state.status == COMPLETED


def test_opt_out_gate_skips_marketing_and_missing_addresses() -> None:
    scenario = build(SEND_TWICE, MAIL)
    it = Interpreter(scenario, OptOutGate())
    tr = it.advance(fresh(scenario), contact(opted_out=True), History(), T0)
    assert tr.sends == [] and ("decision", "promo", "consent:opted_out") in kinds(tr.journal)
    tr = it.advance(fresh(scenario), contact(email=None), History(), T0)
    assert tr.sends == [] and ("decision", "promo", "address:email_missing") in kinds(tr.journal)


def test_fallback_switches_channel_and_is_journaled() -> None:
    def rule(request: SendRequest, now: datetime) -> Decision:
        if request.channel == "email":
            return Decision("fallback", "address:email_bounced", channel="sms")
        return ALLOW

    j = Journey(build(SEND_TWICE, MAIL), gate=FakeGate(rule))
    tr = j.advance(T0)
    (effect,) = tr.sends
    assert effect.request.channel == "sms"
    assert effect.request.send_key == f"{VERSION}:1:promo:1:sms"
    assert tr.journal[0] == JournalRecord(
        "decision",
        "promo",
        "address:email_bounced",
        {"action": "fallback", "channel": "email", "to": "sms"},
    )
    assert tr.journal[1].kind == "send" and tr.journal[1].data == {
        "channel": "sms",
        "send_key": f"{VERSION}:1:promo:1:sms",
    }


def test_fallback_never_goes_round_in_circles() -> None:
    other = {"email": "sms", "sms": "email"}

    def rule(request: SendRequest, now: datetime) -> Decision:
        return Decision("fallback", "unreachable", channel=other[request.channel])

    j = Journey(build(SEND_TWICE, MAIL), gate=FakeGate(rule))
    tr = j.advance(T0)
    assert tr.sends == [] and [c.channel for c in j.gate.calls] == ["email", "sms"]
    assert tr.state.status == COMPLETED  # nowhere left to go: the step is skipped


def test_gate_exit_ends_the_journey() -> None:
    j = Journey(build(SEND_TWICE, MAIL), gate=FakeGate(lambda r, n: exit_journey("consent:gdpr")))
    tr = j.advance(T0)
    assert (tr.state.status, tr.state.end_reason) == (EXITED, "consent:gdpr")
    assert "after-promo" not in j.person.tags and tr.sends == []


def test_render_failure_is_journaled_and_the_journey_goes_on() -> None:
    broken = {"promo": {"subject": "{{ 100 // contact.orders }} %", "text": "{{ data.code }}"}}
    j = Journey(build(SEND_TWICE, broken), person=contact(attributes={"orders": 0}))
    tr = j.advance(T0)
    assert tr.sends == []
    (error,) = [r for r in tr.journal if r.kind == "error"]
    assert (error.step_id, error.reason) == ("promo", "render_failed")
    assert "template 'promo' part 'subject'" in str(error.data)
    assert "after-promo" in j.person.tags and tr.state.status == COMPLETED


# ---------------------------------------------------------------- loops


def test_loop_guard_fails_the_enrollment_and_drops_what_the_runaway_did() -> None:
    # a loop whose wait never waits (the date is in the past) runs until the guard stops it
    scenario = build(
        """\
        steps:
          until-date:
            type: wait_date
            attribute: renewal_date
            next: ping
          ping:
            type: send
            channel: email
            content: {subject: Ping, text: Ping}
            next: bump
          bump:
            type: update
            add_score: 1
            add_tags: [looped]
            next: until-date
        """
    )
    person = contact(score=3, attributes={"first_name": "Ana", "renewal_date": "2020-01-01"})
    tr = Journey(scenario, person=person).advance(T0)
    assert (tr.state.status, tr.state.end_reason) == (FAILED, "loop_guard")
    assert tr.steps_run == MAX_STEPS_PER_ADVANCE
    # nothing of the runaway advance may be sent or saved
    assert tr.sends == [] and not tr.profile and tr.starts == []
    assert person.score == 3 and person.tags == [] and "looped" not in person.tags
    assert kinds(tr.journal) == [("failed", tr.state.step_id, "loop_guard")]


WEEKLY = """\
steps:
  monday:
    type: wait_until
    at: "09:00"
    weekdays: [mon]
    next: digest
  digest:
    type: send
    channel: email
    content: {subject: Digest, text: Weekly}
    next: monday
"""


def test_weekly_loop_sends_once_per_week_with_a_key_per_visit() -> None:
    j = Journey(build(WEEKLY))
    monday_nine = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)  # Monday 09:00 CET
    j.state = fresh(j.scenario, entered=monday_nine)
    first = j.advance(monday_nine)
    assert len(first.sends) == 1 and first.state.status == ACTIVE
    assert first.state.due_at == monday_nine + 7 * DAY
    now = monday_nine
    for _ in range(3):
        assert j.state is not None and j.state.due_at is not None
        now = j.state.due_at
        assert len(j.advance(now).sends) == 1
    # 09:00 local every Monday, across the switch to summer time on March 30
    assert [s.request.send_key for s in j.sends] == [
        f"{VERSION}:1:digest:2",
        f"{VERSION}:1:digest:4",
        f"{VERSION}:1:digest:6",
        f"{VERSION}:1:digest:8",
    ]
    assert now == datetime(2025, 3, 24, 8, 0, tzinfo=UTC)
    assert j.state is not None and j.state.due_at == datetime(2025, 3, 31, 7, 0, tzinfo=UTC)


def test_weekday_only_wait_in_a_loop_waits_for_the_next_allowed_day() -> None:
    j = Journey(build(WEEKLY.replace('    at: "09:00"\n', "")))
    tr = j.advance(T0)  # Monday: passes at once, sends, comes back: next Monday 00:00 Paris
    assert len(tr.sends) == 1
    assert tr.state.due_at == datetime(2025, 3, 9, 23, 0, tzinfo=UTC)


def test_send_keys_are_unique_per_visit_in_a_loop_with_a_wait() -> None:
    scenario = build(
        """\
        steps:
          nudge:
            type: send
            channel: email
            content: {subject: Nudge, text: Nudge}
            next: pause
          pause:
            type: wait
            duration: 1d
            next: nudge
        """
    )
    j = Journey(scenario)
    for day in range(4):
        j.advance(T0 + day * DAY)
    keys = [s.request.send_key for s in j.sends]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert keys[0] == f"{VERSION}:1:nudge:1" and keys[1] == f"{VERSION}:1:nudge:3"
    assert j.state is not None
    assert send_key(j.state, "nudge") == f"{VERSION}:1:nudge:{j.state.visits}"


POINTS_LOOP = """\
steps:
  listen:
    type: wait_event
    event: purchase
    timeout: 30d
    on_event: points
    on_timeout: null
  points:
    type: update
    add_score: 10
    next: listen
"""


def test_wait_event_loop_counts_each_event_once() -> None:
    # The virtual clock of `simulate` runs each pass at an event's own instant: the event that
    # woke the wait must not wake it again on the way round the loop, nor at the next pass.
    j = Journey(build(POINTS_LOOP), person=contact(score=0))
    j.advance(T0)
    j.events = [ev(1, "purchase", T0 + HOUR)]
    first = j.advance(T0 + HOUR)
    assert first.profile.score_delta == 10 and first.state.status == ACTIVE
    assert first.state.step_id == "listen" and first.state.due_at == T0 + HOUR + 30 * DAY
    assert j.advance(T0 + 2 * HOUR).profile.score_delta == 0
    j.events.append(ev(2, "purchase", T0 + 3 * HOUR))
    assert j.advance(T0 + 3 * HOUR).profile.score_delta == 10
    assert j.person.score == 20


def test_one_event_does_not_resolve_two_waits_in_a_row() -> None:
    scenario = build(
        """\
        steps:
          first-order:
            type: wait_event
            event: order_placed
            timeout: 30d
            on_event: second-order
            on_timeout: null
          second-order:
            type: wait_event
            event: order_placed
            timeout: 30d
            on_event: loyal
            on_timeout: null
          loyal:
            type: exit
            reason: loyal
        """
    )
    j = Journey(scenario)
    j.advance(T0)
    j.events = [ev(1, "order_placed", T0 + HOUR)]
    assert j.advance(T0 + HOUR).state.step_id == "second-order"
    assert j.advance(T0 + 2 * HOUR).state.status == ACTIVE
    j.events.append(ev(2, "order_placed", T0 + 3 * HOUR))
    assert j.advance(T0 + 3 * HOUR).state.end_reason == "loyal"
