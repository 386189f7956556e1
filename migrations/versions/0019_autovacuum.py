"""Autovacuum for the hot tables: vacuumed and analysed after a small share of their rows changed.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07

Written by hand and frozen, like the ones before. PostgreSQL's defaults vacuum a table once a
fifth of its rows are dead: a million enrollments would carry 200,000 dead row versions in the
due index the claim walks before autovacuum came. Each step rewrites its enrollment, each send
its contact's barometer, and the queues are emptied as fast as they fill; the ledger, journal
and events grow by inserts, which PostgreSQL also vacuums (to keep index-only scans) after a
share of new rows. SQLite has no autovacuum of this kind: nothing to do there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → storage parameters (see the README's "Growth" section for why each).
SETTINGS = {
    # rewritten at every step / every send: vacuum after 2 % of the rows changed
    "enrollments": {"autovacuum_vacuum_scale_factor": "0.02",
                    "autovacuum_analyze_scale_factor": "0.02"},
    "pressure": {"autovacuum_vacuum_scale_factor": "0.02"},
    "consent_states": {"autovacuum_vacuum_scale_factor": "0.05"},
    # queues: emptied as they fill, so a count of dead rows, not a share of live ones
    "event_inbox": {"autovacuum_vacuum_scale_factor": "0", "autovacuum_vacuum_threshold": "5000"},
    "contact_changes": {"autovacuum_vacuum_scale_factor": "0",
                        "autovacuum_vacuum_threshold": "5000"},
    "segment_due": {"autovacuum_vacuum_scale_factor": "0", "autovacuum_vacuum_threshold": "5000"},
    # append-mostly: the send status changes once or twice; inserts keep the visibility map
    "sends": {"autovacuum_vacuum_scale_factor": "0.05",
              "autovacuum_vacuum_insert_scale_factor": "0.05"},
    "journal": {"autovacuum_vacuum_insert_scale_factor": "0.05"},
    "events": {"autovacuum_vacuum_insert_scale_factor": "0.05"},
}  # fmt: skip


def upgrade() -> None:
    """Set the storage parameters (PostgreSQL)."""
    if op.get_context().dialect.name != "postgresql":
        return
    for table, settings in SETTINGS.items():
        given = ", ".join(f"{name} = {value}" for name, value in settings.items())
        op.execute(f"ALTER TABLE {table} SET ({given})")


def downgrade() -> None:
    """Back to the server's defaults (PostgreSQL)."""
    if op.get_context().dialect.name != "postgresql":
        return
    for table, settings in SETTINGS.items():
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(settings)})")
