"""The audit log as the engine writes it: who (a designer user, an operator's OS account, an
API key), what, on which target. The designer's pages write the same table (designer.auth)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from engine.store.models import AuditEntry


def record(
    conn: Connection, actor: str, action: str, kind: str, target: str | None, **details: Any
) -> None:
    """Append one entry in the caller's transaction. Never personal data in `details`."""
    conn.execute(
        insert(AuditEntry).values(
            username=(actor or "system")[:64],
            action=action,
            target_kind=kind,
            target_id=target[:128] if target is not None else None,
            details=details,
        )
    )
