"""Run-time views handed to the interpreter: the contact, their events, the enrollment state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

ACTIVE = "active"
COMPLETED = "completed"
CONVERTED = "converted"
EXITED = "exited"
FAILED = "failed"
TERMINAL = (COMPLETED, CONVERTED, EXITED, FAILED)
# Set in `vars` when a journey ends by running its course (last step, exit step, holdout): a goal
# event inside the goal window still converts it afterwards. Exits by rule or failure never do.
ATTRIBUTABLE = "attributable"


@dataclass
class ContactView:
    """A working copy of a contact; the interpreter may change it (update steps)."""

    id: int
    external_id: str
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    score: int = 0
    tags: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    opted_out: bool = False
    # Policy state, filled by engine.policy.pressure.load_policy_views for conditions to read:
    # (channel, topic) → opted_in | opted_out | pending | expired (no entry: unknown), and
    # channel ("*" overall) → under | equilibrium | over.
    consents: dict[tuple[str, str], str] = field(default_factory=dict)
    pressure: dict[str, str] = field(default_factory=dict)
    # Computed attributes (engine.audience.attributes.metrics_view): rfm, lifecycle,
    # customer_value; read by conditions and templates under those names.
    metrics: dict[str, Any] = field(default_factory=dict)
    # Ids of the segments the contact belongs to, from stored membership; None: not loaded, and a
    # {segment: ID} condition refuses to guess.
    segments: frozenset[str] | None = None

    def template_view(self) -> dict[str, Any]:
        """What templates see as `contact`: attributes plus profile fields."""
        view = dict(self.attributes)
        view.update(
            external_id=self.external_id,
            email=self.email,
            phone=self.phone,
            timezone=self.timezone,
            locale=self.locale,
            score=self.score,
            tags=list(self.tags),
        )
        view.update(self.metrics)
        return view


@dataclass(frozen=True)
class EventView:
    id: int
    name: str
    properties: Mapping[str, Any]
    occurred_at: datetime


@dataclass(slots=True)
class EnrollmentState:
    """Where one contact is in one scenario version.

    The interpreter advances a private copy (see `Interpreter.advance`); `evolve` makes a changed
    copy for everyone else.
    """

    id: int
    scenario_id: str
    version_id: int
    contact_id: int
    status: str
    step_id: str | None
    entered_at: datetime
    step_entered_at: datetime | None = None
    deadline: datetime | None = None
    due_at: datetime | None = None
    waiting_for: str | None = None
    visits: int = 0
    vars: Mapping[str, Any] = field(default_factory=dict)
    trigger_event: EventView | None = None
    end_reason: str | None = None
    ended_at: datetime | None = None

    def evolve(self, **changes: Any) -> EnrollmentState:
        return replace(self, **changes)

    def copy(self) -> EnrollmentState:
        """A shallow copy (the interpreter's working copy); faster than copy.copy on slots."""
        return EnrollmentState(
            self.id, self.scenario_id, self.version_id, self.contact_id, self.status,
            self.step_id, self.entered_at, self.step_entered_at, self.deadline, self.due_at,
            self.waiting_for, self.visits, self.vars, self.trigger_event, self.end_reason,
            self.ended_at,
        )  # fmt: skip


@dataclass
class ProfileChanges:
    """What update steps changed, to persist with the step's batch."""

    set: dict[str, Any] = field(default_factory=dict)
    score_delta: int = 0
    add_tags: list[str] = field(default_factory=list)
    remove_tags: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.set or self.score_delta or self.add_tags or self.remove_tags)


@dataclass
class History:
    """A contact's events by name, oldest first; only the names a scenario reads are loaded."""

    by_name: Mapping[str, Sequence[EventView]] = field(default_factory=dict)

    def events(self, name: str) -> Sequence[EventView]:
        return self.by_name.get(name, ())
