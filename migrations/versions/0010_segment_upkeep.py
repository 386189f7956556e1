"""Segment upkeep: each segment's last full build, the contacts due for a refresh, the changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10

Written by hand and frozen, like the ones before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create segment_builds, segment_due and contact_changes."""
    op.create_table(
        "segment_builds",
        sa.Column("segment_id", sa.String(128), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("segment_id", name="pk_segment_builds"),
    )
    op.create_table(
        "segment_due",
        sa.Column("segment_id", sa.String(128), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name="pk_segment_due"),
    )
    op.create_index("ix_segment_due_due_at", "segment_due", ["due_at"])
    op.create_table(
        "contact_changes",
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(160), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "kind", name="pk_contact_changes"),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("contact_changes")
    op.drop_index("ix_segment_due_due_at", table_name="segment_due")
    op.drop_table("segment_due")
    op.drop_table("segment_builds")
