"""Decisions and the gate interface.

Policies return decisions; they never send and never raise to say no.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from engine.runtime.state import ContactView


@dataclass(frozen=True)
class SendRequest:
    """What the interpreter wants to send, before rendering."""

    send_key: str
    enrollment_id: int
    scenario_id: str
    version_id: int
    step_id: str
    channel: str
    topic: str | None
    kind: str  # marketing | transactional
    priority: int
    on_blocked: str | None = None  # the step's declared outcome; None: the policy's default
    defer_max: timedelta | None = None
    fallback: str | None = None
    blocked_since: datetime | None = None  # first deferral of this send, for defer_max


@dataclass(frozen=True)
class Decision:
    """allow, defer (until), skip, fallback (to channel) or exit; `reason` is a rule id."""

    action: str
    reason: str = "allowed"
    until: datetime | None = None
    channel: str | None = None

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


ALLOW = Decision("allow")


def defer(until: datetime, reason: str) -> Decision:
    return Decision("defer", reason, until=until)


def skip(reason: str) -> Decision:
    return Decision("skip", reason)


def fallback(channel: str, reason: str) -> Decision:
    return Decision("fallback", reason, channel=channel)


def exit_journey(reason: str) -> Decision:
    return Decision("exit", reason)


class Gate(Protocol):
    """Decides about one send. Implementations may hold per-batch state (e.g. counts)."""

    def decide(self, request: SendRequest, contact: ContactView, now: datetime) -> Decision: ...


ADDRESS_FIELDS = {"email": "email", "sms": "phone", "call": "phone"}


class OptOutGate:
    """The simplest gate: skip marketing to opted-out contacts, and any send with no address."""

    def decide(self, request: SendRequest, contact: ContactView, now: datetime) -> Decision:
        field = ADDRESS_FIELDS.get(request.channel)
        if field and not getattr(contact, field):
            return skip(f"address:{field}_missing")
        if request.kind == "marketing" and contact.opted_out:
            return skip("consent:opted_out")
        return ALLOW
