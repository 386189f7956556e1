"""The workspace policy (`scenarios/policy.yaml`): consent defaults, quiet hours, caps, outcomes
and the pressure barometer's settings. Data only; the gate in engine/policy/gate.py applies it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time, timedelta

MARKETING = "marketing"  # in a cap's channels: every marketing channel, weighted
CONSENT_MODES = ("opt_in", "opt_out")  # what an unknown consent means for marketing
OUTCOMES = ("skip", "defer", "fallback", "exit")
CALENDAR = ("day", "week")


@dataclass(frozen=True)
class QuietRule:
    """No marketing on these channels between `start` and `end` local time (may wrap midnight),
    nor on `days_off` weekdays (0 = Monday), nor on the public holidays of `holidays`: a
    calendar (`FR`, `DE-BY`) or `contact`, the contact's own country else the policy's."""

    id: str
    channels: tuple[str, ...]
    start: time | None = None
    end: time | None = None
    days_off: frozenset[int] = frozenset()
    holidays: str | None = None  # a calendar (FR, FR-57) or "contact"


@dataclass(frozen=True)
class Blackout:
    """No marketing on these channels (or every one, with MARKETING) on these local days: a send
    waits for the first day after them. `reason` is shown next to the rule id."""

    id: str
    channels: tuple[str, ...]
    days: frozenset[date]
    reason: str | None = None

    def applies(self, channel: str) -> bool:
        return MARKETING in self.channels or channel in self.channels


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


HEALTH_RATES = ("open_rate", "click_rate", "unsubscribe_rate", "complaint_rate", "bounce_rate")
OVER_PRESSURED = "over_pressured"  # the share of contacts with a reading that are over-pressured
HEALTH_SIGNALS = (*HEALTH_RATES, OVER_PRESSURED)


@dataclass(frozen=True)
class Threshold:
    """When a health signal is raised: above `max` or below `min` (absolute), or above `rise`
    times / below `fall` times its own trailing baseline. Any of them, or none (shown only)."""

    max: float | None = None
    min: float | None = None
    rise: float | None = None
    fall: float | None = None


DEFAULT_HEALTH_SIGNALS: Mapping[str, Threshold] = {
    "open_rate": Threshold(fall=0.7),
    "click_rate": Threshold(fall=0.7),
    "unsubscribe_rate": Threshold(max=0.005, rise=1.5),
    "complaint_rate": Threshold(max=0.001, rise=2.0),
    "bounce_rate": Threshold(max=0.02),
    OVER_PRESSURED: Threshold(rise=1.5),
}


@dataclass(frozen=True)
class HealthConfig:
    """Pressure health: each channel's rates over the `recent` span against the `baseline`
    span before it. A signal counts once the channel had `min_sends` sends in the span (and in
    the baseline, for `rise` and `fall`). With `tighten`, caps on a channel with a raised signal
    are multiplied by it."""

    recent: timedelta = timedelta(days=7)
    baseline: timedelta = timedelta(days=28)
    min_sends: int = 200
    signals: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_HEALTH_SIGNALS))
    tighten: float | None = None  # e.g. 0.5: caps halve on a channel while a signal is raised


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
    health: HealthConfig = HealthConfig()

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
    country: str | None = None  # the workspace's calendar, for contacts without a country
    quiet: tuple[QuietRule, ...] = ()
    blackouts: tuple[Blackout, ...] = ()
    caps: tuple[CapRule, ...] = ()
    spacing: timedelta | None = None  # minimum time between two sends of one scenario
    weights: Mapping[str, float] = field(default_factory=dict)  # overrides channel weights
    outcome: Outcome = Outcome()
    pressure: PressureConfig = PressureConfig()
    content_hash: str = ""

    def consent_mode(self, channel: str) -> str:
        """opt_in (unknown blocks marketing) unless the policy says opt_out for the channel."""
        return self.consent_defaults.get(channel, "opt_in")
