"""KPI rollups: daily counters per scenario, step, channel and arm, kept by the worker.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-12

Written by hand and frozen, like the ones before.

- `kpi_daily`: one row per day (in the workspace time zone), scenario, step ('' for the scenario
  level), channel ('' for every channel) and split arm ('' for none), holding the counters the
  reports read instead of rescanning the journal and the events. The worker adds to them from
  cursors (`cursors` rows `kpi:journal` and `kpi:events`) in the transaction that moves the
  cursor, so each source row counts exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = (
    "entries", "sends", "delivered", "opens", "clicks", "bounces", "unsubscribes", "complaints",
    "conversions",
)  # fmt: skip
AMOUNTS = ("revenue", "cost")


def upgrade() -> None:
    """Create kpi_daily."""
    op.create_table(
        "kpi_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("scenario_id", sa.String(128), nullable=False),
        sa.Column("step_id", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("arm", sa.String(64), nullable=False),
        *[sa.Column(c, sa.BigInteger(), server_default="0", nullable=False) for c in COUNTERS],
        *[sa.Column(c, sa.Float(), server_default="0", nullable=False) for c in AMOUNTS],
        sa.PrimaryKeyConstraint(
            "scenario_id", "day", "step_id", "channel", "arm", name="pk_kpi_daily"
        ),
    )
    op.create_index("ix_kpi_daily_day", "kpi_daily", ["day"])


def downgrade() -> None:
    """Drop kpi_daily."""
    op.drop_index("ix_kpi_daily_day", table_name="kpi_daily")
    op.drop_table("kpi_daily")
