"""Delivery: hand queued sends to their channel's provider, outside any database transaction.

Lifecycle of a send in the ledger (`sends.status`):

    queued ──hand-over──▶ sending ──provider accepted──▶ sent ──report──▶ delivered / bounced
      ▲ (claimed: leased)     │
      │  └─ marketing no longer allowed (withdrawn consent, suppression) ──▶ cancelled
      └─ transient error (retried at next_attempt_at, backoff) ─┘
                              ├─ permanent error ──▶ failed (bounced + suppression of the address)
                              └─ no answer after the message left ──▶ ambiguous (not resent blindly)

A pass claims a batch of queued rows: they stay `queued` and are leased to the pass (owner and
`lease_until`), which a heartbeat renews while the pass runs. Just before its provider call, each
row is marked `sending` and committed (the hand-over, fenced on the owner), then the provider is
called with no transaction open, and the outcome is written as soon as it answers. When a worker
dies, its heartbeat stops and its lease runs out within one lease: the rows it had not handed
over are queued ones like any other, and the one it had (at most one per pass) is `sending`:
an idempotent provider (which dedupes on the send key) gets it again, any other marks it
`ambiguous`, so a crash never sends a message twice and strands only what was in flight.

A queued marketing message may wait for hours (retries, a paused channel) while the contact
withdraws. So the gate's own withdrawal checks (engine.policy.gate.withdrawal: the profile's
opt-out flag, the suppression list, consent) are asked again, with the policy that allowed the
message: for the whole claimed batch in one query per concern, in the claim's transaction, then,
once the pass is older than RECHECK_AFTER (a slow provider can take minutes to reach the last
message of a batch), for each message again in its hand-over transaction. A message no longer
allowed is `cancelled` with the gate's rule id and a journal entry; transactional messages pass,
as they pass the gate.

Channels come from `channels.yaml` beside the scenarios (see engine.delivery.channel_config); a
channel not configured there goes to the outbox and its sends are `sent` when they are recorded.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from channels import (
    Channel,
    ChannelError,
    OutboundMessage,
    PermanentChannelError,
    TransientChannelError,
)
from channels.errors import AmbiguousDeliveryError, ChannelConfigError
from engine import metrics
from engine.delivery.heartbeat import Heartbeat
from engine.policy.loading import withdrawals
from engine.policy.model import Policy
from engine.runtime.clock import Clock, SystemClock
from engine.store.models import Contact, JournalEntry, Send

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=6)
CONFIG_PAUSE = timedelta(minutes=5)  # a misconfigured channel is tried again after this
LEASE = timedelta(seconds=30)  # PARCOURS_DELIVERY_LEASE_SECONDS's default
# A pass older than this asks each marketing message again at its hand-over (see the module's
# docstring): a fast pass is covered by its claim's reading, a slow one pays 3 reads a message.
RECHECK_AFTER = timedelta(seconds=1)

# Prepares the message just before it leaves (tracking links, unsubscribe URL...).
Prepare = Callable[[OutboundMessage], OutboundMessage]


def retry_delay(attempt: int, send_key: str, retry_after: float | None = None) -> timedelta:
    """Exponential backoff from 1 minute, doubled per attempt, at most 6 hours, with a jitter of
    ±20% fixed by the send key (retries of many sends spread out; a send's own is repeatable).
    A provider's Retry-After wins when it is longer."""
    base = min(FIRST_RETRY * (2 ** max(attempt - 1, 0)), LONGEST_RETRY)
    spread = int(hashlib.sha256(send_key.encode()).hexdigest()[:4], 16) / 0xFFFF  # 0..1
    delay: timedelta = base * (0.8 + 0.4 * spread)
    if retry_after is not None and retry_after > delay.total_seconds():
        delay = timedelta(seconds=min(retry_after, LONGEST_RETRY.total_seconds()))
    return delay


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    ambiguous: int = 0
    cancelled: int = 0  # marketing the contact no longer allows
    paused: list[str] = field(default_factory=list)  # channels whose configuration is broken

    def __bool__(self) -> bool:
        return self.claimed > 0


@dataclass(frozen=True)
class _Claimed:
    id: int
    send_key: str
    channel: str
    topic: str | None
    kind: str
    payload: Mapping[str, Any]
    attempts: int
    contact_id: int
    contact: Mapping[str, Any]
    owner: str  # the pass that leased it
    enrollment_id: int | None
    scenario_id: str
    version_id: int | None
    step_id: str


@dataclass(frozen=True)
class _Outcome:
    status: str  # sent | queued | failed | bounced | ambiguous
    provider_id: str | None = None
    error: str | None = None
    retry_at: datetime | None = None
    refund: bool = False  # the attempt did not count (the channel was not usable)


class Dispatcher:
    """Delivers queued sends of the configured channels; one instance per worker process."""

    def __init__(
        self,
        engine: Engine,
        channels: Mapping[str, Channel],
        clock: Clock | None = None,
        batch: int = 50,
        # Renewed every third of it while a pass runs, so it may be far shorter than a batch
        # takes: it is how long a dead worker's messages wait for another.
        lease: timedelta = LEASE,
        prepare: Prepare | None = None,
        # The policy the gate applied: a queued marketing message is judged again by its rules.
        policy: Policy | None = None,
        recheck_after: timedelta = RECHECK_AFTER,
    ) -> None:
        self.engine = engine
        self.channels = dict(channels)
        self.clock = clock or SystemClock()
        self.batch = batch
        self.lease = lease
        self.prepare = prepare
        self.policy = policy or Policy()
        self.recheck_after = recheck_after
        # When the current pass claimed its rows (a dispatcher runs one pass at a time): leases
        # are counted from the pass's `now`, so they follow an injected clock too.
        self._started = time.monotonic()
        # Set on SIGTERM: the message being delivered is recorded, the rest of the batch is
        # released (still queued) for the next worker.
        self.stopping = threading.Event()

    def run_once(self, now: datetime | None = None) -> DeliveryReport:
        """Expire stale claims, then claim, deliver and record one batch."""
        now = now or self.clock.now()
        report = DeliveryReport()
        if not self.channels or self.stopping.is_set():
            return report
        with self.engine.begin() as conn:
            self._expire(conn, now)
            claimed = self._claim(conn, now)
            cancelled = self._cancel_withdrawn(conn, claimed, now)
        report.claimed, report.cancelled = len(claimed), len(cancelled)
        claimed = [r for r in claimed if r.id not in cancelled]
        if not claimed:
            return report
        beat = self.lease.total_seconds() / 3
        try:
            with Heartbeat(beat, lambda: self._renew(claimed, now)):
                for row in claimed:
                    if self.stopping.is_set():
                        break
                    if not self._hand_over(row, now, report):
                        continue  # the lease ran out and another pass has it
                    started = time.monotonic()
                    outcome = self._deliver(row, now, report)
                    metrics.delivery_done(row.channel, outcome.status, time.monotonic() - started,
                                          outcome.error, paused=outcome.refund)  # fmt: skip
                    # Recorded at once, one short transaction per send: a provider's delivery
                    # report can arrive seconds later and must find the send `sent` with its
                    # provider id.
                    with self.engine.begin() as conn:
                        self._record(conn, row, outcome, now, report)
        finally:
            self._release(claimed)
        return report

    def close(self) -> None:
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception:
                logger.exception("closing a channel failed")

    # ------------------------------------------------------------------ claim
    def _expire(self, conn: Connection, now: datetime) -> None:
        """Rows in flight whose claim ran out: again for idempotent providers, else ambiguous.
        (Claimed rows never handed over are still `queued`: they only wait for the lease.)"""
        idempotent = [n for n, c in self.channels.items() if c.info.idempotent_provider]
        stale = and_(Send.status == "sending", Send.lease_until < now)
        free = {"lease_until": None, "lease_owner": None}
        if idempotent:
            conn.execute(
                update(Send)
                .where(stale, Send.channel.in_(idempotent))
                .values(status="queued", next_attempt_at=now, **free)
            )
        conn.execute(
            update(Send)
            .where(stale)
            .values(
                status="ambiguous",
                error="the worker stopped while the provider had the message; not resent",
                **free,
            )
        )

    def _claim(self, conn: Connection, now: datetime) -> list[_Claimed]:
        due = (
            select(Send.id)
            .where(
                Send.status == "queued",
                Send.channel.in_(list(self.channels)),
                or_(Send.next_attempt_at.is_(None), Send.next_attempt_at <= now),
                or_(Send.lease_until.is_(None), Send.lease_until < now),
            )
            .order_by(Send.id)
            .limit(self.batch)
        )
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list(conn.execute(due).scalars())
        if not ids:
            return []
        owner = uuid.uuid4().hex
        self._started = time.monotonic()
        conn.execute(
            update(Send)
            .where(Send.id.in_(ids), Send.status == "queued")
            .values(lease_owner=owner, lease_until=self._lease_end(now))
        )
        rows = conn.execute(
            select(
                Send.id, Send.send_key, Send.channel, Send.topic, Send.kind, Send.payload,
                Send.attempts, Send.contact_id, Contact.external_id, Contact.email, Contact.phone,
                Contact.locale, Contact.timezone, Send.enrollment_id, Send.scenario_id,
                Send.version_id, Send.step_id,
            )
            .join(Contact, Contact.id == Send.contact_id)
            .where(Send.id.in_(ids), Send.lease_owner == owner)
            .order_by(Send.id)
        ).all()  # fmt: skip
        claimed = []
        for r in rows:
            contact = {"external_id": r.external_id, "email": r.email, "phone": r.phone,
                       "locale": r.locale, "timezone": r.timezone}  # fmt: skip
            if r.channel == "push":  # browsers' subscriptions and app devices
                from engine.delivery.push import push_recipient

                contact.update(push_recipient(conn, r.contact_id))
            payload = r.payload or {}
            row = _Claimed(r.id, r.send_key, r.channel, r.topic, r.kind, payload,
                           r.attempts + 1, r.contact_id, contact, owner, r.enrollment_id,
                           r.scenario_id, r.version_id, r.step_id)  # fmt: skip
            claimed.append(row)
        return claimed

    def _lease_end(self, now: datetime) -> datetime:
        """The pass's time (`now` plus what has elapsed since the claim) plus one lease."""
        return now + timedelta(seconds=time.monotonic() - self._started) + self.lease

    def _renew(self, claimed: list[_Claimed], now: datetime) -> None:
        """The heartbeat: extend the lease of the pass's rows not settled yet."""
        with self.engine.begin() as conn:
            held = _held(claimed, "queued", "sending")
            conn.execute(update(Send).where(held).values(lease_until=self._lease_end(now)))

    def _hand_over(
        self, row: _Claimed, now: datetime, report: DeliveryReport | None = None
    ) -> bool:
        """Mark the row in flight, committed before the provider call: after a crash, only such
        rows may have reached the provider. False when the claim was lost, or when the contact
        withdrew since the claim (the row is cancelled; asked only once the claim's reading is
        RECHECK_AFTER old)."""
        with self.engine.begin() as conn:
            stale = time.monotonic() - self._started >= self.recheck_after.total_seconds()
            if stale and self._cancel_withdrawn(conn, [row], now):
                if report is not None:
                    report.cancelled += 1
                return False
            return bool(
                conn.execute(
                    update(Send)
                    .where(
                        Send.id == row.id, Send.status == "queued", Send.lease_owner == row.owner
                    )
                    .values(
                        status="sending", attempts=row.attempts, lease_until=self._lease_end(now)
                    )
                ).rowcount
            )

    def _release(self, claimed: list[_Claimed]) -> None:
        """Free the rows of a pass that stopped early (an error), for the next pass."""
        with self.engine.begin() as conn:
            held = _held(claimed, "queued")
            conn.execute(update(Send).where(held).values(lease_owner=None, lease_until=None))

    # ------------------------------------------------------------------ re-check
    def _cancel_withdrawn(self, conn: Connection, rows: list[_Claimed], now: datetime) -> set[int]:
        """Cancel the marketing rows the gate would no longer allow, journaling its rule id;
        their ids. The same statements for one row or a batch, one update per reason."""
        marketing = [r for r in rows if r.kind == "marketing"]
        if not marketing:
            return set()
        wanted = [(r.id, r.contact_id, r.channel, r.topic) for r in marketing]
        blocked = withdrawals(conn, self.policy, wanted, now)
        reasons: dict[str, list[_Claimed]] = {}
        for row in marketing:
            if row.id in blocked:
                reasons.setdefault(blocked[row.id], []).append(row)
        cancelled: set[int] = set()
        journal: list[dict[str, Any]] = []
        for reason, held in reasons.items():
            done = conn.execute(
                update(Send)
                .where(_held(held, "queued"))
                .values(status="cancelled", error=reason, lease_owner=None, lease_until=None)
                .returning(Send.id)
            ).scalars()
            mine = set(done)  # (not all: a row whose claim ran out belongs to another pass)
            cancelled |= mine
            metrics.sends_cancelled(r.channel for r in held if r.id in mine)
            journal += [
                {"at": now, "kind": "cancelled", "enrollment_id": r.enrollment_id,
                 "contact_id": r.contact_id, "scenario_id": r.scenario_id,
                 "version_id": r.version_id, "step_id": r.step_id, "reason": reason,
                 "data": {"channel": r.channel, "send_key": r.send_key}}
                for r in held if r.id in mine
            ]  # fmt: skip
        if journal:
            conn.execute(insert(JournalEntry), journal)
        return cancelled

    # ------------------------------------------------------------------ deliver
    def _message(self, row: _Claimed) -> OutboundMessage:
        meta = dict(row.payload.get("meta") or {})
        recipient = {**row.contact, "contact_id": row.contact_id}
        if "url" in meta:  # a webhook step names its endpoint
            recipient["url"] = meta["url"]
        parts = {str(k): str(v) for k, v in (row.payload.get("parts") or {}).items()}
        message = OutboundMessage(
            send_key=row.send_key, channel=row.channel, recipient=recipient, parts=parts,
            topic=row.topic, kind=row.kind, metadata=meta,
        )  # fmt: skip
        return self.prepare(message) if self.prepare else message

    def _deliver(self, row: _Claimed, now: datetime, report: DeliveryReport) -> _Outcome:
        channel = self.channels[row.channel]
        try:
            receipt = channel.send(self._message(row))
        except AmbiguousDeliveryError as exc:
            if channel.info.idempotent_provider:  # the provider dedupes: trying again is safe
                return self._retry(row, now, exc)
            return _Outcome("ambiguous", error=str(exc))
        except TransientChannelError as exc:
            return self._retry(row, now, exc)
        except ChannelConfigError as exc:
            if row.channel not in report.paused:
                report.paused.append(row.channel)
                logger.error("channel %s is misconfigured: %s", row.channel, exc)
            return _Outcome("queued", error=str(exc), retry_at=now + CONFIG_PAUSE, refund=True)
        except PermanentChannelError as exc:
            return _Outcome("bounced" if exc.bounce else "failed", error=str(exc))
        except ChannelError as exc:
            return self._retry(row, now, TransientChannelError(str(exc)))
        except Exception as exc:  # a provider bug fails this send, not the batch
            logger.exception("channel %s raised unexpectedly", row.channel)
            return _Outcome("failed", error=f"internal error: {type(exc).__name__}")
        return _Outcome("sent", provider_id=receipt.provider_id)

    def _retry(self, row: _Claimed, now: datetime, exc: TransientChannelError) -> _Outcome:
        if row.attempts >= MAX_ATTEMPTS:
            return _Outcome("failed", error=f"gave up after {row.attempts} attempts: {exc}")
        delay = retry_delay(row.attempts, row.send_key, exc.retry_after)
        return _Outcome("queued", error=str(exc), retry_at=now + delay)

    # ------------------------------------------------------------------ record
    def _record(
        self, conn: Connection, row: _Claimed, out: _Outcome, now: datetime,
        report: DeliveryReport,
    ) -> None:  # fmt: skip
        from engine.insights.reports import record_outcome

        values: dict[str, Any] = {"status": out.status, "lease_until": None, "lease_owner": None}
        values["error"] = (out.error or "")[:1000] or None
        if out.status == "sent":
            values.update(provider_id=out.provider_id, sent_at=now)
            report.sent += 1
        elif out.status == "queued":
            values["next_attempt_at"] = out.retry_at
            if out.refund:
                values["attempts"] = Send.attempts - 1
            else:
                report.retried += 1
        elif out.status == "ambiguous":
            report.ambiguous += 1
        else:
            report.failed += out.status == "failed"
            report.bounced += out.status == "bounced"
        written = conn.execute(
            update(Send)
            .where(Send.id == row.id, Send.status == "sending", Send.lease_owner == row.owner)
            .values(**values)
        ).rowcount
        if written and out.status in ("bounced", "failed", "ambiguous"):
            # (not written: the claim ran out and the row was settled elsewhere)
            record_outcome(
                conn, row.channel, row.send_key, row.contact_id, row.contact["external_id"],
                row.contact, out.status, out.error, now,
            )  # fmt: skip


def _held(claimed: list[_Claimed], *statuses: str) -> ColumnElement[bool]:
    """Rows of one pass's claim still leased to it, in one of `statuses`."""
    return and_(
        Send.id.in_([r.id for r in claimed]),
        Send.lease_owner == claimed[0].owner,
        Send.status.in_(statuses),
    )


def workspace_dispatcher(engine: Engine, settings: Any) -> Dispatcher | None:
    """The dispatcher for the channels of `channels.yaml` beside the scenarios; None when every
    channel goes to the outbox. A broken file raises ScenarioInvalid, each problem located."""
    from engine.delivery.channel_config import load_channels

    channels = load_channels(settings.scenarios_dir)
    if not channels:
        return None
    if hasattr(channels.get("push"), "on_gone"):
        from engine.delivery.push import forget_gone

        channels["push"].on_gone = forget_gone(engine)  # type: ignore[attr-defined]
    from engine.policy.loader import load_policy_file
    from engine.policy.loading import policy_path

    lease = timedelta(seconds=settings.delivery_lease_seconds)
    policy = load_policy_file(policy_path(settings))  # the worker's gate reads the same file
    return Dispatcher(
        engine, channels, lease=lease, prepare=tracking_prepare(settings), policy=policy
    )


def tracking_prepare(settings: Any, clock: Clock | None = None) -> Prepare:
    """A marketing email gets its unsubscribe footer and one-click URL (RFC 8058), tracked links
    and open pixel, signed with the workspace secret, at the workspace's public address."""
    from engine.delivery.links import secret_key
    from engine.delivery.tracking import render_tracking

    secret = secret_key(settings)
    clock = clock or SystemClock()

    def prepare(message: OutboundMessage) -> OutboundMessage:
        if message.channel != "email" or message.kind == "transactional":
            return message
        parts, meta = render_tracking(
            message.parts, int(message.recipient["contact_id"]), message.channel, message.topic,
            message.send_key, settings.public_base, secret, clock.now(),
        )  # fmt: skip
        return replace(message, parts=parts, metadata={**message.metadata, **meta})

    return prepare
