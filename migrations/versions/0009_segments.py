"""Segment membership: who is in each segment now, the entries and exits, the daily counts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Written by hand and frozen, like the ones before. `segment_history` is append-only like the
audit log (0007's triggers, reusing its PostgreSQL function).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PG_FUNCTION = "parcours_refuse_change"  # created by 0007


def upgrade() -> None:
    """Create segment_members, segment_history (append-only) and segment_counts."""
    op.create_table(
        "segment_members",
        sa.Column("segment_id", sa.String(128), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name="pk_segment_members"),
    )
    op.create_index("ix_segment_members_contact_id", "segment_members", ["contact_id"])
    op.create_table(
        "segment_history",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("segment_id", sa.String(128), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_segment_history"),
    )
    op.create_index("ix_segment_history_segment_id_at", "segment_history", ["segment_id", "at"])
    op.create_index("ix_segment_history_contact_id_at", "segment_history", ["contact_id", "at"])
    op.create_table(
        "segment_counts",
        sa.Column("segment_id", sa.String(128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("members", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("segment_id", "day", name="pk_segment_counts"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER segment_history_append_only BEFORE UPDATE OR DELETE ON "
            f"segment_history FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        op.execute(
            "CREATE TRIGGER segment_history_no_truncate BEFORE TRUNCATE ON segment_history "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER segment_history_no_{action.lower()} BEFORE {action} ON "
            "segment_history BEGIN "
            f"SELECT RAISE(ABORT, 'segment_history is append-only: {action} refused'); END"
        )


def downgrade() -> None:
    """Drop the three tables (and the triggers with them)."""
    op.drop_table("segment_counts")
    op.drop_index("ix_segment_history_contact_id_at", table_name="segment_history")
    op.drop_index("ix_segment_history_segment_id_at", table_name="segment_history")
    op.drop_table("segment_history")
    op.drop_index("ix_segment_members_contact_id", table_name="segment_members")
    op.drop_table("segment_members")
