"""Pressure health: the daily share of over-pressured contacts, and events read by name and day.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-12

Written by hand and frozen, like the ones before.

- `pressure_health_days`: per day (the workspace's) and channel ("*": overall), how many
  contacts had a barometer reading and how many of them were over-pressured, as last counted by
  the worker that day. The barometer keeps only the present; this is its history, so the
  over-pressured share can be compared with its own trailing baseline.
- `ix_events_name_occurred_at`: the health signals count opens, clicks, unsubscribes,
  complaints and bounces of every contact over a span of days; the existing index leads with
  the contact and cannot serve that.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create pressure_health_days and the events (name, occurred_at) index."""
    op.create_table(
        "pressure_health_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("contacts", sa.BigInteger(), nullable=False),
        sa.Column("over", sa.BigInteger(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("day", "channel", name="pk_pressure_health_days"),
    )
    op.create_index("ix_events_name_occurred_at", "events", ["name", "occurred_at"])


def downgrade() -> None:
    """Drop the index and the table."""
    op.drop_index("ix_events_name_occurred_at", table_name="events")
    op.drop_table("pressure_health_days")
