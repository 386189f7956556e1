"""The policy gate: address → suppression → consent → blackout dates → quiet hours → pressure
→ spacing → caps → the program's caps → the program's budget (engine.policy.programs).

Each check returns None (fine) or a Block with its rule id and, when the block lifts by itself,
the instant it does. The first block decides; the send step's declared outcome (or the policy's
default) turns it into a decision: skip, defer (bounded by defer_max), fall back to another
channel, or exit. Blackouts and quiet hours always defer: they delay a message, never drop it.
Over-pressure blocks only channels at least as intrusive as `block_over_min_weight`, so a
fallback to a quieter one (the on-site banner) can still reach the contact.

Transactional sends are never blocked by suppression, consent, quiet hours, pressure, caps or
budgets (they carry no marketing), but they count in caps (they are in the batch's sends), in
their program's spend and in the barometer (the runner records every send). Everything a gate
needs is loaded once per batch, for all its contacts, under a per-contact lock, in the
transaction that reserves the sends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from channels import channel_info
from engine.policy.base import ADDRESS_FIELDS, ALLOW, Decision, SendRequest
from engine.policy.blackouts import blackout_until
from engine.policy.holidays import CONTACT, contact_calendar, is_holiday
from engine.policy.model import MARKETING, CapRule, Policy, QuietRule
from engine.runtime.state import ContactView
from engine.runtime.timing import local_to_utc, zone_for

if TYPE_CHECKING:
    from engine.policy.programs import BudgetBook
    from engine.spec.programs import Program


@dataclass(frozen=True)
class PastSend:
    at: datetime
    channel: str
    scenario_id: str
    kind: str


@dataclass(frozen=True)
class Block:
    reason: str  # the rule id: consent:promotions:opted_out, cap:email-week, quiet:sms-night...
    until: datetime | None = None  # when the block lifts by itself (quiet hours, caps)
    always_defer: bool = False  # blackouts, quiet hours


@dataclass
class ContactPolicy:
    """What the gate knows of one contact for this batch; sends grow as the batch allows more."""

    sends: list[PastSend] = field(default_factory=list)
    consent: Callable[[str, str], tuple[bool, str]] | None = None  # (channel, topic) → ok, rule
    suppressed: Callable[[str], str | None] | None = None  # channel → rule id or None
    caps_factor: Callable[[str], tuple[float, float]] | None = None  # channel → (factor, extra)
    pressure_state: Callable[[str], str] | None = None  # channel → under|equilibrium|over


def quiet_until(
    rule: QuietRule, local: datetime, zone: ZoneInfo, calendar: str | None = None
) -> datetime | None:
    """If `local` falls in the rule's quiet period, the first instant after it; else None.
    `calendar` is the contact's, for a rule with `holidays: contact`."""
    holidays = calendar if rule.holidays == CONTACT else rule.holidays
    probe = local
    for _ in range(40):  # days off, holidays and nights chain; 40 steps is weeks ahead
        day_off = probe.weekday() in rule.days_off or (
            holidays is not None and is_holiday(holidays, probe.date())
        )
        if day_off:
            probe = datetime.combine(probe.date() + timedelta(days=1), time(0), tzinfo=zone)
            continue
        end = _night_end(rule, probe)
        if end is None:
            break
        probe = end
    if probe == local:
        return None
    return local_to_utc(probe.date(), probe.time(), zone)


def _night_end(rule: QuietRule, local: datetime) -> datetime | None:
    """The end of the nightly window containing `local`, or None."""
    if rule.start is None or rule.end is None:
        return None
    now, start, end = local.time(), rule.start, rule.end
    day = local.date()
    if start <= end:  # e.g. 12:00-14:00
        inside = start <= now < end
        return datetime.combine(day, end, tzinfo=local.tzinfo) if inside else None
    if now >= start:  # e.g. 20:00-08:00, evening part
        return datetime.combine(day + timedelta(days=1), end, tzinfo=local.tzinfo)
    if now < end:  # morning part
        return datetime.combine(day, end, tzinfo=local.tzinfo)
    return None


def withdrawal(
    contact: ContactView, data: ContactPolicy, channel: str, topic: str | None
) -> Block | None:
    """The checks that stand for the contact's own choice (the profile's opt-out flag, the
    suppression list, consent), in the gate's order. The delivery loop asks them again of a
    marketing message already queued, so a withdrawal reaches it with the same rule id."""
    if contact.opted_out:
        return Block("consent:all:opted_out")
    if data.suppressed is not None:
        rule = data.suppressed(channel)
        if rule:
            return Block(rule)
    if data.consent is not None:
        allowed, rule = data.consent(channel, topic or "*")
        if not allowed:
            return Block(rule)
    return None


class PolicyGate:
    """Decides for one batch. Not shared between batches or threads."""

    def __init__(
        self,
        policy: Policy,
        default_zone: str,
        contacts: Mapping[int, ContactPolicy],
    ) -> None:
        self.policy = policy
        self.default_zone = default_zone
        self.contacts = contacts
        self._weights: dict[str, float] = {}
        self._periods: dict[tuple[str, str, datetime], tuple[datetime, datetime | None]] = {}
        self.barometers: dict[int, Any] | None = None  # loaded with the batch, when tracked
        # Channels with a raised health signal: their caps are multiplied by
        # `pressure.health.tighten` (engine.policy.health; set by the gate factory).
        self.tightened: frozenset[str] = frozenset()
        # The programs' caps and budgets (engine.policy.programs; set by the gate factory).
        self.programs: Mapping[str, Program] = {}  # scenario id → its program
        self.budgets: BudgetBook | None = None

    # ------------------------------------------------------------------ decision
    def decide(self, request: SendRequest, contact: ContactView, now: datetime) -> Decision:
        field_name = ADDRESS_FIELDS.get(request.channel)
        if field_name and not getattr(contact, field_name):
            return self._outcome(request, Block(f"address:{field_name}_missing"), now)
        data = self.contacts.get(contact.id) or ContactPolicy()
        if request.kind == "marketing":
            block = self._check(request, contact, data, now)
            if block is not None:
                return self._outcome(request, block, now)
        data.sends.append(PastSend(now, request.channel, request.scenario_id, request.kind))
        program = self.programs.get(request.scenario_id)
        if program is not None and self.budgets is not None:
            self.budgets.record(program, request.channel)
        return ALLOW

    def _check(
        self, request: SendRequest, contact: ContactView, data: ContactPolicy, now: datetime
    ) -> Block | None:
        channel = request.channel
        block = withdrawal(contact, data, channel, request.topic)
        if block is not None:
            return block
        zone = zone_for(contact.timezone, self.default_zone)
        local = now.astimezone(zone)
        for blackout in self.policy.blackouts:
            if blackout.applies(channel):
                until = blackout_until(blackout, local, zone)
                if until is not None:
                    return Block(f"blackout:{blackout.id}", until, always_defer=True)
        calendar = None
        for quiet in self.policy.quiet:
            if channel in quiet.channels:
                if quiet.holidays == CONTACT and calendar is None:
                    calendar = contact_calendar(contact.attributes.get("country"),
                                                self.policy.country)  # fmt: skip
                until = quiet_until(quiet, local, zone, calendar)
                if until is not None:
                    return Block(f"quiet:{quiet.id}", until, always_defer=True)
        pressure = self.policy.pressure
        if data.pressure_state is not None and pressure.blocks(self.weight(channel)):
            if data.pressure_state(channel) == "over":
                return Block(pressure.over_rule)
        spacing = self.policy.spacing
        if spacing is not None:
            last = max(
                (s.at for s in data.sends if s.scenario_id == request.scenario_id), default=None
            )
            if last is not None and now - last < spacing:
                return Block(f"spacing:{request.scenario_id}", last + spacing)
        program = self.programs.get(request.scenario_id)
        if not self.policy.caps and program is None:
            return None
        # The barometer does not move while a batch decides: its factor, once per decision.
        factor = data.caps_factor(channel) if data.caps_factor else (1.0, 0.0)
        for cap in self.policy.caps:
            block = self._cap(cap, request, factor, data.sends, f"cap:{cap.id}", zone, now)
            if block is not None:
                return block
        return self._program(program, request, data, factor, zone, now) if program else None

    def _program(
        self, program: Program, request: SendRequest, data: ContactPolicy,
        factor: tuple[float, float], zone: ZoneInfo, now: datetime,
    ) -> Block | None:  # fmt: skip
        """The program's own caps, counting only its scenarios' sends, then its budget."""
        if program.caps:
            mine = [s for s in data.sends if s.scenario_id in program.scenarios]
            for cap in program.caps:
                rule = f"cap:program:{program.id}:{cap.id}"
                block = self._cap(cap, request, factor, mine, rule, zone, now)
                if block is not None:
                    return block
        if self.budgets is not None and self.budgets.blocks(program, request.channel):
            return Block(f"budget:{program.id}")
        return None

    # ------------------------------------------------------------------ caps
    def weight(self, channel: str) -> float:
        weight = self._weights.get(channel)
        if weight is None:
            weight = self.policy.weights.get(channel)
            if weight is None:
                try:
                    weight = channel_info(channel).weight
                except KeyError:
                    weight = 1.0
            self._weights[channel] = weight
        return weight

    def _cap(
        self, cap: CapRule, request: SendRequest, factors: tuple[float, float],
        sends: list[PastSend], rule: str, zone: ZoneInfo, now: datetime,
    ) -> Block | None:  # fmt: skip
        """Whether `cap`, counting `sends`, blocks the request (`rule`: the id journaled;
        `factors`: the contact's (multiplier, extra) for the request's channel)."""
        across = MARKETING in cap.channels
        if not across and request.channel not in cap.channels:
            return None
        factor, extra = factors
        normal = limit = cap.max * factor + extra
        tighten = self.policy.pressure.health.tighten
        if tighten is not None and request.channel in self.tightened:
            limit = normal * tighten  # a health signal of the channel is raised
        if cap.window is not None:
            start, lifts = now - cap.window, None
        else:  # calendar periods are the same for every contact of a zone in this batch
            key = (cap.calendar or "day", zone.key, now)
            period = self._periods.get(key)
            if period is None:
                period = self._periods[key] = _period(cap, zone, now)
            start, lifts = period
        counted = [
            s for s in sends
            if s.at > start and (across or s.channel in cap.channels)
        ]  # fmt: skip
        used = sum(self.weight(s.channel) if cap.weighted else 1.0 for s in counted)
        cost = self.weight(request.channel) if cap.weighted else 1.0
        if used + cost <= limit + 1e-9:
            return None
        if cap.window is not None:  # rolling: a slot frees when enough old sends leave
            freed, until = used + cost - limit, None
            for s in sorted(counted, key=lambda s: s.at):
                freed -= self.weight(s.channel) if cap.weighted else 1.0
                if freed <= 1e-9:
                    until = s.at + cap.window
                    break
            lifts = until
        if used + cost <= normal + 1e-9:  # only the tightening blocks it: say so
            return Block(f"{rule}:tightened", lifts)
        return Block(rule, lifts)

    # ------------------------------------------------------------------ outcome
    def _outcome(self, request: SendRequest, block: Block, now: datetime) -> Decision:
        default = self.policy.outcome
        action = request.on_blocked or default.action
        defer_max = request.defer_max or default.defer_max
        if block.always_defer or action == "defer":
            first = request.blocked_since or now
            if block.until is not None and block.until - first <= defer_max:
                return Decision("defer", block.reason, until=block.until)
            # Waited long enough (or the block never lifts by itself): give up on this send.
            return Decision("skip", f"{block.reason}:expired" if block.until else block.reason)
        if action == "fallback":
            target = request.fallback or default.fallback.get(request.channel)
            if target and target != request.channel:
                return Decision("fallback", block.reason, channel=target)
            return Decision("skip", block.reason)
        if action == "exit":
            return Decision("exit", block.reason)
        return Decision("skip", block.reason)


def _period(cap: CapRule, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime | None]:
    """(start of the counted period, the instant the next period begins or None if rolling)."""
    if cap.window is not None:
        return now - cap.window, None
    local = now.astimezone(zone)
    day = local.date()
    if cap.calendar == "week":
        day -= timedelta(days=day.weekday())
        following = day + timedelta(days=7)
    else:
        following = day + timedelta(days=1)
    start = local_to_utc(day, time(0), zone)
    return start - timedelta(microseconds=1), local_to_utc(following, time(0), zone)


def lookback(policy: Policy) -> timedelta:
    """How far back a batch must read the ledger to judge every cap and spacing rule."""
    spans = [timedelta(days=8)]  # a calendar week, whatever the zone
    spans += [c.window for c in policy.caps if c.window is not None]
    if policy.spacing is not None:
        spans.append(policy.spacing)
    return max(spans)


def describe(decision: Decision) -> dict[str, Any]:
    """JSON-ready form of a decision, for the journal and the API."""
    out: dict[str, Any] = {"action": decision.action, "reason": decision.reason}
    if decision.until is not None:
        out["until"] = decision.until.isoformat()
    if decision.channel:
        out["channel"] = decision.channel
    return out
