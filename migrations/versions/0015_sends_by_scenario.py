"""Sends by scenario and time: the program budgets' spend read, per-scenario reports.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

Written by hand and frozen, like the ones before. The gate reads each budgeted program's sends
since the last full hour in every batch (engine.policy.programs.program_spend); without this
index that read scans the ledger.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ix_sends_scenario_id_created_at."""
    op.create_index("ix_sends_scenario_id_created_at", "sends", ["scenario_id", "created_at"])


def downgrade() -> None:
    """Drop ix_sends_scenario_id_created_at."""
    op.drop_index("ix_sends_scenario_id_created_at", table_name="sends")
