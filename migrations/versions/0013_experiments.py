"""Experiments: what the worker keeps of each live experiment between looks.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

Written by hand and frozen, like the ones before.

- `experiment_state`: one row per split step under watch (bandit or automatic winner): the
  bandit's shares of new entries per branch, read by the worker with the version, and the
  running minimum of each branch's always-valid p-value (it must never go back up).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create experiment_state."""
    op.create_table(
        "experiment_state",
        sa.Column("scenario_id", sa.String(128), nullable=False),
        sa.Column("step_id", sa.String(128), nullable=False),
        sa.Column("shares", JSON, nullable=True),
        sa.Column("p_values", JSON, server_default="{}", nullable=False),
        sa.Column("looks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scenario_id", "step_id", name="pk_experiment_state"),
    )


def downgrade() -> None:
    """Drop experiment_state."""
    op.drop_table("experiment_state")
