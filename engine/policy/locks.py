"""The per-contact lock that serialises policy decisions: consent changes, the gate's checks and
the send ledger's reservations of one contact never interleave across workers."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

LOCK_SQL = text(
    "SELECT count(pg_advisory_xact_lock(id)) "
    "FROM (SELECT unnest(CAST(:ids AS bigint[])) AS id ORDER BY 1) AS locked"
)


def lock_contacts(conn: Connection, contact_ids: list[int]) -> None:
    """Serialise policy decisions per contact until commit, so two workers never both take the
    last slot. PostgreSQL: transaction-level advisory locks in id order (no deadlocks); SQLite:
    the write transaction (BEGIN IMMEDIATE) already excludes every other writer."""
    if conn.dialect.name == "postgresql" and contact_ids:
        conn.execute(LOCK_SQL, {"ids": sorted(set(contact_ids))})
