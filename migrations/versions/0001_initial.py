"""Initial schema: contacts, events, scenarios and versions, enrollments, sends, journal.

Revision ID: 0001
Revises:
Create Date: 2025-11-23

Written by hand and frozen: it defines its own types instead of importing the models, so later
model changes cannot rewrite history. tests/test_store.py checks it still matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ACTIVE = sa.text("status = 'active'")
CURRENT_VERSION_FK = "fk_scenarios_current_version_id_scenario_versions"


def _id() -> sa.Column[int]:
    return sa.Column("id", BigIntId, nullable=False)


def _at(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "contacts",
        _id(),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("attributes", JSONType, server_default="{}", nullable=False),
        sa.Column("tags", JSONType, server_default="[]", nullable=False),
        sa.Column("score", sa.Integer(), server_default="0", nullable=False),
        sa.Column("opted_out", sa.Boolean(), server_default=sa.false(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.UniqueConstraint("external_id", name="uq_contacts_external_id"),
    )
    op.create_table(
        "events",
        _id(),
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("properties", JSONType, server_default="{}", nullable=False),
        _at("occurred_at"),
        _at("received_at"),
        sa.Column("event_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_events_contact_id_contacts"
        ),
        sa.UniqueConstraint("event_key", name="uq_events_event_key"),
    )
    op.create_index(
        "ix_events_contact_id_name_occurred_at", "events", ["contact_id", "name", "occurred_at"]
    )
    op.create_table(
        "scenarios",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), server_default="draft", nullable=False),
        sa.Column("current_version_id", BigIntId, nullable=True),
        sa.Column("source_path", sa.Text(), nullable=True),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_scenarios"),
        # Rendered inline where ALTER cannot add constraints (SQLite); added below elsewhere.
        sa.ForeignKeyConstraint(
            ["current_version_id"],
            ["scenario_versions.id"],
            name=CURRENT_VERSION_FK,
            use_alter=True,
        ),
    )
    op.create_table(
        "scenario_versions",
        _id(),
        sa.Column("scenario_id", sa.String(128), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("bundle", JSONType, nullable=False),
        _at("published_at"),
        sa.Column("published_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scenario_versions"),
        sa.ForeignKeyConstraint(
            ["scenario_id"], ["scenarios.id"], name="fk_scenario_versions_scenario_id_scenarios"
        ),
        sa.UniqueConstraint(
            "scenario_id", "number", name="uq_scenario_versions_scenario_id_number"
        ),
        sa.UniqueConstraint(
            "scenario_id", "content_hash", name="uq_scenario_versions_scenario_id_content_hash"
        ),
    )
    if op.get_bind().dialect.supports_alter:
        op.create_foreign_key(
            CURRENT_VERSION_FK, "scenarios", "scenario_versions", ["current_version_id"], ["id"]
        )
    op.create_table(
        "enrollments",
        _id(),
        sa.Column("scenario_id", sa.String(128), nullable=False),
        sa.Column("version_id", BigIntId, nullable=False),
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("step_id", sa.String(128), nullable=True),
        _at("step_entered_at", nullable=True),
        _at("deadline", nullable=True),
        _at("due_at", nullable=True),
        sa.Column("waiting_for", sa.String(128), nullable=True),
        sa.Column("entry_key", sa.String(128), nullable=False),
        sa.Column("trigger_event_id", BigIntId, nullable=True),
        _at("entered_at"),
        _at("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(64), nullable=True),
        sa.Column("visits", sa.Integer(), server_default="0", nullable=False),
        sa.Column("vars", JSONType, server_default="{}", nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        _at("lease_until", nullable=True),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_enrollments"),
        sa.ForeignKeyConstraint(
            ["scenario_id"], ["scenarios.id"], name="fk_enrollments_scenario_id_scenarios"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["scenario_versions.id"],
            name="fk_enrollments_version_id_scenario_versions",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_enrollments_contact_id_contacts"
        ),
        sa.UniqueConstraint(
            "scenario_id",
            "contact_id",
            "entry_key",
            name="uq_enrollments_scenario_id_contact_id_entry_key",
        ),
    )
    op.create_index(
        "ix_enrollments_due_at_active",
        "enrollments",
        ["due_at"],
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_index("ix_enrollments_contact_id_status", "enrollments", ["contact_id", "status"])
    op.create_index("ix_enrollments_scenario_id_status", "enrollments", ["scenario_id", "status"])
    op.create_table(
        "sends",
        _id(),
        sa.Column("send_key", sa.String(200), nullable=False),
        sa.Column("enrollment_id", BigIntId, nullable=True),
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("scenario_id", sa.String(128), nullable=False),
        sa.Column("version_id", BigIntId, nullable=True),
        sa.Column("step_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("topic", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("payload", JSONType, server_default="{}", nullable=False),
        sa.Column("provider_id", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _at("created_at"),
        _at("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sends"),
        sa.ForeignKeyConstraint(
            ["enrollment_id"], ["enrollments.id"], name="fk_sends_enrollment_id_enrollments"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_sends_contact_id_contacts"
        ),
        sa.UniqueConstraint("send_key", name="uq_sends_send_key"),
    )
    op.create_index("ix_sends_contact_id_created_at", "sends", ["contact_id", "created_at"])
    op.create_index("ix_sends_status", "sends", ["status"])
    op.create_index("ix_sends_channel_created_at", "sends", ["channel", "created_at"])
    op.create_table(
        "journal",
        _id(),
        _at("at"),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("enrollment_id", BigIntId, nullable=True),
        sa.Column("contact_id", BigIntId, nullable=True),
        sa.Column("scenario_id", sa.String(128), nullable=True),
        sa.Column("version_id", BigIntId, nullable=True),
        sa.Column("step_id", sa.String(128), nullable=True),
        sa.Column("reason", sa.String(128), nullable=True),
        sa.Column("data", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_journal"),
    )
    op.create_index("ix_journal_enrollment_id", "journal", ["enrollment_id"])
    op.create_index("ix_journal_scenario_id_kind", "journal", ["scenario_id", "kind"])
    op.create_index("ix_journal_at", "journal", ["at"])
    op.create_table(
        "schedule_firings",
        _id(),
        sa.Column("scenario_id", sa.String(128), nullable=False),
        _at("fire_at"),
        _at("created_at"),
        sa.Column("version_id", BigIntId, nullable=True),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("cursor", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_firings"),
        sa.ForeignKeyConstraint(
            ["scenario_id"], ["scenarios.id"], name="fk_schedule_firings_scenario_id_scenarios"
        ),
        sa.UniqueConstraint(
            "scenario_id", "fire_at", name="uq_schedule_firings_scenario_id_fire_at"
        ),
    )
    op.create_table(
        "event_inbox",
        sa.Column("event_id", BigIntId, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_event_inbox"),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name="fk_event_inbox_event_id_events"),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.BigInteger(), server_default="0", nullable=False),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("name", name="pk_cursors"),
    )


def downgrade() -> None:
    """Drop every table, dependents first."""
    if op.get_bind().dialect.supports_alter:
        op.drop_constraint(CURRENT_VERSION_FK, "scenarios", type_="foreignkey")
    for table in (
        "cursors",
        "event_inbox",
        "schedule_firings",
        "journal",
        "sends",
        "enrollments",
        "scenario_versions",
        "scenarios",
        "events",
        "contacts",
    ):
        op.drop_table(table)
