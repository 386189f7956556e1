"""Conditions: the form marketers fill in (attribute, operator, value), event history tests,
tags, and an expression mode. Parsed once at load time into objects with `evaluate(ctx)`;
never `eval`.

Written in YAML as one of::

    {all: [cond, ...]}  {any: [cond, ...]}  {not: cond}
    {attribute: NAME, op: OP, value: V}           # profile field or attribute (dotted path)
    {tag: NAME}                                   # the contact has the tag
    {event: NAME, where: [...], within: 30d | since: entry,
     count: {op: OP, value: N} | sum: {property: P, op: OP, value: N}
     | recency: {op: OP, value: 30d}}
    {expr: "contact.score > 10"}                  # sandboxed Jinja2 expression
    {consent: {channel: email, topic: promotions, state: opted_in}}   # state default opted_in
    {pressure: {state: over, channel: email}}     # the barometer; channel default "*" (overall)
    {segment: premium}                            # a member of the segment (stored membership)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from marshmallow import ValidationError

from channels.registry import channel_names
from engine.errors import ParcoursError
from engine.spec.durations import parse_duration
from engine.spec.metric_names import is_metric, metric_problem
from engine.spec.problems import did_you_mean

PROFILE_FIELDS = ("external_id", "email", "phone", "timezone", "locale", "score", "tags")
CONSENT_STATES = ("opted_in", "opted_out", "pending", "expired", "unknown")
PRESSURE_STATES = ("under", "equilibrium", "over")
OVERALL = "*"  # the barometer across every channel; as a consent topic, every topic


class ContactLike(Protocol):
    @property
    def external_id(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def timezone(self) -> str | None: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def score(self) -> int: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def attributes(self) -> Mapping[str, Any]: ...
    @property
    def consents(self) -> Mapping[tuple[str, str], str]: ...
    @property
    def pressure(self) -> Mapping[str, str]: ...
    @property
    def metrics(self) -> Mapping[str, Any]: ...
    @property
    def segments(self) -> Collection[str] | None:
        """Ids of the segments the contact is a member of; None when membership is not loaded."""
        ...


class EventLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def properties(self) -> Mapping[str, Any]: ...
    @property
    def occurred_at(self) -> datetime: ...


class EvalContext(Protocol):
    """What a condition may read. Built by the runtime; conditions never do I/O."""

    @property
    def contact(self) -> ContactLike: ...
    @property
    def now(self) -> datetime: ...
    @property
    def entered_at(self) -> datetime | None: ...
    @property
    def event(self) -> EventLike | None: ...

    def events(self, name: str) -> Sequence[EventLike]: ...

    def expression_vars(self) -> Mapping[str, Any]: ...


def _cmp(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def safe(a: Any, b: Any) -> bool:
        if a is None:
            return False
        try:
            return fn(a, b)
        except TypeError:
            return False

    return safe


def _as_instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=_UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=_UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_UTC)
    return None


from datetime import UTC as _UTC  # noqa: E402

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": _cmp(lambda a, b: a > b),
    "gte": _cmp(lambda a, b: a >= b),
    "lt": _cmp(lambda a, b: a < b),
    "lte": _cmp(lambda a, b: a <= b),
    "in": _cmp(lambda a, b: a in b),
    "not_in": lambda a, b: a not in b,
    "contains": _cmp(lambda a, b: b in a),
    "not_contains": lambda a, b: a is None or b not in a,
    "starts_with": _cmp(lambda a, b: str(a).startswith(str(b))),
    "ends_with": _cmp(lambda a, b: str(a).endswith(str(b))),
    "exists": lambda a, b: a is not None and a != "",
    "not_exists": lambda a, b: a is None or a == "",
}
# Operators whose value is a duration and whose left side is a date or instant.
TIME_OPERATORS = ("older_than", "within_last")
UNARY = ("exists", "not_exists")
ALL_OPERATORS = tuple(OPERATORS) + TIME_OPERATORS


def _compare(op: str, left: Any, right: Any, now: datetime) -> bool:
    if op in TIME_OPERATORS:
        if isinstance(left, timedelta):
            age = left
        else:
            instant = _as_instant(left)
            if instant is None:
                return False
            age = now - instant
        return bool(age > right) if op == "older_than" else bool(age <= right)
    return bool(OPERATORS[op](left, right))


def resolve_attribute(contact: ContactLike, name: str) -> Any:
    """Read a profile field, a computed attribute (rfm.class, lifecycle...) or a (dotted)
    attribute; missing → None."""
    if name in PROFILE_FIELDS:
        return getattr(contact, name)
    value: Any = contact.metrics if is_metric(name) else contact.attributes
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class PropertyFilter:
    """A test on one property of an event: ``{property: total, op: gte, value: 20}``."""

    property: str
    op: str
    value: Any = None

    def matches(self, properties: Mapping[str, Any], now: datetime) -> bool:
        value: Any = properties
        for part in self.property.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return _compare(self.op, value, self.value, now)


def matches_all(
    filters: Iterable[PropertyFilter], properties: Mapping[str, Any], now: datetime
) -> bool:
    return all(f.matches(properties, now) for f in filters)


class Condition:
    """Base class: a compiled condition."""

    def evaluate(self, ctx: EvalContext) -> bool:
        raise NotImplementedError  # pragma: no cover - abstract


@dataclass(frozen=True)
class All(Condition):
    items: tuple[Condition, ...]

    def evaluate(self, ctx: EvalContext) -> bool:
        return all(c.evaluate(ctx) for c in self.items)


@dataclass(frozen=True)
class Any_(Condition):
    items: tuple[Condition, ...]

    def evaluate(self, ctx: EvalContext) -> bool:
        return any(c.evaluate(ctx) for c in self.items)


@dataclass(frozen=True)
class Not(Condition):
    item: Condition

    def evaluate(self, ctx: EvalContext) -> bool:
        return not self.item.evaluate(ctx)


@dataclass(frozen=True)
class AttributeTest(Condition):
    attribute: str
    op: str
    value: Any = None

    def evaluate(self, ctx: EvalContext) -> bool:
        return _compare(
            self.op, resolve_attribute(ctx.contact, self.attribute), self.value, ctx.now
        )


@dataclass(frozen=True)
class TagTest(Condition):
    tag: str

    def evaluate(self, ctx: EvalContext) -> bool:
        return self.tag in ctx.contact.tags


@dataclass(frozen=True)
class EventTest(Condition):
    """Count, sum or recency of a contact's events, since entry or within a window."""

    event: str
    where: tuple[PropertyFilter, ...] = ()
    within: timedelta | None = None
    since_entry: bool = False
    measure: str = "count"  # count | sum | recency
    sum_property: str | None = None
    op: str = "gte"
    value: Any = 1

    def _selected(self, ctx: EvalContext) -> list[EventLike]:
        start: datetime | None = None
        if self.within is not None:
            start = ctx.now - self.within
        if self.since_entry and ctx.entered_at is not None:
            start = max(start, ctx.entered_at) if start else ctx.entered_at
        return [
            e
            for e in ctx.events(self.event)
            if (start is None or e.occurred_at >= start)
            and e.occurred_at <= ctx.now
            and matches_all(self.where, e.properties, ctx.now)
        ]

    def evaluate(self, ctx: EvalContext) -> bool:
        selected = self._selected(ctx)
        if self.measure == "count":
            return _compare(self.op, len(selected), self.value, ctx.now)
        if self.measure == "sum":
            total = 0.0
            for e in selected:
                amount = e.properties.get(self.sum_property or "")
                if isinstance(amount, int | float) and not isinstance(amount, bool):
                    total += amount
            return _compare(self.op, total, self.value, ctx.now)
        # recency: time since the latest matching event; never seen counts as forever
        latest = max((e.occurred_at for e in selected), default=None)
        age = ctx.now - latest if latest else timedelta.max
        if self.op == "older_than":
            return bool(age > self.value)
        if self.op == "within_last":
            return bool(age <= self.value)
        return _compare(self.op, age, self.value, ctx.now)


@dataclass(frozen=True)
class Expression(Condition):
    """A sandboxed Jinja2 expression, compiled once."""

    source: str
    compiled: Callable[..., Any]

    def evaluate(self, ctx: EvalContext) -> bool:
        return bool(self.compiled(**ctx.expression_vars()))


def consent_state(consents: Mapping[tuple[str, str], str], channel: str, topic: str) -> str:
    """A topic's consent on a channel, read as the policy gate reads it (engine.policy.consent)."""
    # A channel-wide ("*") opt-out wins; else the topic's own record; else the channel-wide one.
    every = consents.get((channel, OVERALL))
    if every == "opted_out":
        return "opted_out"
    return consents.get((channel, topic)) or every or "unknown"


@dataclass(frozen=True)
class ConsentTest(Condition):
    """The contact's consent for a topic on a channel is in `state`."""

    channel: str
    topic: str
    state: str = "opted_in"

    def evaluate(self, ctx: EvalContext) -> bool:
        return consent_state(ctx.contact.consents, self.channel, self.topic) == self.state


@dataclass(frozen=True)
class PressureTest(Condition):
    """The barometer of a channel ("*": overall) is in `state`; no reading counts as equilibrium."""

    state: str
    channel: str = OVERALL

    def evaluate(self, ctx: EvalContext) -> bool:
        return ctx.contact.pressure.get(self.channel, "equilibrium") == self.state


class SegmentMembershipUnavailable(ParcoursError):
    """A `{segment: ID}` condition was evaluated where the contact's membership is not loaded."""


@dataclass(frozen=True)
class SegmentTest(Condition):
    """The contact is a member of a segment, as stored membership says (engine.audience)."""

    segment: str

    def evaluate(self, ctx: EvalContext) -> bool:
        members = ctx.contact.segments
        if members is None:
            # answering False would silently drop members from audiences and branches
            raise SegmentMembershipUnavailable(
                f"The condition {{segment: {self.segment}}} needs the contact's segment "
                f"membership, which is not loaded here; '{self.segment}' cannot be decided."
            )
        return self.segment in members


def segment_names(cond: Condition) -> set[str]:
    """Ids of the segments a condition tests membership of."""
    if isinstance(cond, All | Any_):
        return set().union(*(segment_names(c) for c in cond.items)) if cond.items else set()
    if isinstance(cond, Not):
        return segment_names(cond.item)
    return {cond.segment} if isinstance(cond, SegmentTest) else set()


def event_names(cond: Condition) -> set[str]:
    """Event names a condition reads from the history."""
    if isinstance(cond, All | Any_):
        return set().union(*(event_names(c) for c in cond.items)) if cond.items else set()
    if isinstance(cond, Not):
        return event_names(cond.item)
    if isinstance(cond, EventTest):
        return {cond.event}
    return set()


def reads_policy(cond: Condition) -> bool:
    """Whether a condition reads consent or pressure (its contacts need load_policy_views)."""
    if isinstance(cond, All | Any_):
        return any(reads_policy(c) for c in cond.items)
    if isinstance(cond, Not):
        return reads_policy(cond.item)
    return isinstance(cond, ConsentTest | PressureTest)


# ---------------------------------------------------------------- parsing

_FORMS = (
    "all", "any", "not", "attribute", "tag", "event", "expr", "consent", "pressure", "segment",
)  # fmt: skip
_EVENT_KEYS = {"event", "where", "within", "since", "count", "sum", "recency"}
_CONSENT_KEYS = {"channel", "topic", "state"}
_PRESSURE_KEYS = {"state", "channel"}


def _fail(path: list[str | int], message: str) -> ValidationError:
    errors: Any = [message]
    for part in reversed(path):
        errors = {part: errors}
    return ValidationError(errors)


def _check_keys(raw: Mapping[str, Any], allowed: set[str], path: list[str | int]) -> None:
    for key in raw:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            raise _fail([*path, key], "Unknown field." + (f" {hint}" if hint else ""))


def _parse_op_value(
    raw: Mapping[str, Any], path: list[str | int], durations: bool
) -> tuple[str, Any]:
    op = raw.get("op", "eq")
    if op not in ALL_OPERATORS:
        hint = did_you_mean(str(op), ALL_OPERATORS)
        raise _fail([*path, "op"], f"Unknown operator '{op}'." + (f" {hint}" if hint else ""))
    if op in UNARY:
        return op, None
    if "value" not in raw:
        raise _fail([*path, "value"], f"Operator '{op}' needs a value.")
    value = raw["value"]
    if op in TIME_OPERATORS or durations:
        try:
            value = parse_duration(value)
        except ValueError as exc:
            raise _fail([*path, "value"], str(exc)) from None
    if op in ("in", "not_in") and not isinstance(value, list):
        raise _fail([*path, "value"], f"Operator '{op}' needs a list, e.g. [FR, BE].")
    if isinstance(value, list):
        value = tuple(value)
    return op, value


def parse_filters(raw: Any, path: list[str | int]) -> tuple[PropertyFilter, ...]:
    """Parse ``where: [{property, op, value}, ...]``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _fail(path, "Expected a list of {property, op, value}.")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or "property" not in item:
            raise _fail([*path, i], "Expected {property: NAME, op: OP, value: V}.")
        _check_keys(item, {"property", "op", "value"}, [*path, i])
        op, value = _parse_op_value(item, [*path, i], durations=False)
        out.append(PropertyFilter(str(item["property"]), op, value))
    return tuple(out)


ExpressionCompiler = Callable[[str, list[str | int]], Callable[..., Any]]


def condition_form(raw: Any) -> str | None:
    """Which form a written condition takes (``all``, ``segment``...), None when it has none."""
    return next((k for k in _FORMS if k in raw), None) if isinstance(raw, Mapping) else None


def parse_condition(raw: Any, path: list[str | int], compile_expr: ExpressionCompiler) -> Condition:
    """Parse one condition; raise a marshmallow ValidationError nested at its path."""
    if not isinstance(raw, Mapping) or not raw:
        raise _fail(path, "Expected a condition such as {attribute: country, op: eq, value: FR}.")
    form = condition_form(raw)
    if form is None:
        first = str(next(iter(raw)))
        hint = did_you_mean(first, _FORMS)
        raise _fail(
            [*path, first],
            f"Unknown condition; use one of {', '.join(_FORMS)}." + (f" {hint}" if hint else ""),
        )
    if form in ("all", "any"):
        _check_keys(raw, {form}, path)
        items = raw[form]
        if not isinstance(items, list) or not items:
            raise _fail([*path, form], "Expected a non-empty list of conditions.")
        parsed = tuple(
            parse_condition(c, [*path, form, i], compile_expr) for i, c in enumerate(items)
        )
        return All(parsed) if form == "all" else Any_(parsed)
    if form == "not":
        _check_keys(raw, {"not"}, path)
        return Not(parse_condition(raw["not"], [*path, "not"], compile_expr))
    if form == "attribute":
        _check_keys(raw, {"attribute", "op", "value"}, path)
        name = raw["attribute"]
        if not isinstance(name, str) or not name.strip() or "" in name.split("."):
            message = "Expected an attribute name, e.g. country or address.city."
            raise _fail([*path, "attribute"], message)
        op, value = _parse_op_value(raw, path, durations=False)
        if is_metric(name) and (problem := metric_problem(name, op, value)):
            raise _fail([*path, problem[0]], problem[1])
        return AttributeTest(name, op, value)
    if form == "tag":
        _check_keys(raw, {"tag"}, path)
        return TagTest(str(raw["tag"]))
    if form == "expr":
        _check_keys(raw, {"expr"}, path)
        source = raw["expr"]
        if not isinstance(source, str) or not source.strip():
            raise _fail([*path, "expr"], 'Expected an expression, e.g. "contact.score > 10".')
        return Expression(source, compile_expr(source, [*path, "expr"]))
    if form == "consent":
        return _parse_consent_test(raw, path)
    if form == "pressure":
        return _parse_pressure_test(raw, path)
    if form == "segment":
        _check_keys(raw, {"segment"}, path)
        return SegmentTest(_segment_id(raw["segment"], [*path, "segment"]))
    return _parse_event_test(raw, path)


def _segment_id(value: Any, path: list[str | int]) -> str:
    # the id is a segment file's name, so it follows the rule of scenario and step ids
    text = value if isinstance(value, str) else ""
    if not (text[:1].isalnum() and all(c.isalnum() or c in "_-" for c in text)) or len(text) > 100:
        raise _fail(path, f"'{value}' is not a segment id; use letters, digits, '_' and '-'.")
    return text


_EXAMPLES = {
    "consent": "{channel: email, topic: promotions, state: opted_in}",
    "pressure": "{state: over, channel: email}",
}


def _policy_body(
    raw: Mapping[str, Any], form: str, keys: set[str], path: list[str | int]
) -> Mapping[str, Any]:
    _check_keys(raw, {form}, path)
    body = raw[form]
    if not isinstance(body, Mapping):
        raise _fail([*path, form], f"Expected a mapping such as {_EXAMPLES[form]}.")
    _check_keys(body, keys, [*path, form])
    return body


def _choice(value: Any, choices: Sequence[str], what: str, path: list[str | int]) -> str:
    if isinstance(value, str) and value in choices:
        return value
    hint = did_you_mean(str(value), choices)
    # With a hint, the hint alone; the full list otherwise (the problem's hint either way).
    rest = f". {hint}" if hint else f"; use one of {', '.join(choices)}."
    raise _fail(path, f"Unknown {what} '{value}'{rest}")


def _parse_consent_test(raw: Mapping[str, Any], path: list[str | int]) -> ConsentTest:
    here: list[str | int] = [*path, "consent"]
    body = _policy_body(raw, "consent", _CONSENT_KEYS, path)
    for key, example in (("channel", "email"), ("topic", "promotions")):
        if key not in body:
            raise _fail([*here, key], f"A consent test needs the {key}, e.g. {key}: {example}.")
    channel = _choice(body["channel"], channel_names(), "channel", [*here, "channel"])
    topic = body["topic"]
    if not isinstance(topic, str) or not topic.strip():
        raise _fail([*here, "topic"], "Expected a topic name, e.g. promotions (or * for all).")
    state = body.get("state", "opted_in")
    state = _choice(state, CONSENT_STATES, "consent state", [*here, "state"])
    return ConsentTest(channel, topic, state)


def _parse_pressure_test(raw: Mapping[str, Any], path: list[str | int]) -> PressureTest:
    here: list[str | int] = [*path, "pressure"]
    body = _policy_body(raw, "pressure", _PRESSURE_KEYS, path)
    if "state" not in body:
        raise _fail([*here, "state"], "A pressure test needs a state: under, equilibrium or over.")
    state = _choice(body["state"], PRESSURE_STATES, "pressure state", [*here, "state"])
    channel = body.get("channel", OVERALL)
    if channel in ("all", "overall", "any", "marketing"):  # else 'all' would suggest 'call'
        raise _fail([*here, "channel"], f"Unknown channel '{channel}'. did you mean '{OVERALL}'?")
    channel = _choice(channel, (OVERALL, *channel_names()), "channel", [*here, "channel"])
    return PressureTest(state, channel)


def _parse_event_test(raw: Mapping[str, Any], path: list[str | int]) -> EventTest:
    _check_keys(raw, _EVENT_KEYS, path)
    within = None
    if "within" in raw:
        try:
            within = parse_duration(raw["within"])
        except ValueError as exc:
            raise _fail([*path, "within"], str(exc)) from None
    since = raw.get("since")
    if since not in (None, "entry"):
        raise _fail(
            [*path, "since"], "Only 'since: entry' is supported; use 'within: 30d' for a window."
        )
    measures = [m for m in ("count", "sum", "recency") if m in raw]
    if len(measures) > 1:
        raise _fail([*path, measures[1]], "Use only one of count, sum, recency.")
    measure = measures[0] if measures else "count"
    op, value, sum_property = "gte", 1, None
    if measures:
        spec = raw[measure]
        if not isinstance(spec, Mapping):
            raise _fail([*path, measure], "Expected {op: OP, value: V}.")
        allowed = {"op", "value", "property"} if measure == "sum" else {"op", "value"}
        _check_keys(spec, allowed, [*path, measure])
        op, value = _parse_op_value(spec, [*path, measure], durations=measure == "recency")
        if measure == "sum":
            if "property" not in spec:
                raise _fail([*path, measure, "property"], "A sum needs the property to add up.")
            sum_property = str(spec["property"])
    return EventTest(
        event=str(raw["event"]),
        where=parse_filters(raw.get("where"), [*path, "where"]),
        within=within,
        since_entry=since == "entry",
        measure=measure,
        sum_property=sum_property,
        op=op,
        value=value,
    )
