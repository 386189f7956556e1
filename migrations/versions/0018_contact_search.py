"""Contact search by prefix: the API's list of contacts finds `q` through an index.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07

Written by hand and frozen, like the ones before. `GET /api/contacts?q=` matches a prefix of
the lower-cased external id or email. On PostgreSQL the two indexes
use `text_pattern_ops`, so `LIKE 'prefix%'` is an index range whatever the database's collation.
SQLite (the embedded default, small workspaces) gets none: it cannot reflect an expression
index (the models declare these for PostgreSQL only), and it answers the email prefix from
ix_contacts_email.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


INDEXES = ("external_id", "email")


def upgrade() -> None:
    """Create ix_contacts_external_id_lower and ix_contacts_email_lower (PostgreSQL)."""
    if op.get_context().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.create_index(
            f"ix_contacts_{name}_lower", "contacts", [sa.text(f"lower({name}) text_pattern_ops")]
        )


def downgrade() -> None:
    """Drop the two indexes (PostgreSQL)."""
    if op.get_context().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.drop_index(f"ix_contacts_{name}_lower", table_name="contacts")
