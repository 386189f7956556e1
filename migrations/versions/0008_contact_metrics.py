"""Computed attributes: contact_metrics (RFM, lifecycle, customer value), the full runs and the
decayed lead scores.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Written by hand and frozen, like the ones before. Independent of the segments tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
When = sa.DateTime(timezone=True)


def _keyed_by_contact(table: str) -> tuple[sa.Constraint, ...]:
    """One row per contact, gone with the contact."""
    return (
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=f"fk_{table}_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", name=f"pk_{table}"),
    )


def upgrade() -> None:
    """Create contact_metrics with its lifecycle and class indexes, contact_metric_runs and
    contact_lead_scores."""
    op.create_table(
        "contact_metrics",
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("last_purchase_at", When, nullable=True),
        sa.Column("recency_days", sa.Integer(), nullable=True),
        sa.Column("orders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("frequency", sa.Integer(), server_default="0", nullable=False),
        sa.Column("monetary", sa.Float(), server_default="0", nullable=False),
        sa.Column("value", sa.Float(), server_default="0", nullable=False),
        sa.Column("r", sa.Integer(), nullable=True),
        sa.Column("f", sa.Integer(), nullable=True),
        sa.Column("m", sa.Integer(), nullable=True),
        sa.Column("rfm_class", sa.String(32), nullable=True),
        sa.Column("lifecycle", sa.String(32), nullable=False),
        sa.Column("computed_at", When, nullable=False),
        *_keyed_by_contact("contact_metrics"),
    )
    op.create_index("ix_contact_metrics_lifecycle", "contact_metrics", ["lifecycle"])
    op.create_index("ix_contact_metrics_rfm_class", "contact_metrics", ["rfm_class"])
    op.create_table(
        "contact_metric_runs",
        sa.Column("id", BigIntId, nullable=False),
        sa.Column("computed_at", When, nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("edges", JSONType, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contact_metric_runs"),
    )
    op.create_table(
        "contact_lead_scores",
        sa.Column("contact_id", BigIntId, nullable=False),
        sa.Column("lead_score", sa.Float(), nullable=False),
        sa.Column("score_seen", sa.Integer(), nullable=False),
        sa.Column("computed_at", When, nullable=False),
        *_keyed_by_contact("contact_lead_scores"),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("contact_lead_scores")
    op.drop_table("contact_metric_runs")
    op.drop_index("ix_contact_metrics_rfm_class", "contact_metrics")
    op.drop_index("ix_contact_metrics_lifecycle", "contact_metrics")
    op.drop_table("contact_metrics")
