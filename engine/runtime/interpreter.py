"""The interpreter: advance one enrollment as far as it can go at `now`. Pure: no I/O, no clock.

`advance` runs steps until the enrollment must wait (a wait step, a deferred send) or ends. It
returns a Transition holding the new state and the effects for the runner to persist: journal
records, sends (already decided by the gate and rendered), profile changes, scenarios to start.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

from engine.policy.base import Decision, Gate, SendRequest
from engine.runtime.arms import HOLDOUT, holdout_until, split_arm
from engine.runtime.state import (
    ACTIVE,
    ATTRIBUTABLE,
    COMPLETED,
    CONVERTED,
    EXITED,
    FAILED,
    ContactView,
    EnrollmentState,
    EventView,
    History,
    ProfileChanges,
)
from engine.runtime.timing import date_instant, local_to_utc, next_local_time, zone_for
from engine.spec import model
from engine.spec.conditions import Condition, matches_all
from engine.spec.expressions import CompiledTemplate, RenderError
from engine.spec.model import is_amount
from engine.spec.templates import fill_payload

MAX_STEPS_PER_ADVANCE = 200


@dataclass(frozen=True)
class JournalRecord:
    kind: str
    step_id: str | None = None
    reason: str | None = None
    data: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SendEffect:
    """A send the gate allowed, rendered, ready for the ledger."""

    request: SendRequest
    parts: Mapping[str, str]
    decision: Decision
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Transition:
    state: EnrollmentState
    journal: list[JournalRecord] = field(default_factory=list)
    sends: list[SendEffect] = field(default_factory=list)
    profile: ProfileChanges = field(default_factory=ProfileChanges)
    starts: list[str] = field(default_factory=list)
    steps_run: int = 0
    # Within this advance: waits passed without waiting (a loop back to one waits for a later
    # instant), and the instant just after the last event a wait_event consumed (the steps after
    # it start later, so the same event cannot also resolve the next wait_event).
    passed: set[str] = field(default_factory=set)
    consumed_until: datetime | None = None
    # The contact's profile before the first update step, restored if the loop guard trips.
    profile_before: tuple[dict[str, Any], list[str], int] | None = None


@dataclass
class _Ctx:
    """The EvalContext conditions read."""

    contact: ContactView
    now: datetime
    entered_at: datetime | None
    event: EventView | None
    history: History
    scenario: model.Scenario

    def events(self, name: str) -> list[EventView]:
        return list(self.history.events(name))

    def expression_vars(self) -> dict[str, Any]:
        return {
            "contact": self.contact.template_view(),
            "event": _event_view(self.event),
            "scenario": {"id": self.scenario.id, "name": self.scenario.name},
            "data": dict(self.scenario.data),
            "now": self.now,
        }


class _TemplateVars(Mapping[str, Any]):
    """What templates see, each variable built the first time it is read: a plain message
    ("Hello {{ contact.first_name }}", engine.spec.templates.PlannedTemplate) reads only one."""

    __slots__ = ("_built", "_ctx")
    NAMES = ("contact", "event", "scenario", "data", "now", "links")

    def __init__(self, ctx: _Ctx) -> None:
        self._ctx = ctx
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        try:
            return self._built[name]
        except KeyError:
            pass
        ctx = self._ctx
        if name == "contact":
            value: Any = ctx.contact.template_view()
        elif name == "event":
            value = _event_view(ctx.event)
        elif name == "scenario":
            value = {"id": ctx.scenario.id, "name": ctx.scenario.name}
        elif name == "data":
            value = dict(ctx.scenario.data)
        elif name == "now":
            value = ctx.now
        elif name == "links":
            value = {}
        else:
            raise KeyError(name)
        self._built[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)


def _event_view(event: EventView | None) -> dict[str, Any]:
    if event is None:
        return {}
    view = dict(event.properties)
    view["name"] = event.name
    view["occurred_at"] = event.occurred_at.isoformat()
    return view


def _failure(exc: RenderError) -> dict[str, Any]:
    return {"error": str(exc), "code": exc.code}


def adapt_parts(parts: Mapping[str, str], channel: str) -> dict[str, str]:
    """A message written for one channel, reshaped for a fallback channel's parts."""
    text = parts.get("text") or parts.get("body") or parts.get("subject") or ""
    title = parts.get("subject") or parts.get("title") or ""
    if channel in ("push", "onsite"):
        return {"title": title, "body": parts.get("body") or text}
    if channel == "email":
        out = {"subject": title or text[:80], "text": text}
        if "html" in parts:
            out["html"] = parts["html"]
        return out
    return {"text": text}


def send_key(state: EnrollmentState, step_id: str) -> str:
    """Unique per (version, enrollment, step, visit): a re-run after a crash gets the same key."""
    return f"{state.version_id}:{state.id}:{step_id}:{state.visits}"


class Interpreter:
    """Runs one scenario version. Holds no per-enrollment state; `advance` is the whole API."""

    def __init__(self, scenario: model.Scenario, gate: Gate, default_zone: str = "UTC") -> None:
        self.scenario = scenario
        self.gate = gate
        self.default_zone = default_zone
        # Bandit split steps: step id → branch → share of new entries, set by the worker from
        # the stored experiment state (the interpreter reads no database).
        self.arm_shares: Mapping[str, Mapping[str, float]] = {}

    # ------------------------------------------------------------------ entry point
    def advance(
        self, state: EnrollmentState, contact: ContactView, history: History, now: datetime
    ) -> Transition:
        # The interpreter works on its own copy; the caller's state is never changed.
        tr = Transition(state.copy())
        if state.status != ACTIVE:
            return tr
        ctx = _Ctx(contact, now, state.entered_at, state.trigger_event, history, self.scenario)
        if self._check_exit_rules(tr, ctx) or self._check_goal(tr, ctx):
            return tr
        if tr.state.step_entered_at is None:
            target: str | object | None = tr.state.step_id
        else:
            resumed = self._resume(tr, ctx)
            if resumed is _STAY:
                return tr
            target = resumed
        self._run_from(tr, ctx, target)
        return tr

    # ------------------------------------------------------------------ goal and exits
    def _since_entry(self, ctx: _Ctx, name: str) -> list[EventView]:
        """Events after entry, up to now; the event that started the enrollment never counts."""
        entered = ctx.entered_at
        trigger_id = ctx.event.id if ctx.event else None
        return [
            e
            for e in ctx.events(name)
            if (entered is None or e.occurred_at >= entered)
            and e.occurred_at <= ctx.now
            and e.id != trigger_id
        ]

    def _check_exit_rules(self, tr: Transition, ctx: _Ctx) -> bool:
        for rule in self.scenario.exit_on:
            for event in self._since_entry(ctx, rule.event):
                if matches_all(rule.where, event.properties, ctx.now):
                    self._end(tr, EXITED, f"exit_on:{rule.event}", ctx.now, {"event_id": event.id})
                    return True
        return False

    def _check_goal(self, tr: Transition, ctx: _Ctx) -> bool:
        goal = self.scenario.goal
        if goal is None:
            return False
        for event in self._since_entry(ctx, goal.event):
            if goal.within is not None and event.occurred_at > tr.state.entered_at + goal.within:
                continue
            if matches_all(goal.where, event.properties, ctx.now):
                data: dict[str, Any] = {"event_id": event.id}
                if goal.value is not None and is_amount(event.properties.get(goal.value)):
                    data["value"] = event.properties[goal.value]  # the revenue, for the KPIs
                variant = tr.state.vars.get("variant")
                if variant:
                    data["variant"] = variant
                self._end(tr, CONVERTED, f"goal:{goal.event}", ctx.now, data)
                return True
        return False

    # ------------------------------------------------------------------ waiting steps
    def _resume(self, tr: Transition, ctx: _Ctx) -> str | object | None:
        """Called for an enrollment parked at a step. Returns the next step id, or _STAY."""
        state = tr.state
        step = self.scenario.steps.get(state.step_id or "")
        if step is None:
            # The step vanished (should not happen: versions are immutable); never strand anyone.
            self._end(tr, FAILED, "step_missing", ctx.now)
            return _STAY
        if isinstance(step, model.WaitEventStep):
            entered = state.step_entered_at or state.entered_at
            trigger_id = ctx.event.id if ctx.event else None
            for event in ctx.events(step.event):
                if event.id == trigger_id:
                    continue
                if entered <= event.occurred_at <= ctx.now and matches_all(
                    step.where, event.properties, ctx.now
                ):
                    tr.journal.append(
                        JournalRecord("woken", step.id, "event", {"event_id": event.id})
                    )
                    tr.consumed_until = event.occurred_at + _TICK
                    return step.on_event
            if state.deadline is not None and ctx.now >= state.deadline:
                tr.journal.append(JournalRecord("woken", step.id, "timeout"))
                return step.on_timeout
            self._park(tr, state.deadline, waiting_for=step.event)
            return _STAY
        if isinstance(step, model.SplitStep):  # only the holdout waits at a split
            return self._hold(tr, ctx, state.deadline)
        if isinstance(step, model.SendStep):
            # A deferred send: try again once the deferral has passed.
            if state.deadline is not None and ctx.now < state.deadline:
                self._park(tr, state.deadline)
                return _STAY
            return self._send(tr, ctx, step, retry=True)
        if state.deadline is not None and ctx.now < state.deadline:
            self._park(tr, state.deadline)
            return _STAY
        tr.passed.add(step.id)
        return step.exits().get("next") if "next" in step.exit_fields else None

    def _park(self, tr: Transition, until: datetime | None, waiting_for: str | None = None) -> None:
        st = tr.state
        st.deadline = st.due_at = until
        st.waiting_for = waiting_for

    # ------------------------------------------------------------------ running steps
    def _run_from(self, tr: Transition, ctx: _Ctx, step_id: str | object | None) -> None:
        while True:
            if step_id is _STAY:
                return
            if step_id is None:
                self._end(tr, COMPLETED, "completed", ctx.now, attributable=True)
                return
            if tr.steps_run >= MAX_STEPS_PER_ADVANCE:
                self._abort(tr, ctx)
                return
            assert isinstance(step_id, str)
            step = self.scenario.steps.get(step_id)
            if step is None:
                self._end(tr, FAILED, "step_missing", ctx.now, {"step": step_id})
                return
            st = tr.state
            st.step_id = step.id
            st.step_entered_at = (
                ctx.now if tr.consumed_until is None else max(ctx.now, tr.consumed_until)
            )
            st.deadline = st.due_at = None
            st.waiting_for = None
            st.visits += 1
            tr.steps_run += 1
            step_id = self._enter(tr, ctx, step)

    def _enter(self, tr: Transition, ctx: _Ctx, step: model.Step) -> str | object | None:
        """Execute a step just entered; return the next step id, None to complete, or _STAY."""
        now = ctx.now
        if isinstance(step, model.SendStep):
            return self._send(tr, ctx, step, retry=False)
        record = JournalRecord("step", step.id)
        if isinstance(step, model.WaitStep):
            return self._wait(tr, step, record, now + step.duration, step.next, now)
        if isinstance(step, model.WaitUntilStep):
            zone = zone_for(ctx.contact.timezone, self.default_zone)
            after = now
            if step.id in tr.passed:
                # Back here in the same advance (a loop): the next occurrence, not this one again.
                tomorrow = now.astimezone(zone).date() + timedelta(days=1)
                after = now + _TICK if step.at else local_to_utc(tomorrow, time(0, 0), zone)
            when = next_local_time(after, zone, step.at, step.weekdays)
            return self._wait(tr, step, record, when, step.next, now)
        if isinstance(step, model.WaitDateStep):
            zone = zone_for(ctx.contact.timezone, self.default_zone)
            value = ctx.contact.attributes.get(step.attribute)
            until = date_instant(value, step.offset, step.at, zone)
            if until is None:
                tr.journal.append(JournalRecord("step", step.id, "date_missing"))
                return step.next
            return self._wait(tr, step, record, until, step.next, now)
        if isinstance(step, model.WaitEventStep):
            tr.journal.append(record)
            until = now + step.timeout if step.timeout else None
            # The event may already be there (it arrived in the same batch as the entry).
            tr.state.deadline = until
            if tr.state.visits == 1:
                # First step of the journey: the wait began when the journey did (the trigger),
                # not when the worker got to it, so an event in between still counts.
                tr.state.step_entered_at = min(tr.state.entered_at, now)
            return self._resume(tr, ctx)
        if isinstance(step, model.ConditionStep):
            assert step.condition is not None
            result = self._holds(tr, step.id, step.condition, ctx)
            tr.journal.append(JournalRecord("step", step.id, "then" if result else "else"))
            return step.then if result else step.else_
        if isinstance(step, model.SwitchStep):
            for i, case in enumerate(step.cases):
                if self._holds(tr, step.id, case.condition, ctx):
                    tr.journal.append(JournalRecord("step", step.id, case.name or f"case {i}"))
                    return case.next
            tr.journal.append(JournalRecord("step", step.id, "default"))
            return step.default
        if isinstance(step, model.SplitStep):
            return self._split(tr, ctx, step)
        if isinstance(step, model.UpdateStep):
            self._update(tr, ctx.contact, step)
            tr.journal.append(record)
            return step.next
        if isinstance(step, model.WebhookStep):
            return self._webhook(tr, ctx, step)
        if isinstance(step, model.StartScenarioStep):
            tr.starts.append(step.scenario)
            tr.journal.append(JournalRecord("step", step.id, data={"scenario": step.scenario}))
            return step.next
        if isinstance(step, model.ExitStep):
            tr.journal.append(record)
            self._end(tr, EXITED, step.reason, now, attributable=True)
            return _STAY
        raise TypeError(f"no runtime for step type {step.type!r}")  # registry and runtime disagree

    def _wait(
        self,
        tr: Transition,
        step: model.Step,
        record: JournalRecord,
        until: datetime,
        nxt: str | None,
        now: datetime,
    ) -> str | object | None:
        if until <= now:
            tr.journal.append(record)
            tr.passed.add(step.id)
            return nxt
        tr.journal.append(JournalRecord("step", step.id, "wait", {"until": until.isoformat()}))
        self._park(tr, until)
        return _STAY

    def _split(self, tr: Transition, ctx: _Ctx, step: model.SplitStep) -> str | object | None:
        shares = self.arm_shares.get(step.id) if step.experiment.bandit_floor else None
        arm = split_arm(self.scenario.id, step, ctx.contact.external_id, shares)
        tr.state.vars = {**tr.state.vars, "variant": arm}
        if arm != HOLDOUT:
            tr.journal.append(JournalRecord("step", step.id, arm))
            return next(b.next for b in step.branches if b.name == arm)
        until = holdout_until(self.scenario, tr.state.entered_at)
        data = {"until": until.isoformat()} if until is not None else None
        tr.journal.append(JournalRecord("step", step.id, HOLDOUT, data))
        return self._hold(tr, ctx, until)

    def _hold(self, tr: Transition, ctx: _Ctx, until: datetime | None) -> object:
        """The control group waits at the split, receiving nothing, until its goal window closes:
        goal and exit rules apply to it as to everyone, so its conversions count as control."""
        if until is not None and ctx.now < until:
            self._park(tr, until)
        else:
            self._end(tr, EXITED, HOLDOUT, ctx.now, attributable=True)
        return _STAY

    def _update(self, tr: Transition, contact: ContactView, step: model.UpdateStep) -> None:
        if tr.profile_before is None:
            tr.profile_before = (dict(contact.attributes), list(contact.tags), contact.score)
        for key, value in step.set.items():
            contact.attributes[key] = value
            tr.profile.set[key] = value
        if step.add_score:
            contact.score += step.add_score
            tr.profile.score_delta += step.add_score
        for tag in step.add_tags:
            if tag not in contact.tags:
                contact.tags.append(tag)
            tr.profile.add_tags.append(tag)
        for tag in step.remove_tags:
            if tag in contact.tags:
                contact.tags.remove(tag)
            tr.profile.remove_tags.append(tag)

    # ------------------------------------------------------------------ sends
    def _holds(self, tr: Transition, step_id: str, condition: Condition, ctx: _Ctx) -> bool:
        """A condition's value; one over the render budget is false for everyone, and journaled."""
        try:
            return condition.evaluate(ctx)
        except RenderError as exc:
            tr.journal.append(JournalRecord("error", step_id, "condition_failed", _failure(exc)))
            return False

    def _context(self, ctx: _Ctx) -> Mapping[str, Any]:
        # The same variables as expression_vars() plus `links`, built only when read.
        return _TemplateVars(ctx)

    def _template_for(self, step: model.SendStep) -> CompiledTemplate | None:
        name = step.template or f"{step.id}:inline"
        return self.scenario.templates.get(name)

    def _send(
        self, tr: Transition, ctx: _Ctx, step: model.SendStep, retry: bool
    ) -> str | object | None:
        key = send_key(tr.state, step.id)
        channel = step.channel
        tried: set[str] = set()
        blocked_key = f"blocked:{step.id}"
        since_text = tr.state.vars.get(blocked_key)
        blocked_since = datetime.fromisoformat(since_text) if since_text else None
        while True:
            tried.add(channel)
            request = SendRequest(
                send_key=key if channel == step.channel else f"{key}:{channel}",
                enrollment_id=tr.state.id,
                scenario_id=self.scenario.id,
                version_id=tr.state.version_id,
                step_id=step.id,
                channel=channel,
                topic=step.topic or self.scenario.topic,
                kind=self.scenario.kind,
                priority=self.scenario.priority,
                on_blocked=step.on_blocked,
                defer_max=step.defer_max,
                fallback=step.fallback,
                blocked_since=blocked_since,
            )
            decision = self.gate.decide(request, ctx.contact, ctx.now)
            if decision.action == "fallback" and decision.channel and decision.channel not in tried:
                tr.journal.append(
                    JournalRecord(
                        "decision",
                        step.id,
                        decision.reason,
                        {"action": "fallback", "channel": channel, "to": decision.channel},
                    )
                )
                channel = decision.channel
                continue
            break
        if decision.action != "defer" and blocked_key in tr.state.vars:
            tr.state.vars = {k: v for k, v in tr.state.vars.items() if k != blocked_key}
        if decision.action == "allow":
            template = self._template_for(step)
            try:
                parts = template.render(self._context(ctx)) if template else {}
                if channel != step.channel:
                    parts = adapt_parts(parts, channel)
            except RenderError as exc:
                tr.journal.append(JournalRecord("error", step.id, "render_failed", _failure(exc)))
                return step.next
            sender = self.scenario.sender if channel == "email" else {}
            tr.sends.append(SendEffect(request, parts, decision, dict(sender)))
            tr.journal.append(
                JournalRecord(
                    "send",
                    step.id,
                    decision.reason,
                    {"channel": channel, "send_key": request.send_key},
                )
            )
            return step.next
        tr.journal.append(
            JournalRecord(
                "decision",
                step.id,
                decision.reason,
                {"action": decision.action, "channel": channel},
            )
        )
        if decision.action == "defer" and decision.until is not None:
            if blocked_key not in tr.state.vars:  # remember the first deferral for defer_max
                tr.state.vars = {**tr.state.vars, blocked_key: ctx.now.isoformat()}
            self._park(tr, decision.until)
            return _STAY
        if decision.action == "exit":
            self._end(tr, EXITED, decision.reason, ctx.now)
            return _STAY
        return step.next  # skip, or a fallback with nowhere left to go

    def _webhook(self, tr: Transition, ctx: _Ctx, step: model.WebhookStep) -> str | None:
        template = self.scenario.templates.get(f"{step.id}:payload")
        payload: Any = dict(step.payload)
        if template is not None:
            try:
                # The template's parts are keyed by JSON pointer ("/lead"): put each rendered
                # text back in its place in the payload.
                payload = fill_payload(step.payload, template.render(self._context(ctx)))
            except RenderError as exc:
                tr.journal.append(JournalRecord("error", step.id, "render_failed", _failure(exc)))
                return step.next
        request = SendRequest(
            send_key=send_key(tr.state, step.id),
            enrollment_id=tr.state.id,
            scenario_id=self.scenario.id,
            version_id=tr.state.version_id,
            step_id=step.id,
            channel="webhook",
            topic=None,
            kind="transactional",
            priority=self.scenario.priority,
        )
        body = json.dumps(payload, sort_keys=True, default=str)
        tr.sends.append(
            SendEffect(
                request,
                {"body": body},
                Decision("allow", "webhook"),
                {"url": step.url, "method": step.method},
            )
        )
        tr.journal.append(JournalRecord("send", step.id, "webhook", {"send_key": request.send_key}))
        return step.next

    # ------------------------------------------------------------------ ending
    def _abort(self, tr: Transition, ctx: _Ctx) -> None:
        """The loop guard: a runaway advance sends, changes and starts nothing, and fails."""
        dropped = {"steps": tr.steps_run, "sends": len(tr.sends)}
        if tr.profile_before is not None:
            attributes, tags, score = tr.profile_before
            ctx.contact.attributes, ctx.contact.tags, ctx.contact.score = attributes, tags, score
        tr.sends, tr.starts, tr.profile, tr.journal = [], [], ProfileChanges(), []
        self._end(tr, FAILED, "loop_guard", ctx.now, dropped)

    def _end(
        self,
        tr: Transition,
        status: str,
        reason: str,
        now: datetime,
        data: Mapping[str, Any] | None = None,
        attributable: bool = False,
    ) -> None:
        st = tr.state
        if attributable and self.scenario.goal is not None and self.scenario.goal.within:
            st.vars = {**st.vars, ATTRIBUTABLE: True}
        st.status = status
        st.end_reason = reason
        st.ended_at = now
        st.due_at = st.deadline = None
        st.waiting_for = None
        tr.journal.append(JournalRecord(status, tr.state.step_id, reason, data))


_STAY = object()  # sentinel: the enrollment waits where it is
_TICK = timedelta(microseconds=1)
