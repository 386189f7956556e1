"""Named API keys with a scope, stored hashed.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

Written by hand and frozen, like the ones before. A key is `pk_<prefix>_<random>`: the prefix
(unique, shown in listings) finds the row, and only the SHA-256 of the whole key is kept, so the
database never holds a usable key. A revoked key keeps its row (who revoked it, when).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create api_keys."""
    op.create_table(
        "api_keys",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        _at("created_at", nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        _at("last_used_at"),
        _at("revoked_at"),
        sa.Column("revoked_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("name", name="uq_api_keys_name"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )


def downgrade() -> None:
    """Drop api_keys."""
    op.drop_table("api_keys")
