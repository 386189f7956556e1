"""Designer users and the audit log; indexes for the contact pages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Written by hand and frozen, like 0001 and 0002.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the users and audit_log tables."""
    op.create_table(
        "users",
        sa.Column("id", BigIntId, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        _at("created_at"),
        _at("last_login_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BigIntId, nullable=False),
        _at("at"),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_kind", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(128), nullable=True),
        sa.Column("details", JSONType, server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_target_kind_target_id", "audit_log", ["target_kind", "target_id"])
    # A contact's timeline reads the journal by contact; the contact list sorts by last update.
    op.create_index("ix_journal_contact_id_at", "journal", ["contact_id", "at"])
    op.create_index("ix_contacts_updated_at", "contacts", ["updated_at"])


def downgrade() -> None:
    """Drop the designer tables and indexes."""
    op.drop_index("ix_contacts_updated_at", "contacts")
    op.drop_index("ix_journal_contact_id_at", "journal")
    op.drop_table("audit_log")
    op.drop_table("users")
