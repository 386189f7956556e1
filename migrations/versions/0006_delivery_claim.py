"""Delivery claims: which delivery pass holds a send, so a claim is renewed and fenced per pass.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Written by hand and frozen, like the ones before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add sends.lease_owner."""
    with op.batch_alter_table("sends") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))


def downgrade() -> None:
    """Remove it."""
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("lease_owner")
