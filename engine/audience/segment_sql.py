"""A condition (engine.spec.conditions) compiled to one SQL query of the contacts it accepts.

The query gives the answer `Condition.evaluate` gives for each contact, on SQLite and PostgreSQL:
missing attributes read as None, numbers are not strings (but JSON true equals 1, as in Python),
strings order by code point, ISO 8601 strings are instants (naive ones UTC), tags match exactly,
event windows end at `now`, and consent and pressure read as the policy gate reads them.

Where the evaluator raises (`not_contains` on a number) the query answers rather than fails.
Known differences, all on values no form produces: `starts_with`/`ends_with` on a list or an
object never match (the evaluator compares `str(list)`); a JSON number written with an exponent
may print differently from Python's `str`; an instant with an offset but no colon (+0200) or a
day past the month's end is not read as an instant; segments have no entry date, so
`since: entry` reads the whole history, as the evaluator does without an enrollment.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    case,
    exists,
    extract,
    false,
    func,
    not_,
    select,
    true,
)

from engine.audience.operands import ColumnOperand, JsonOperand, Operand, or_all, sure
from engine.policy.model import PressureConfig
from engine.spec.conditions import (
    OVERALL,
    TIME_OPERATORS,
    All,
    Any_,
    AttributeTest,
    Condition,
    ConsentTest,
    EventTest,
    Expression,
    Not,
    PressureTest,
    PropertyFilter,
    TagTest,
    _compare,
)
from engine.store.models import ConsentState, Contact, Event, Pressure

SegmentMembers = Callable[[str], Select[Any]]
contacts = Contact.__table__
events = Event.__table__
_STRING_FIELDS = ("external_id", "email", "phone", "timezone", "locale")
_EXPIRED = "expired"


class SegmentSQLError(ValueError):
    """A condition that cannot be computed in the database."""


def compile_condition(
    cond: Condition,
    now: datetime,
    segment_members: SegmentMembers | None = None,
    *,
    dialect: str,
    pressure: PressureConfig | None = None,
) -> Select[Any]:
    """`SELECT contacts.id WHERE <cond>` for `dialect` ("sqlite" or "postgresql").

    `segment_members(id)` gives the member query of another segment, for `{segment: id}`.
    With `pressure`, barometers are read as of `now` (decayed, as the runner reads them);
    without, their stored state.
    """
    compiler = _Compiler(now, dialect, segment_members, pressure)
    # A tombstone (merged or erased) is in no segment, whatever its row still says.
    live = (contacts.c.merged_into.is_(None), contacts.c.erased_at.is_(None))
    return select(contacts.c.id).where(*live, compiler.predicate(cond))


class _Compiler:
    def __init__(
        self,
        now: datetime,
        dialect: str,
        segment_members: SegmentMembers | None,
        pressure: PressureConfig | None,
    ) -> None:
        self.now = now
        self.dialect = dialect
        self.segment_members = segment_members
        self.pressure = pressure

    def predicate(self, cond: Condition) -> ColumnElement[bool]:
        if isinstance(cond, All):
            return and_(*map(self.predicate, cond.items)) if cond.items else true()
        if isinstance(cond, Any_):
            return or_all([self.predicate(c) for c in cond.items])
        if isinstance(cond, Not):
            return not_(self.predicate(cond.item))
        if isinstance(cond, AttributeTest):
            return compare(cond.op, self.attribute(cond.attribute), cond.value, self.now)
        if isinstance(cond, TagTest):
            return JsonOperand(self.dialect, contacts.c.tags, ()).array_has(cond.tag)
        if isinstance(cond, EventTest):
            return self.event_test(cond)
        if isinstance(cond, ConsentTest):
            return self.consent_test(cond)
        if isinstance(cond, PressureTest):
            return self.pressure_test(cond)
        if isinstance(cond, Expression):
            raise SegmentSQLError(
                f"expressions cannot be computed in SQL; use attribute/event clauses "
                f"(found expr: {cond.source!r})"
            )
        # The segment node of the condition language ({segment: ID}), matched by name so that
        # this module does not depend on when it lands: a class SegmentTest with `segment`.
        if type(cond).__name__ == "SegmentTest":
            segment = str(cond.segment)  # type: ignore[attr-defined]
            if self.segment_members is None:
                raise SegmentSQLError(f"segment '{segment}' is used but no members were given")
            return contacts.c.id.in_(self.segment_members(segment))
        raise SegmentSQLError(f"{type(cond).__name__} cannot be computed in SQL")

    def attribute(self, name: str) -> Operand:
        if name in _STRING_FIELDS:
            return ColumnOperand(self.dialect, contacts.c[name], "string")
        if name == "score":
            return ColumnOperand(self.dialect, contacts.c.score, "number")
        if name == "tags":
            return JsonOperand(self.dialect, contacts.c.tags, ())
        return JsonOperand(self.dialect, contacts.c.attributes, tuple(name.split(".")))

    # --- events

    def _matching(self, cond: EventTest) -> list[ColumnElement[bool]]:
        """The events the test counts, as `EventTest._selected` picks them (any contact's)."""
        clauses = [
            events.c.name == cond.event,
            events.c.occurred_at <= self.now,
        ]
        if cond.within is not None:
            clauses.append(events.c.occurred_at >= self.now - cond.within)
        clauses += [self._filter(f) for f in cond.where]
        return clauses

    def _filter(self, f: PropertyFilter) -> ColumnElement[bool]:
        prop = JsonOperand(self.dialect, events.c.properties, tuple(f.property.split(".")))
        return compare(f.op, prop, f.value, self.now)

    def _any(self, clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        """Whether the contact has an event matching `clauses` (correlated EXISTS)."""
        return exists(select(events.c.id).where(events.c.contact_id == contacts.c.id, *clauses))

    def event_test(self, cond: EventTest) -> ColumnElement[bool]:
        matching = self._matching(cond)
        if cond.measure == "recency":
            return self._recency(cond, matching)
        # No event: a count of 0, a sum of 0.0 (a float, as the evaluator adds up)
        zero = _passes(cond.op, 0 if cond.measure == "count" else 0.0, cond.value, self.now)
        if cond.measure == "count":
            one = _passes(cond.op, 1, cond.value, self.now)
            if cond.op in ("gt", "gte") and one and not zero:
                return self._any(matching)  # "at least once": EXISTS, the planners' favourite
            measure: ColumnElement[Any] = func.count()
            kind = "number"
        else:
            key = JsonOperand(self.dialect, events.c.properties, (cond.sum_property or "",))
            measure = func.coalesce(func.sum(key.number(booleans=False)), 0.0, type_=Float)
            kind = "float"
        # The contacts with events whose measure passes; with no event the measure is 0, so when
        # 0 passes the answer is everyone but the contacts whose measure fails.
        verdict = compare(cond.op, ColumnOperand(self.dialect, measure, kind), cond.value, self.now)
        grouped = select(events.c.contact_id).where(*matching).group_by(events.c.contact_id)
        if zero:
            return contacts.c.id.not_in(grouped.having(not_(verdict)))
        return contacts.c.id.in_(grouped.having(verdict))

    def _recency(self, cond: EventTest, matching: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        # Age of the latest matching event, "forever" with none: each comparison of that age
        # with a duration is whether some event is more recent than an instant.
        if cond.op in ("exists", "not_exists"):
            return true() if cond.op == "exists" else false()
        if not isinstance(cond.value, timedelta):
            return false()
        at = self.now - cond.value
        seen = events.c.occurred_at
        newer = self._any([*matching, seen > at])
        as_new = self._any([*matching, seen >= at])
        if cond.op in ("older_than", "gt"):
            return not_(as_new)
        if cond.op == "gte":
            return not_(newer)
        if cond.op in ("within_last", "lte"):
            return as_new
        if cond.op == "lt":
            return newer
        if cond.op in ("eq", "ne"):
            same = and_(self._any([*matching, seen == at]), not_(newer))
            return same if cond.op == "eq" else not_(same)
        return false()

    # --- policy

    def _consent(self, channel: str, topic: str) -> ColumnElement[str]:
        cs = ConsentState.__table__.alias()
        state = case(
            (
                and_(
                    cs.c.state == "opted_in",
                    cs.c.expires_at.is_not(None),
                    cs.c.expires_at <= self.now,
                ),
                _EXPIRED,
            ),
            else_=cs.c.state,
        )
        found = select(state).where(
            cs.c.contact_id == contacts.c.id, cs.c.channel == channel, cs.c.topic == topic
        )
        return found.scalar_subquery()

    def consent_test(self, cond: ConsentTest) -> ColumnElement[bool]:
        # As consent_state: a channel-wide opt-out wins, else the topic's record, else the
        # channel-wide one, else unknown.
        every = self._consent(cond.channel, OVERALL)
        own = self._consent(cond.channel, cond.topic)
        state = case(
            (every == "opted_out", "opted_out"),
            else_=func.coalesce(own, every, "unknown", type_=String),
        )
        return sure(state == cond.state)

    def pressure_test(self, cond: PressureTest) -> ColumnElement[bool]:
        p = Pressure.__table__.alias()
        state: ColumnElement[Any] = p.c.state
        if self.pressure is not None:
            score = self._decayed(p.c.score, p.c.updated_at, self.pressure.half_life)
            state = case(
                (score < self.pressure.under, "under"),
                (score > self.pressure.over, "over"),
                else_="equilibrium",
            )
        reading = select(state).where(p.c.contact_id == contacts.c.id, p.c.channel == cond.channel)
        return sure(func.coalesce(reading.scalar_subquery(), "equilibrium") == cond.state)

    def _decayed(
        self, score: ColumnElement[float], since: ColumnElement[datetime], half_life: timedelta
    ) -> ColumnElement[float]:
        # score · 2^(-(now - since) / half-life), unchanged when `now` is not after `since`
        if self.dialect == "postgresql":
            seconds: ColumnElement[Any] = extract("epoch", self.now - since)
        else:
            stamp = self.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            seconds = (func.julianday(stamp) - func.julianday(since)) * 86400.0
        factor = func.pow(2.0, -seconds / half_life.total_seconds())
        return case((since < self.now, score * factor), else_=score)


def _passes(op: str, measure: float, value: Any, now: datetime) -> bool:
    """Whether the evaluator accepts this count or sum (it raises for not_contains on one)."""
    try:
        return _compare(op, measure, value, now)
    except TypeError:
        return False


# --- operators ------------------------------------------------------------------------------


def _eq(a: Operand, b: Any) -> ColumnElement[bool]:
    """`a == b` in Python, for a JSON-ish `a` and a literal `b`."""
    if b is None:
        return a.kind_in("missing", "null")
    if isinstance(b, bool | int | float):
        return and_(a.kind_in("number", "boolean"), a.number() == float(b))
    if isinstance(b, str):
        return and_(a.kind_in("string"), a.text() == b)
    return false()  # a list, a date or a mapping never equals a JSON value


def _order(op: str, a: Operand, b: Any) -> ColumnElement[bool]:
    if isinstance(b, bool | int | float):
        left: ColumnElement[Any] = a.number()
        guard, b = a.kind_in("number", "boolean"), float(b)
    elif isinstance(b, str):
        left, guard = a.ordered_text(), a.kind_in("string")
    else:
        return false()  # Python raises TypeError: the comparison is false
    compared = {"gt": left > b, "gte": left >= b, "lt": left < b, "lte": left <= b}[op]
    return and_(guard, compared)


def _contains(a: Operand, b: Any) -> ColumnElement[bool]:
    if isinstance(b, str):
        text = a.text()
        inside = func.strpos(text, b) if a.dialect == "postgresql" else func.instr(text, b)
        return or_all([and_(a.kind_in("string"), inside > 0), a.array_has(b), a.has_key(b)])
    return a.array_has(b)


def _affix(op: str, a: Operand, b: Any) -> ColumnElement[bool]:
    affix = str(b)
    shown = a.python_str()
    if not affix:
        return true()  # every str() starts with "", a list's or a mapping's too
    n = len(affix)
    if a.dialect == "postgresql":
        part = func.left(shown, n) if op == "starts_with" else func.right(shown, n)
    else:
        part = func.substr(shown, 1, n) if op == "starts_with" else func.substr(shown, -n)
    return sure(part == affix)


def compare(op: str, a: Operand, b: Any, now: datetime) -> ColumnElement[bool]:
    """The operator `op` of the condition language applied to `a` and the literal `b`."""
    if op in TIME_OPERATORS:
        if not isinstance(b, timedelta):
            return false()
        return a.instant_compare("<" if op == "older_than" else ">=", now - b)
    if op == "eq":
        return _eq(a, b)
    if op == "ne":
        return not_(_eq(a, b))
    if op in ("gt", "gte", "lt", "lte"):
        return _order(op, a, b)
    if op in ("in", "not_in"):
        items = b if isinstance(b, tuple | list) else ()
        if op == "in":
            return or_all([_eq(a, x) for x in items if x is not None])
        return not_(or_all([_eq(a, x) for x in items]))
    if op == "contains":
        return _contains(a, b)
    if op == "not_contains":
        return or_all([a.kind_in("missing", "null"), not_(_contains(a, b))])
    if op in ("starts_with", "ends_with"):
        return and_(not_(a.kind_in("missing", "null")), _affix(op, a, b))
    empty = or_all([a.kind_in("missing", "null"), and_(a.kind_in("string"), a.text() == "")])
    if op == "exists":
        return not_(empty)
    if op == "not_exists":
        return empty
    raise SegmentSQLError(f"operator '{op}' cannot be computed in SQL")
