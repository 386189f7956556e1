"""Driver-level batch writes for the worker's hot path: enrollment updates, ledger, journal.

SQLAlchemy Core spends most of a batch turning each row's values through its type processors;
these three statements run for every step, so they go to the driver directly with values already
in the driver's form. The read side is unchanged: the models read these rows back as usual (a
round-trip test pins that the two agree on both databases).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

_ENROLLMENT_COLUMNS = (
    "status",
    "step_id",
    "step_entered_at",
    "deadline",
    "due_at",
    "waiting_for",
    "visits",
    "vars",
    "ended_at",
    "end_reason",
)
_SEND_COLUMNS = (
    "send_key",
    "enrollment_id",
    "contact_id",
    "scenario_id",
    "version_id",
    "step_id",
    "channel",
    "topic",
    "kind",
    "status",
    "payload",
    "provider_id",
    "attempts",
    "created_at",
    "sent_at",
)
_JOURNAL_COLUMNS = (
    "at",
    "kind",
    "enrollment_id",
    "contact_id",
    "scenario_id",
    "version_id",
    "step_id",
    "reason",
    "data",
)
_JSON = {"vars", "payload", "data"}
_TIMES = {"step_entered_at", "deadline", "due_at", "ended_at", "created_at", "sent_at", "at"}


def _sqlite_time(value: datetime | None) -> str | None:
    # The same text SQLAlchemy's SQLite DATETIME writes, in UTC, so string order is time order.
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} refused: pass an aware one")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()} refused: pass an aware one")
    return value


def _memo_time(convert: Callable[[datetime | None], Any]) -> Callable[[datetime | None], Any]:
    # Most timestamps of a batch are the same instant ("now"): convert each distinct one once.
    cache: dict[datetime | None, Any] = {}

    def converted(value: datetime | None) -> Any:
        try:
            return cache[value]
        except KeyError:
            result = cache[value] = convert(value)
            return result

    return converted


_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return "{}" if not value and isinstance(value, dict) else _ENCODE(value)


class BulkWriter:
    """Builds the SQL once per dialect; each call is one executemany."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        mark = "?" if self.sqlite else "%s"

        def slot(column: str) -> str:
            return f"{mark}::jsonb" if column in _JSON and not self.sqlite else mark

        sets = ", ".join(f"{c} = {slot(c)}" for c in _ENROLLMENT_COLUMNS)
        self._save = (
            f"UPDATE enrollments SET {sets}, lease_owner = NULL, lease_until = NULL "
            f"WHERE id = {mark} AND attempt = {mark}"
        )
        conflict = "ON CONFLICT (send_key) DO NOTHING"
        self._send = (
            f"INSERT INTO sends ({', '.join(_SEND_COLUMNS)}) "
            f"VALUES ({', '.join(slot(c) for c in _SEND_COLUMNS)}) {conflict}"
        )
        self._journal = (
            f"INSERT INTO journal ({', '.join(_JOURNAL_COLUMNS)}) "
            f"VALUES ({', '.join(slot(c) for c in _JOURNAL_COLUMNS)})"
        )

    def _converters(self, columns: Sequence[str]) -> list[Any]:
        """One converter per column (None: the value goes as it is)."""
        out: list[Any] = []
        for c in columns:
            if c in _JSON:
                out.append(_json)
            elif c in _TIMES:
                out.append(_memo_time(_sqlite_time if self.sqlite else _aware))
            else:
                out.append(None)
        return out

    def _rows(
        self, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        pairs = list(zip(columns, self._converters(columns), strict=True))
        return [tuple(row[c] if f is None else f(row[c]) for c, f in pairs) for row in rows]

    def save_enrollments(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Fenced update: a row is written only if its `attempt` is still ours. Rows written."""
        if not rows:
            return 0
        params = [
            (*values, row["id"], row["attempt"])
            for values, row in zip(self._rows(_ENROLLMENT_COLUMNS, rows), rows, strict=True)
        ]
        result = conn.exec_driver_sql(self._save, params)
        return int(result.rowcount)

    def insert_sends(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Reserve sends in the ledger; a send key already there is left alone (never twice)."""
        if rows:
            conn.exec_driver_sql(self._send, self._rows(_SEND_COLUMNS, rows))

    def insert_journal(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            conn.exec_driver_sql(self._journal, self._rows(_JOURNAL_COLUMNS, rows))
