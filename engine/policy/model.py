"""The workspace policy (`scenarios/policy.yaml`): consent defaults, quiet hours, caps, outcomes
and the pressure barometer's settings. Data only; the gate in engine/policy/gate.py applies it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta

MARKETING = "marketing"  # in a cap's channels: every marketing channel, weighted
CONSENT_MODES = ("opt_in", "opt_out")  # what an unknown consent means for marketing
OUTCOMES = ("skip", "defer", "fallback", "exit")
CALENDAR = ("day", "week")


@dataclass(frozen=True)
class QuietRule:
    """No marketing on these channels between `start` and `end` local time (may wrap midnight),
    nor on `days_off` weekdays (0 = Monday), nor on the public holidays of `holidays`."""

    id: str
    channels: tuple[str, ...]
    start: time | None = None
    end: time | None = None
    days_off: frozenset[int] = frozenset()
    holidays: str | None = None  # a country code: FR


@dataclass(frozen=True)
class CapRule:
    """At most `max` sends (weighted when across channels) per rolling `window` or per local
    calendar day/week. Transactional sends count against a cap but are never blocked by one."""

    id: str
    channels: tuple[str, ...]  # or (MARKETING,)
    max: float
    window: timedelta | None = None
    calendar: str | None = None
    weighted: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a blocked send does unless its step says otherwise."""

    action: str = "skip"
    defer_max: timedelta = timedelta(days=2)
    fallback: Mapping[str, str] = field(default_factory=dict)  # channel → less intrusive one


@dataclass(frozen=True)
class PressureConfig:
    """The barometer: a score that decays with a half-life, raised by weighted sends (marketing
    and transactional) and negative signals, lowered by engagement. Its state tightens or loosens
    the caps, and with `block_over` stops the intrusive channels of an over-pressured contact."""

    half_life: timedelta = timedelta(days=7)
    under: float = 1.0  # score below: under-pressure
    over: float = 6.0  # score above: over-pressure
    signals: Mapping[str, float] = field(default_factory=dict)  # event name → contribution
    over_factor: float = 0.5  # caps are multiplied by this for over-pressured contacts
    under_extra: float = 1.0  # and raised by this for under-pressured ones
    block_over: bool = False  # over-pressure blocks marketing outright...
    # ...on channels at least this intrusive: a quiet channel (the on-site banner, 0.5) stays
    # open, so a journey can still reach an over-pressured contact through a declared fallback.
    block_over_min_weight: float = 1.0

    def blocks(self, weight: float) -> bool:
        """Whether over-pressure blocks marketing on a channel of this weight."""
        return self.block_over and weight >= self.block_over_min_weight

    @property
    def over_rule(self) -> str:
        """The rule id journaled when over-pressure blocks a send."""
        return f"pressure:over:weight>={self.block_over_min_weight:g}"


@dataclass(frozen=True)
class Policy:
    format_version: int = 1
    topics: Mapping[str, str] = field(default_factory=lambda: {"newsletter": "Newsletter"})
    consent_defaults: Mapping[str, str] = field(default_factory=dict)  # channel → opt_in|opt_out
    double_opt_in: frozenset[str] = frozenset()
    consent_expiry: timedelta | None = None
    quiet: tuple[QuietRule, ...] = ()
    caps: tuple[CapRule, ...] = ()
    spacing: timedelta | None = None  # minimum time between two sends of one scenario
    weights: Mapping[str, float] = field(default_factory=dict)  # overrides channel weights
    outcome: Outcome = Outcome()
    pressure: PressureConfig = PressureConfig()
    content_hash: str = ""

    def consent_mode(self, channel: str) -> str:
        """opt_in (unknown blocks marketing) unless the policy says opt_out for the channel."""
        return self.consent_defaults.get(channel, "opt_in")
