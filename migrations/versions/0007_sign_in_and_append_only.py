"""Sign-in throttling shared by every process; the audit log and consent ledger append-only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Written by hand and frozen, like the ones before.

The triggers make the database itself refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on
`audit_log` and `consent_records`, whatever the code or a console session does. There is no
switch to turn them off at run time, on purpose. Erasing personal data from the ledger (a future
privacy erasure) will be a migration-controlled path: a migration that replaces these triggers by
ones allowing exactly that change (for example blanking the evidence columns of one contact's
records), never a setting regular code could flip. On SQLite, a later `batch_alter_table` on these
tables recreates them and drops their triggers: such a migration must create them again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("audit_log", "consent_records")
PG_FUNCTION = "parcours_refuse_change"


def upgrade() -> None:
    """Create sign_in_throttle; add the append-only triggers."""
    op.create_table(
        "sign_in_throttle",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name="pk_sign_in_throttle"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()"
            )
        return
    for table in APPEND_ONLY:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )


def downgrade() -> None:
    """Drop the triggers and sign_in_throttle."""
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION {PG_FUNCTION}()")
    else:
        for table in APPEND_ONLY:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{action}")
    op.drop_table("sign_in_throttle")
