"""Web Push subscriptions: one row per browser endpoint, linked to its contact.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

Written by hand and frozen, like the ones before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create push_subscriptions and its contact index."""
    op.create_table(
        "push_subscriptions",
        sa.Column("id", BigIntId, nullable=False),
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("p256dh", sa.String(128), nullable=False),
        sa.Column("auth", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_push_subscriptions_contact_id_contacts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_push_subscriptions"),
        sa.UniqueConstraint("endpoint", name="uq_push_subscriptions_endpoint"),
    )
    op.create_index("ix_push_subscriptions_contact_id", "push_subscriptions", ["contact_id"])


def downgrade() -> None:
    """Drop them."""
    op.drop_index("ix_push_subscriptions_contact_id", "push_subscriptions")
    op.drop_table("push_subscriptions")
