"""Typed SQLAlchemy models of every table; migrations/versions must match them exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

from engine.store.db import utcnow

# Stable constraint names, so later migrations can drop or alter them (SQLite batch mode needs
# a name to find a constraint again).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
# Only a column declared exactly INTEGER PRIMARY KEY aliases the rowid and autoincrements in SQLite.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")

SCENARIO_STATUSES = ("live", "paused", "draft")
ENROLLMENT_STATUSES = ("active", "completed", "converted", "exited", "failed")
SEND_KINDS = ("marketing", "transactional")
# queued (claimed: leased to one delivery pass) → sending (handed to the provider) → sent →
# delivered; or back to queued (a transient error, retried at next_attempt_at), failed, bounced,
# ambiguous (the provider may have it), or cancelled (a queued marketing message the contact no
# longer allows: withdrawn consent, suppression).
SEND_STATUSES = (
    "queued", "sending", "sent", "delivered", "failed", "bounced", "ambiguous", "cancelled",
)  # fmt: skip


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always reads back as an aware UTC datetime."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass an aware one")
        # Converting (not just tagging) keeps SQLite's text timestamps comparable as strings.
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite keeps no offset; we only ever wrote UTC
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding the metadata that Alembic compares against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Contact(Base):
    """A person known to the system; personal data lives here, not in logs."""

    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_email", "email"),
        Index("ix_contacts_phone", "phone"),
        # The API's search by prefix (engine.audience.contact_list), on PostgreSQL only
        # (migration 0018): LIKE 'x%' on the lower-cased values is an index range.
        *(
            Index(
                f"ix_contacts_{name}_lower",
                func.lower(text(name)).label(name),
                postgresql_ops={name: "text_pattern_ops"},
            ).ddl_if(dialect="postgresql")
            for name in ("external_id", "email")
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    timezone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(16))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list, server_default="[]")
    score: Mapped[int] = mapped_column(default=0, server_default="0")
    opted_out: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
    # A merged contact is a tombstone pointing at the contact that absorbed it.
    merged_into: Mapped[int | None] = mapped_column(BigIntId)
    # Created by an event for an unknown anonymous id; a merge absorbs it later.
    anonymous: Mapped[bool] = mapped_column(default=False, server_default=false())
    erased_at: Mapped[datetime | None]


class ContactIdentifier(Base):
    """One way to recognise a contact beyond its external id; unique per kind."""

    __tablename__ = "contact_identifiers"
    __table_args__ = (
        UniqueConstraint("kind", "value", name="uq_contact_identifiers_kind"),
        Index(None, "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"))
    kind: Mapped[str] = mapped_column(String(32))  # email, phone, anonymous_id, loyalty_card...
    value: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(32))  # api, import, identify, merge, cli...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContactMerge(Base):
    """Who merged which contact into which, when, and what moved."""

    __tablename__ = "contact_merges"
    __table_args__ = (Index(None, "survivor_id"), Index(None, "absorbed_id"))

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    survivor_id: Mapped[int] = mapped_column(BigIntId)
    absorbed_id: Mapped[int] = mapped_column(BigIntId)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))  # identify, cli, api, designer
    details: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class InstallationSecret(Base):
    """A secret shared by every process on this database (the erased addresses' salt)."""

    __tablename__ = "installation_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Event(Base):
    """Something a contact did or that happened to them; append-only, `id` is the cursor."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_contact_id_name_occurred_at", "contact_id", "name", "occurred_at"),
        Index("ix_events_name_occurred_at", "name", "occurred_at"),  # health: every contact's
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"))
    name: Mapped[str] = mapped_column(String(128))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The client's idempotency key: a replayed event hits the unique constraint.
    event_key: Mapped[str | None] = mapped_column(String(255), unique=True)


class ScenarioRecord(Base):
    """A scenario as stored: its status and which published version is current."""

    __tablename__ = "scenarios"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="draft", server_default="draft")
    # use_alter: scenarios and scenario_versions reference each other.
    current_version_id: Mapped[int | None] = mapped_column(
        BigIntId, ForeignKey("scenario_versions.id", use_alter=True)
    )
    source_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScenarioVersion(Base):
    """An immutable, content-hashed snapshot of a scenario that enrollments are pinned to."""

    __tablename__ = "scenario_versions"
    __table_args__ = (
        UniqueConstraint("scenario_id", "number"),
        UniqueConstraint("scenario_id", "content_hash"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    scenario_id: Mapped[str] = mapped_column(String(128), ForeignKey("scenarios.id"))
    number: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    bundle: Mapped[dict[str, Any]]
    published_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_by: Mapped[str | None] = mapped_column(String(255))


class Enrollment(Base):
    """One contact's run through one version: where it is and when the worker must look again."""

    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("scenario_id", "contact_id", "entry_key"),
        Index(
            "ix_enrollments_due_at_active",
            "due_at",
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        Index("ix_enrollments_contact_id_status", "contact_id", "status"),
        Index("ix_enrollments_scenario_id_status", "scenario_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    scenario_id: Mapped[str] = mapped_column(String(128), ForeignKey("scenarios.id"))
    version_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("scenario_versions.id"))
    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"))
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    step_id: Mapped[str | None] = mapped_column(String(128))
    step_entered_at: Mapped[datetime | None]
    deadline: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    waiting_for: Mapped[str | None] = mapped_column(String(128))
    # Event id, fire time or "once": what makes re-entry into the same scenario distinct.
    entry_key: Mapped[str] = mapped_column(String(128))
    trigger_event_id: Mapped[int | None] = mapped_column(BigIntId)
    entered_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(64))
    visits: Mapped[int] = mapped_column(default=0, server_default="0")
    vars: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    # Fencing token: bumped on every claim so a worker whose lease expired cannot write back.
    attempt: Mapped[int] = mapped_column(default=0, server_default="0")


class Send(Base):
    """The send ledger: one row per channel action, reserved under a unique `send_key`."""

    __tablename__ = "sends"
    __table_args__ = (
        Index("ix_sends_contact_id_created_at", "contact_id", "created_at"),
        Index("ix_sends_status", "status"),
        Index("ix_sends_channel_created_at", "channel", "created_at"),
        Index("ix_sends_scenario_id_created_at", "scenario_id", "created_at"),
        Index("ix_sends_provider_id", "provider_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    send_key: Mapped[str] = mapped_column(String(200), unique=True)
    enrollment_id: Mapped[int | None] = mapped_column(BigIntId, ForeignKey("enrollments.id"))
    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"))
    scenario_id: Mapped[str] = mapped_column(String(128))
    version_id: Mapped[int | None] = mapped_column(BigIntId)
    step_id: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    provider_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    # No wall-clock default: caps count sends per day, so this must come from the injected clock.
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # Delivery: when a queued send may be tried (again), and which delivery pass holds it until
    # when (renewed by the pass's heartbeat).
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))


class JournalEntry(Base):
    """Append-only record of what happened and why; ids are copied, not foreign keys, for speed."""

    __tablename__ = "journal"
    __table_args__ = (
        Index("ix_journal_enrollment_id", "enrollment_id"),
        Index("ix_journal_scenario_id_kind", "scenario_id", "kind"),
        Index("ix_journal_at", "at"),
        Index("ix_journal_contact_id_at", "contact_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    enrollment_id: Mapped[int | None] = mapped_column(BigIntId)
    contact_id: Mapped[int | None] = mapped_column(BigIntId)
    scenario_id: Mapped[str | None] = mapped_column(String(128))
    version_id: Mapped[int | None] = mapped_column(BigIntId)
    step_id: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict[str, Any] | None]


class ScheduleFiring(Base):
    """One firing of a scheduled scenario; the unique key makes a cron firing happen once."""

    __tablename__ = "schedule_firings"
    __table_args__ = (UniqueConstraint("scenario_id", "fire_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    scenario_id: Mapped[str] = mapped_column(String(128), ForeignKey("scenarios.id"))
    fire_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The fan-out enrolls the audience in chunks; `cursor` is the last contact id done, so a
    # crash mid fan-out resumes where it stopped. status: pending | done | cancelled.
    version_id: Mapped[int | None] = mapped_column(BigIntId)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    cursor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class EventInbox(Base):
    """Events not yet seen by the trigger pass; a row leaves in the transaction that acts on it."""

    __tablename__ = "event_inbox"

    event_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("events.id"), primary_key=True)


class Cursor(Base):
    """A named position in a stream, e.g. the last event id the trigger pass has read."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ConsentRecord(Base):
    """One change of consent, with its evidence. Append-only: the history is the proof."""

    __tablename__ = "consent_records"
    __table_args__ = (Index(None, "contact_id", "channel", "topic", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"))
    channel: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(64))  # "*" for every topic of the channel
    state: Mapped[str] = mapped_column(String(16))  # pending | opted_in | opted_out
    source: Mapped[str] = mapped_column(String(32))  # form, api, import, unsubscribe_link, ...
    wording: Mapped[str | None] = mapped_column(Text)
    wording_version: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    evidence: Mapped[dict[str, Any] | None]


class ConsentState(Base):
    """The current consent per contact, channel and topic, kept with each record (for lookups)."""

    __tablename__ = "consent_states"

    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    record_id: Mapped[int] = mapped_column(BigIntId)


class Suppression(Base):
    """An address no marketing may reach on a channel (hard bounce, complaint, erasure...)."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("channel", "address"), Index(None, "contact_id"))

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))  # "*" suppresses every channel
    address: Mapped[str] = mapped_column(String(320))  # email, phone, or "contact:<id>"
    contact_id: Mapped[int | None] = mapped_column(BigIntId)
    reason: Mapped[str] = mapped_column(String(32))  # hard_bounce, spam_complaint, unsubscribe...
    source: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]


class Pressure(Base):
    """The barometer of a contact, overall (channel "*") and per channel, updated incrementally."""

    __tablename__ = "pressure"

    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    score: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    state: Mapped[str] = mapped_column(
        String(16), default="equilibrium", server_default="equilibrium"
    )
    updated_at: Mapped[datetime]
    signals: Mapped[list[Any]] = mapped_column(JSONType, default=list, server_default="[]")


class PressureHealthDay(Base):
    """Per day and channel ("*": overall), contacts with a barometer reading and how many were
    over-pressured, as last counted that day: the barometer's history, for pressure health."""

    __tablename__ = "pressure_health_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    contacts: Mapped[int] = mapped_column(BigInteger)
    over: Mapped[int] = mapped_column(BigInteger)
    counted_at: Mapped[datetime]


USER_ROLES = ("admin", "marketer", "viewer")


class User(Base):
    """A person who signs in to the designer; the password is stored as a salted hash only."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    language: Mapped[str | None] = mapped_column(String(8))
    # Set for a generated password: the next sign-in must choose a new one.
    must_change_password: Mapped[bool] = mapped_column(default=False, server_default=false())
    disabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]


class AuditEntry(Base):
    """Who changed, published, paused or resumed what, and when; append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "target_kind", "target_id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # save, publish, pause, resume, login...
    target_kind: Mapped[str] = mapped_column(String(32))  # scenario, user, policy, session
    target_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


class SignInThrottle(Base):
    """Failed sign-ins counted per name or per client address (kind "name" / "address").

    In the database so that every process of the designer counts the same attempts.
    """

    __tablename__ = "sign_in_throttle"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failure_at: Mapped[datetime]


class PushSubscription(Base):
    """A browser's Web Push subscription: the push service endpoint and the keys to encrypt for it.

    The endpoint is unique: the same browser subscribing again (or for another contact) updates
    the row. Rows are deleted when the push service answers 404/410 (the subscription is gone).
    """

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigIntId, ForeignKey("contacts.id"), index=True)
    endpoint: Mapped[str] = mapped_column(Text, unique=True)
    p256dh: Mapped[str] = mapped_column(String(128))  # base64url P-256 public key (65 bytes)
    auth: Mapped[str] = mapped_column(String(64))  # base64url authentication secret (16 bytes)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class ContactMetrics(Base):
    """A contact's computed attributes (engine/audience/attributes.py): RFM, lifecycle stage,
    customer value. Rebuilt set-based on a schedule, and for one contact on each purchase."""

    __tablename__ = "contact_metrics"
    __table_args__ = (Index(None, "lifecycle"), Index(None, "rfm_class"))

    contact_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    last_purchase_at: Mapped[datetime | None]
    recency_days: Mapped[int | None]  # as of computed_at
    orders: Mapped[int] = mapped_column(default=0, server_default="0")  # all time
    frequency: Mapped[int] = mapped_column(default=0, server_default="0")  # in the window
    monetary: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # in the window
    value: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # all time
    r: Mapped[int | None]
    f: Mapped[int | None]
    m: Mapped[int | None]
    rfm_class: Mapped[str | None] = mapped_column(String(32))
    lifecycle: Mapped[str] = mapped_column(String(32))
    computed_at: Mapped[datetime]


class ContactMetricRun(Base):
    """One full recompute: when, over how many customers, and the quintile edges it found, which
    score a purchasing contact until the next run without recomputing the base."""

    __tablename__ = "contact_metric_runs"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    computed_at: Mapped[datetime]
    customers: Mapped[int]
    edges: Mapped[dict[str, Any]]
    spec_hash: Mapped[str] = mapped_column(String(64))


class ContactLeadScore(Base):
    """The lead score decayed with `lead_score.half_life` of attributes.yaml, as of the last full
    recompute, and the raw score it had seen then: what the score gained since counts in full."""

    __tablename__ = "contact_lead_scores"

    contact_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    lead_score: Mapped[float] = mapped_column(Float)
    score_seen: Mapped[int]
    computed_at: Mapped[datetime]


class SegmentMember(Base):
    """A contact in a segment now, since when; rows come and go with the segment's rebuilds.

    The primary key (segment, contact) lists a segment's members in order; the contact index
    answers "which segments is this contact in". No foreign key, like the journal: a rebuild
    inserts a segment's members in one statement, and a contact gone from `contacts` leaves
    every segment at the next rebuild.
    """

    __tablename__ = "segment_members"
    __table_args__ = (Index(None, "contact_id"),)

    segment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    since: Mapped[datetime]


class SegmentChange(Base):
    """One entry into or exit from a segment, and why (rebuild, refresh...). Append-only.

    Ids are copied, not foreign keys, like the journal: a rebuild writes one row per change.
    """

    __tablename__ = "segment_history"
    __table_args__ = (Index(None, "segment_id", "at"), Index(None, "contact_id", "at"))

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(128))
    contact_id: Mapped[int] = mapped_column(BigIntId)
    change: Mapped[str] = mapped_column(String(8))  # entered | exited
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(64))


class SegmentCount(Base):
    """A segment's member count at the end of a day (the last update of that day wins)."""

    __tablename__ = "segment_counts"

    segment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    members: Mapped[int] = mapped_column(BigInteger)


class SegmentBuild(Base):
    """A segment the worker keeps: the hash of the definition it was last fully built from, and
    when. A definition whose hash differs is rebuilt at once; every one, on a schedule. The row
    is also the segment's lock: a rebuild or a refresh holds it (FOR UPDATE) while it writes."""

    __tablename__ = "segment_builds"

    segment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    definition_hash: Mapped[str] = mapped_column(String(64))
    built_at: Mapped[datetime | None]


class SegmentDue(Base):
    """A contact whose membership of a segment is to be computed again at `due_at`: the instant
    time alone changes the answer (an event leaving a window), or now (a refresh put off)."""

    __tablename__ = "segment_due"
    __table_args__ = (Index(None, "due_at"),)

    segment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    due_at: Mapped[datetime]


class ContactChange(Base):
    """A contact whose data of one kind changed (profile, consent, pressure, event:NAME) since
    the worker last refreshed the segments reading that kind. Written where contacts change."""

    __tablename__ = "contact_changes"

    contact_id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(160), primary_key=True)
    changed_at: Mapped[datetime]


class KpiDaily(Base):
    """A day's KPI counters of a scenario (step '' and channel '': the scenario level; arm '':
    no split), added to by the worker from the journal and the events (engine.insights.rollups).
    """

    __tablename__ = "kpi_daily"
    __table_args__ = (Index(None, "day"),)

    scenario_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    step_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    arm: Mapped[str] = mapped_column(String(64), primary_key=True)
    entries: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    sends: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    delivered: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    opens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    clicks: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bounces: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    unsubscribes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    complaints: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    conversions: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    revenue: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    cost: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class ExperimentState(Base):
    """What the worker keeps of a live experiment between looks (engine.worker.experiments):
    the bandit's current shares of new entries per branch, and the running minimum of each
    branch's always-valid p-value (sequential mode), which must never go back up."""

    __tablename__ = "experiment_state"

    scenario_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    step_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    shares: Mapped[dict[str, Any] | None]
    p_values: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    looks: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime]


class WorkerHeartbeat(Base):
    """A running worker process (id ``host:pid``): when it started and last beat, how many
    batches it committed, its code version, and the last outcome of each of its providers
    (``{channel: {"state", "at"}}``, no addresses). Written every PARCOURS_HEARTBEAT_SECONDS;
    read by /metrics and /api/health."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime]
    last_beat: Mapped[datetime]
    batches: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    version: Mapped[str] = mapped_column(String(32))
    providers: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")


API_KEY_SCOPES = ("read", "write", "admin")  # the designer's API scopes (designer/api_scope.py)


class ApiKey(Base):
    """A named key of the JSON API with a scope; only a hash of the key is kept.

    The key is `pk_<prefix>_<random>`: `prefix` finds the row (and names the key in listings),
    `hash` is the SHA-256 hex of the whole key. A fast hash is right here: the random part is
    256 bits from `secrets`, so there is nothing to guess that a slow hash would protect, and
    every API request checks one.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))  # read, write or admin
    prefix: Mapped[str] = mapped_column(String(8), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None]  # written at most once a minute per key
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(64))
