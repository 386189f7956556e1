"""Delivery lifecycle of the send ledger: retry time, claim lease, provider id lookup.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Written by hand and frozen, like the ones before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the delivery columns and the index delivery reports look sends up by."""
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_sends_provider_id", "sends", ["provider_id"])


def downgrade() -> None:
    """Remove them."""
    op.drop_index("ix_sends_provider_id", "sends")
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("next_attempt_at")
