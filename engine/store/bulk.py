"""Driver-level batch writes for the worker's hot path: enrollment updates, ledger, journal.

SQLAlchemy Core spends most of a batch turning each row's values through its type processors;
these three statements run for every step, so they go to the driver directly with values already
in the driver's form. Callers pass tuples in the column order declared here, values converted
with `converters()`. The read side is unchanged: the models read these rows back as usual.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ARRAY, BigInteger, ColumnElement, String, any_, bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import InstrumentedAttribute

ENROLLMENT_COLUMNS = (
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
SEND_COLUMNS = (
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
JOURNAL_COLUMNS = (
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
_JSON = {"vars", "payload", "data", "signals"}
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


def one_list(
    column: ColumnElement[Any] | InstrumentedAttribute[Any],
    values: Sequence[int] | Sequence[str],
    dialect: str,
) -> ColumnElement[bool]:
    """`column IN values` with the whole list as one parameter, whatever its length.

    An IN list of 500 values is 500 parameters that SQLAlchemy builds, names and converts on
    every execution (a tenth of a batch's time on the gate's reads). PostgreSQL takes one array
    (``= ANY(%s)``); SQLite one JSON text, read with json_each, which still searches the
    column's index for each value. The statement text is the same for every batch.
    """
    items = list(values)
    text_values = bool(items) and isinstance(items[0], str)
    if dialect == "postgresql":
        kind = ARRAY(String()) if text_values else ARRAY(BigInteger())
        return column == any_(bindparam(None, items, type_=kind))
    listed = func.json_each(bindparam(None, _ENCODE(items), type_=String())).table_valued("value")
    return column.in_(select(listed.c.value).scalar_subquery())


class BulkWriter:
    """Builds the SQL once per dialect; each call is one executemany."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        mark = "?" if self.sqlite else "%s"

        def slot(column: str) -> str:
            return f"{mark}::jsonb" if column in _JSON and not self.sqlite else mark

        sets = ", ".join(f"{c} = {slot(c)}" for c in ENROLLMENT_COLUMNS)
        self._save = (
            f"UPDATE enrollments SET {sets}, lease_owner = NULL, lease_until = NULL "
            f"WHERE id = {mark} AND attempt = {mark}"
        )
        conflict = "ON CONFLICT (send_key) DO NOTHING"
        self._send = (
            f"INSERT INTO sends ({', '.join(SEND_COLUMNS)}) "
            f"VALUES ({', '.join(slot(c) for c in SEND_COLUMNS)}) {conflict}"
        )
        pressure = ("contact_id", "channel", "score", "state", "updated_at", "signals")
        self._pressure = (
            f"INSERT INTO pressure ({', '.join(pressure)}) "
            f"VALUES ({', '.join(slot(c) for c in pressure)}) "
            "ON CONFLICT (contact_id, channel) DO UPDATE SET score = excluded.score, "
            "state = excluded.state, updated_at = excluded.updated_at, signals = excluded.signals"
        )
        self._pressure_arrays = (
            f"INSERT INTO pressure ({', '.join(pressure)}) SELECT * FROM unnest("
            "%s::bigint[], %s::varchar[], %s::float8[], %s::varchar[], %s::timestamptz[], "
            "%s::jsonb[]) ON CONFLICT (contact_id, channel) DO UPDATE SET score = excluded.score, "
            "state = excluded.state, updated_at = excluded.updated_at, signals = excluded.signals"
        )
        self._journal = (
            f"INSERT INTO journal ({', '.join(JOURNAL_COLUMNS)}) "
            f"VALUES ({', '.join(slot(c) for c in JOURNAL_COLUMNS)})"
        )

    def upsert_pressure(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Barometer rows (contact_id, channel, score, state, updated_at, signals), converted."""
        if not rows:
            return
        if self.sqlite:
            conn.exec_driver_sql(self._pressure, list(rows))
            return
        # PostgreSQL: one statement over column arrays instead of one per row (an upsert per
        # row costs a round of index work each; unnest lets the server do them as one plan).
        columns = [list(column) for column in zip(*rows, strict=True)]
        conn.exec_driver_sql(self._pressure_arrays, tuple(columns))

    def converters(self) -> tuple[Callable[[datetime | None], Any], Callable[[Any], Any]]:
        """(instant, json): turn values into the driver's form. Use a fresh pair per batch: the
        instant converter remembers the instants it has seen (most are the batch's "now")."""
        return _memo_time(_sqlite_time if self.sqlite else _aware), _json

    def save_enrollments(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Fenced update; rows are converted values of ENROLLMENT_COLUMNS then (id, attempt).

        A row is written only if its attempt is still ours; returns the rows written.
        """
        if not rows:
            return 0
        return int(conn.exec_driver_sql(self._save, list(rows)).rowcount)

    def insert_sends(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Reserve sends (converted SEND_COLUMNS values); a key already there is left alone."""
        if rows:
            conn.exec_driver_sql(self._send, list(rows))

    def insert_journal(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Append journal rows (converted JOURNAL_COLUMNS values)."""
        if rows:
            conn.exec_driver_sql(self._journal, list(rows))
