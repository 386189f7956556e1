"""Worker heartbeats: one row per running worker process, for /metrics and /api/health.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

Written by hand and frozen, like the ones before. A handful of rows (one per worker process),
rewritten every few seconds: no index beyond the key.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create worker_heartbeats."""
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_beat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batches", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("providers", JSON, server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_worker_heartbeats"),
    )


def downgrade() -> None:
    """Drop worker_heartbeats."""
    op.drop_table("worker_heartbeats")
