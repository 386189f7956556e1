"""Consent ledger, suppression list and pressure barometer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Written by hand and frozen, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the policy tables."""
    op.create_table(
        "consent_records",
        sa.Column("id", BigIntId, nullable=False),
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("wording", sa.Text(), nullable=True),
        sa.Column("wording_version", sa.String(64), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        _at("at"),
        _at("expires_at", nullable=True),
        sa.Column("evidence", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consent_records"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_consent_records_contact_id_contacts"
        ),
    )
    op.create_index(
        "ix_consent_records_contact_id_channel_topic_at",
        "consent_records",
        ["contact_id", "channel", "topic", "at"],
    )
    op.create_table(
        "consent_states",
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _at("since"),
        _at("expires_at", nullable=True),
        sa.Column("record_id", BigIntId, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "channel", "topic", name="pk_consent_states"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_consent_states_contact_id_contacts"
        ),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", BigIntId, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("contact_id", BigIntId, nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        _at("at"),
        sa.PrimaryKeyConstraint("id", name="pk_suppressions"),
        sa.UniqueConstraint("channel", "address", name="uq_suppressions_channel_address"),
    )
    op.create_index("ix_suppressions_contact_id", "suppressions", ["contact_id"])
    op.create_table(
        "pressure",
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("score", sa.Float(), server_default="0", nullable=False),
        sa.Column("state", sa.String(16), server_default="equilibrium", nullable=False),
        _at("updated_at"),
        sa.Column("signals", JSONType, server_default="[]", nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "channel", name="pk_pressure"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_pressure_contact_id_contacts"
        ),
    )


def downgrade() -> None:
    """Drop the policy tables."""
    for table in ("pressure", "suppressions", "consent_states", "consent_records"):
        op.drop_table(table)
