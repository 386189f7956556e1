"""The compiled, immutable Scenario and its parts. Data only: behaviour lives in the runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from engine.spec.conditions import Condition, PropertyFilter
    from engine.spec.expressions import CompiledTemplate

OBJECTIVES = (
    "activation",
    "loyalty",
    "reactivation",
    "basket",
    "nurturing",
    "newsletter",
    "other",
)
KINDS = ("marketing", "transactional")
REENTRY = ("never", "always", "cooldown")


@dataclass(frozen=True)
class Step:
    """Base of every step; subclasses add their fields and name their exits."""

    type: ClassVar[str] = ""
    exit_fields: ClassVar[tuple[str, ...]] = ("next",)
    pauses: ClassVar[bool] = False  # a step that can make time pass (breaks loops)

    id: str
    label: str | None = None

    def exits(self) -> dict[str, str | None]:
        """Exit name → target step id (None: the journey ends there)."""
        return {name: getattr(self, name) for name in self.exit_fields}

    def targets(self) -> list[str]:
        """Step ids this step can lead to."""
        return [t for t in self.exits().values() if t]


@dataclass(frozen=True)
class WaitStep(Step):
    type: ClassVar[str] = "wait"
    pauses: ClassVar[bool] = True
    duration: timedelta = timedelta(0)
    next: str | None = None


@dataclass(frozen=True)
class WaitUntilStep(Step):
    """Wait until a local time of day and/or one of some weekdays, in the contact's zone."""

    type: ClassVar[str] = "wait_until"
    pauses: ClassVar[bool] = True
    at: time | None = None
    weekdays: frozenset[int] | None = None  # 0 = Monday
    next: str | None = None


@dataclass(frozen=True)
class WaitDateStep(Step):
    """Wait until a date attribute of the contact, plus an offset, at a local time."""

    type: ClassVar[str] = "wait_date"
    pauses: ClassVar[bool] = True
    attribute: str = ""
    offset: timedelta = timedelta(0)
    at: time | None = None
    next: str | None = None


@dataclass(frozen=True)
class WaitEventStep(Step):
    """Wait for an event; leave by `on_event` when it comes, by `on_timeout` otherwise."""

    type: ClassVar[str] = "wait_event"
    exit_fields: ClassVar[tuple[str, ...]] = ("on_event", "on_timeout")
    pauses: ClassVar[bool] = True
    event: str = ""
    where: tuple[PropertyFilter, ...] = ()
    timeout: timedelta | None = None
    on_event: str | None = None
    on_timeout: str | None = None


@dataclass(frozen=True)
class ConditionStep(Step):
    type: ClassVar[str] = "condition"
    exit_fields: ClassVar[tuple[str, ...]] = ("then", "else_")
    condition: Condition | None = None
    then: str | None = None
    else_: str | None = None

    def exits(self) -> dict[str, str | None]:
        return {"then": self.then, "else": self.else_}


@dataclass(frozen=True)
class SwitchCase:
    condition: Condition
    next: str | None
    name: str | None = None


@dataclass(frozen=True)
class SwitchStep(Step):
    """First matching case wins; `default` otherwise."""

    type: ClassVar[str] = "switch"
    cases: tuple[SwitchCase, ...] = ()
    default: str | None = None

    def exits(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {f"cases.{i}": case.next for i, case in enumerate(self.cases)}
        out["default"] = self.default
        return out


@dataclass(frozen=True)
class SplitBranch:
    name: str
    weight: int
    next: str | None


EXPERIMENT_MODES = ("fixed", "sequential")


@dataclass(frozen=True)
class Experiment:
    """How a split step's results are judged (engine.insights.experiments) and routed.

    `mode`: fixed (one test once the minimum sample is in) or sequential (always-valid p-values,
    safe to read every day). `min_effect` is absolute (0.02: two points of conversion rate);
    `tau` the mixing spread of the sequential test (None: min_effect, else 0.02). `bandit_floor`
    turns on Thompson sampling with that least share per arm; `winner` routes every new entry
    outside the holdout to one branch.
    """

    mode: str = "fixed"
    alpha: float = 0.05
    min_effect: float | None = None
    power: float = 0.8
    tau: float | None = None
    auto_winner: bool = False
    bandit_floor: float | None = None
    winner: str | None = None


@dataclass(frozen=True)
class SplitStep(Step):
    """Split by weight (A/B/n); `holdout` percent form a control group that gets nothing.

    A contact's arm is a stable hash of scenario, step, external id and `salt` (runtime.arms).
    """

    type: ClassVar[str] = "split"
    branches: tuple[SplitBranch, ...] = ()
    holdout: int = 0
    salt: str | None = None
    experiment: Experiment = Experiment()

    def exits(self) -> dict[str, str | None]:
        return {f"branches.{b.name}": b.next for b in self.branches}


@dataclass(frozen=True)
class SendStep(Step):
    type: ClassVar[str] = "send"
    channel: str = ""
    template: str | None = None
    content: Mapping[str, str] = field(default_factory=dict)
    topic: str | None = None
    next: str | None = None
    # What happens when the policy blocks this send (None: the policy file's default outcome).
    on_blocked: str | None = None  # skip | defer | fallback | exit
    defer_max: timedelta | None = None
    fallback: str | None = None  # channel to try instead (needs a template part for it)


@dataclass(frozen=True)
class UpdateStep(Step):
    """Update the profile: set attributes, add to the score, add or remove tags."""

    type: ClassVar[str] = "update"
    set: Mapping[str, Any] = field(default_factory=dict)
    add_score: int = 0
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    next: str | None = None


@dataclass(frozen=True)
class WebhookStep(Step):
    type: ClassVar[str] = "webhook"
    url: str = ""
    method: str = "POST"
    payload: Mapping[str, Any] = field(default_factory=dict)
    next: str | None = None


@dataclass(frozen=True)
class StartScenarioStep(Step):
    type: ClassVar[str] = "start_scenario"
    scenario: str = ""
    next: str | None = None


@dataclass(frozen=True)
class ExitStep(Step):
    type: ClassVar[str] = "exit"
    exit_fields: ClassVar[tuple[str, ...]] = ()
    reason: str = "exit"


@dataclass(frozen=True)
class EventTrigger:
    event: str
    where: tuple[PropertyFilter, ...] = ()


@dataclass(frozen=True)
class ScheduleTrigger:
    cron: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class AnniversaryTrigger:
    """Fires yearly on a date attribute (birthday, sign-up date) plus an offset, at a local time."""

    attribute: str
    at: time = time(9, 0)
    offset: timedelta = timedelta(0)


@dataclass(frozen=True)
class ManualTrigger:
    """Enrollment only through the CLI or the API."""


@dataclass(frozen=True)
class SegmentEnteredTrigger:
    """Fires when a contact becomes a member of the segment (stored membership changes)."""

    segment: str


@dataclass(frozen=True)
class SegmentExitedTrigger:
    """Fires when a contact stops being a member of the segment."""

    segment: str


Trigger = (
    EventTrigger
    | ScheduleTrigger
    | AnniversaryTrigger
    | ManualTrigger
    | SegmentEnteredTrigger
    | SegmentExitedTrigger
)
SEGMENT_TRIGGERS = (SegmentEnteredTrigger, SegmentExitedTrigger)


@dataclass(frozen=True)
class EntryRules:
    reentry: str = "never"
    cooldown: timedelta | None = None
    concurrent: bool = False


@dataclass(frozen=True)
class Goal:
    """A conversion: the event within `within` of entry ends the enrollment as converted."""

    event: str
    where: tuple[PropertyFilter, ...] = ()
    within: timedelta | None = None
    value: str | None = None  # the goal event's property holding the conversion's revenue


@dataclass(frozen=True)
class ExitRule:
    """An event that ends the enrollment (e.g. unsubscribed); not a conversion."""

    event: str
    where: tuple[PropertyFilter, ...] = ()


@dataclass(frozen=True)
class SegmentExitRule:
    """Leaving the segment ends the enrollment; only scenarios that say so lose their contacts."""

    segment: str


@dataclass(frozen=True)
class Scenario:
    """A validated, compiled scenario. Immutable; `content_hash` identifies a version."""

    id: str
    name: str
    format_version: int
    objective: str
    priority: int
    kind: str
    steps: Mapping[str, Step]
    start: str
    description: str = ""
    topic: str | None = None
    audience: Condition | None = None
    triggers: tuple[Trigger, ...] = ()
    entry: EntryRules = EntryRules()
    goal: Goal | None = None
    exit_on: tuple[ExitRule, ...] = ()  # the event rules of `exit_on:`
    segment_exits: tuple[SegmentExitRule, ...] = ()  # its `segment_exited:` rules
    data: Mapping[str, Any] = field(default_factory=dict)
    # Who this scenario's emails come from: from_address, from_name, reply_to (each optional;
    # the email channel's settings fill the rest).
    sender: Mapping[str, str] = field(default_factory=dict)
    fixed_cost: float = 0.0  # `cost: {fixed: 250}`: what the journey costs beyond its messages
    templates: Mapping[str, CompiledTemplate] = field(default_factory=dict)
    content_hash: str = ""

    @property
    def is_marketing(self) -> bool:
        return self.kind == "marketing"

    def listened_events(self) -> frozenset[str]:
        """Event names that can change an enrollment of this scenario (goal, exits, waits)."""
        names = {rule.event for rule in self.exit_on}
        if self.goal:
            names.add(self.goal.event)
        names.update(s.event for s in self.steps.values() if isinstance(s, WaitEventStep))
        return frozenset(names)

    def conditions(self) -> list[Condition]:
        """Every condition of the scenario: the audience, then the steps' in order."""
        found = [self.audience] if self.audience is not None else []
        for s in self.steps.values():
            if isinstance(s, ConditionStep) and s.condition is not None:
                found.append(s.condition)
            elif isinstance(s, SwitchStep):
                found.extend(case.condition for case in s.cases)
        return found

    def segments(self) -> frozenset[str]:
        """Ids of the segments the scenario reads: triggers, exits, audience and conditions."""
        from engine.spec.conditions import segment_names

        ids = {t.segment for t in self.triggers if isinstance(t, SEGMENT_TRIGGERS)}
        ids.update(rule.segment for rule in self.segment_exits)
        for cond in self.conditions():
            ids.update(segment_names(cond))
        return frozenset(ids)

    def reads_policy(self) -> bool:
        """True when a condition reads consent or pressure (so the worker loads them)."""
        from engine.spec.conditions import reads_policy

        return any(reads_policy(c) for c in self.conditions())

    def history_events(self) -> frozenset[str]:
        """Event names that conditions read from the history, plus the listened ones."""
        from engine.spec.conditions import event_names

        names = set(self.listened_events())
        for cond in self.conditions():
            names.update(event_names(cond))
        return frozenset(names)


def is_amount(value: Any) -> bool:
    """Whether a goal event's value property holds an amount (a finite number, not a boolean)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and value == value
        and abs(value) != float("inf")
    )  # fmt: skip
