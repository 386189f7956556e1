"""KPI rollups: daily counters per scenario, step, channel and arm, kept up to date by the worker.

Two append-only sources feed `kpi_daily`, each read from its own cursor (`cursors` rows
`kpi:journal` and `kpi:events`), a batch at a time, in the transaction that adds the batch's
counts and moves the cursor (so each source row counts exactly once, whatever crashes):

- the journal: `entered` (a scenario's entries), `step` and `send` (a step's entries), `send`
  (a message reserved, on its channel, with the channel's cost per message), `cancelled` (a
  queued message the delivery loop withdrew: one send and its cost less), `converted` (a
  conversion, with its split arm and the goal event's value as revenue);
- the events that carry a `send_key`: `<channel>_delivered`, `email_opened`, `email_clicked`,
  `<channel>_bounced`, `<channel>_complained` and `unsubscribed`, attributed to the send's
  scenario, step and channel through the ledger.

Days are calendar days in the workspace zone. Rows at the scenario level have step '' and
channel ''; a step's entries have channel ''; message counters sit on (step, channel). `rebuild`
starts again from empty and gives the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from channels.registry import channel_info, channel_names
from engine.store.models import Cursor, Event, JournalEntry, KpiDaily, Send

JOURNAL_CURSOR = "kpi:journal"
EVENTS_CURSOR = "kpi:events"
BATCH = 5000
COUNTERS = (
    "entries", "sends", "delivered", "opens", "clicks", "bounces", "unsubscribes", "complaints",
    "conversions",
)  # fmt: skip
AMOUNTS = ("revenue", "cost")
JOURNAL_KINDS = ("entered", "step", "send", "cancelled", "converted")
_STATIC_EVENTS = {
    "email_opened": "opens",
    "email_clicked": "clicks",
    "unsubscribed": "unsubscribes",
}
_CHANNEL_EVENTS = {"delivered": "delivered", "bounced": "bounces", "complained": "complaints"}
_KEY_CHUNK = 500
kpi_table = cast(Table, KpiDaily.__table__)

Key = tuple[str, date, str, str, str]  # scenario, day, step, channel, arm


def event_metrics() -> dict[str, str]:
    """Event name → the counter it adds to."""
    names = dict(_STATIC_EVENTS)
    for channel in channel_names():
        for outcome, counter in _CHANNEL_EVENTS.items():
            names[f"{channel}_{outcome}"] = counter
    return names


def channel_cost(channel: str) -> float:
    """The channel's cost per message (channels.base facts); 0 for a channel no longer known."""
    try:
        return float(channel_info(channel).cost)
    except KeyError:
        return 0.0


@dataclass
class Deltas:
    """What one batch adds to the rollup rows."""

    rows: dict[Key, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, key: Key, counter: str, amount: float = 1) -> None:
        row = self.rows[key]
        row[counter] = row.get(counter, 0) + amount

    def records(self) -> list[dict[str, Any]]:
        out = []
        for (scenario, day, step, channel, arm), values in self.rows.items():
            record: dict[str, Any] = {"scenario_id": scenario, "day": day, "step_id": step,
                                      "channel": channel, "arm": arm}  # fmt: skip
            record.update({c: int(values.get(c, 0)) for c in COUNTERS})
            record.update({c: float(values.get(c, 0.0)) for c in AMOUNTS})
            out.append(record)
        return out


# ------------------------------------------------------------------ cursors


def _cursor(conn: Connection, name: str) -> int | None:
    """The cursor's value, locked until commit; None when another worker holds it."""
    stmt = select(Cursor.value).where(Cursor.name == name)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(Cursor).values(name=name, value=0).on_conflict_do_nothing())
        found = conn.execute(stmt.with_for_update(skip_locked=True)).first()
        return None if found is None else int(found.value)
    value = conn.execute(stmt).scalar()  # SQLite: BEGIN IMMEDIATE already serialises writers
    if value is None:
        conn.execute(insert(Cursor).values(name=name, value=0))
    return int(value or 0)


def _high_water(engine: Engine, table: Table) -> int | None:
    """The highest id below which every row of `table` is committed; None: writers are busy.

    On PostgreSQL ids are taken before commit, so a lower id may still be in flight: a brief
    SHARE lock waits for the writers of the moment (at most 200 ms) before reading the max.
    """
    with engine.connect() as conn, conn.begin() as trans:
        if conn.dialect.name == "postgresql":
            try:
                conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                conn.execute(text(f"LOCK TABLE {table.name} IN SHARE MODE"))
            except OperationalError:
                trans.rollback()
                return None
        return int(conn.execute(select(func.max(table.c.id))).scalar() or 0)


def _newest(engine: Engine) -> tuple[int, int, int, int]:
    """(journal max id, its cursor, events max id, its cursor): four index lookups."""
    with engine.connect() as conn:
        journal = conn.execute(select(func.max(JournalEntry.id))).scalar() or 0
        events = conn.execute(select(func.max(Event.id))).scalar() or 0
        cursors = dict(
            conn.execute(
                select(Cursor.name, Cursor.value).where(
                    Cursor.name.in_((JOURNAL_CURSOR, EVENTS_CURSOR))
                )
            ).all()
        )
    return (int(journal), int(cursors.get(JOURNAL_CURSOR, 0)), int(events),
            int(cursors.get(EVENTS_CURSOR, 0)))  # fmt: skip


# ------------------------------------------------------------------ the passes


def _day(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


def _journal_deltas(rows: Sequence[Any], zone: ZoneInfo) -> Deltas:
    deltas = Deltas()
    for r in rows:
        if not r.scenario_id:
            continue
        day = _day(r.at, zone)
        data = r.data if isinstance(r.data, Mapping) else {}
        step = r.step_id or ""
        if r.kind == "entered":
            deltas.add((r.scenario_id, day, "", "", ""), "entries")
        elif r.kind == "step":
            deltas.add((r.scenario_id, day, step, "", ""), "entries")
        elif r.kind in ("send", "cancelled"):
            channel = str(data.get("channel") or "webhook")
            sign = 1 if r.kind == "send" else -1
            if r.kind == "send":
                deltas.add((r.scenario_id, day, step, "", ""), "entries")
            deltas.add((r.scenario_id, day, step, channel, ""), "sends", sign)
            deltas.add(
                (r.scenario_id, day, step, channel, ""), "cost", sign * channel_cost(channel)
            )
        elif r.kind == "converted":
            key = (r.scenario_id, day, "", "", str(data.get("variant") or ""))
            deltas.add(key, "conversions")
            value = data.get("value")
            if isinstance(value, int | float) and not isinstance(value, bool):
                deltas.add(key, "revenue", float(value))
    return deltas


def _sends_by_key(conn: Connection, keys: Iterable[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    wanted = sorted(set(keys))
    for i in range(0, len(wanted), _KEY_CHUNK):
        chunk = wanted[i : i + _KEY_CHUNK]
        rows = conn.execute(
            select(Send.send_key, Send.scenario_id, Send.step_id, Send.channel).where(
                Send.send_key.in_(chunk)
            )
        ).all()
        found.update({r.send_key: r for r in rows})
    return found


def _event_deltas(conn: Connection, rows: Sequence[Any], zone: ZoneInfo) -> Deltas:
    metrics = event_metrics()
    keyed = [(r, (r.properties or {}).get("send_key")) for r in rows]
    sends = _sends_by_key(conn, [k for _, k in keyed if isinstance(k, str)])
    deltas = Deltas()
    for r, key in keyed:
        send = sends.get(key) if isinstance(key, str) else None
        if send is None:
            continue  # not about one of our messages (an unsubscribe from the API...)
        day = _day(r.occurred_at, zone)
        deltas.add((send.scenario_id, day, send.step_id, send.channel, ""), metrics[r.name])
    return deltas


def _upsert(conn: Connection, deltas: Deltas) -> None:
    records = deltas.records()
    if not records:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(kpi_table)
    added = {c: kpi_table.c[c] + stmt.excluded[c] for c in (*COUNTERS, *AMOUNTS)}
    keys = ["scenario_id", "day", "step_id", "channel", "arm"]
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=added), records)


def _advance(
    conn: Connection,
    cursor_name: str,
    upto: int,
    fetch: Callable[[int, int], Sequence[Any]],
    to_deltas: Callable[[Sequence[Any]], Deltas],
    now: datetime,
) -> int:
    """One batch of one source, in the caller's transaction; the source rows read."""
    after = _cursor(conn, cursor_name)
    if after is None or after >= upto:
        return 0
    rows = fetch(after, upto)
    _upsert(conn, to_deltas(rows))
    moved = rows[-1].id if len(rows) >= BATCH else upto
    conn.execute(
        update(Cursor).where(Cursor.name == cursor_name).values(value=moved, updated_at=now)
    )
    return len(rows) or 1


def _fetch_journal(conn: Connection) -> Callable[[int, int], Sequence[Any]]:
    j = JournalEntry
    columns = (j.id, j.at, j.kind, j.scenario_id, j.step_id, j.data)

    def fetch(after: int, upto: int) -> Sequence[Any]:
        return conn.execute(
            select(*columns)
            .where(j.id > after, j.id <= upto, j.kind.in_(JOURNAL_KINDS))
            .order_by(j.id)
            .limit(BATCH)
        ).all()

    return fetch


def _fetch_events(conn: Connection) -> Callable[[int, int], Sequence[Any]]:
    names = list(event_metrics())

    def fetch(after: int, upto: int) -> Sequence[Any]:
        return conn.execute(
            select(Event.id, Event.name, Event.properties, Event.occurred_at)
            .where(Event.id > after, Event.id <= upto, Event.name.in_(names))
            .order_by(Event.id)
            .limit(BATCH)
        ).all()

    return fetch


def _batch(
    conn: Connection, name: str, upto: int, tz: ZoneInfo, now: datetime, events: bool
) -> int:
    if events:
        return _advance(conn, name, upto, _fetch_events(conn),
                        lambda rows: _event_deltas(conn, rows, tz), now)  # fmt: skip
    return _advance(conn, name, upto, _fetch_journal(conn),
                    lambda rows: _journal_deltas(rows, tz), now)  # fmt: skip


def update_rollups(engine: Engine, zone: str, now: datetime, max_batches: int = 20) -> int:
    """Add what the journal and the events recorded since the cursors to `kpi_daily`.

    Idle, this is four index lookups. Returns the source rows read (0: nothing new, or another
    worker holds the cursors)."""
    journal_max, journal_at, events_max, events_at = _newest(engine)
    if journal_max <= journal_at and events_max <= events_at:
        return 0
    tz = ZoneInfo(zone)
    read = 0
    sources = (
        (JOURNAL_CURSOR, cast(Table, JournalEntry.__table__), journal_max > journal_at, False),
        (EVENTS_CURSOR, cast(Table, Event.__table__), events_max > events_at, True),
    )
    for name, table, behind, events in sources:
        if not behind:
            continue
        upto = _high_water(engine, table)
        if upto is None:
            continue  # writers busy: next pass
        for _ in range(max_batches):
            with engine.begin() as conn:
                done = _batch(conn, name, upto, tz, now, events)
            read += done
            if done < BATCH:
                break
    return read


def rebuild(engine: Engine, zone: str, now: datetime) -> int:
    """Recompute every rollup from the whole journal and events (from empty, cursors at 0)."""
    with engine.begin() as conn:
        for name in (JOURNAL_CURSOR, EVENTS_CURSOR):
            _cursor(conn, name)
            conn.execute(update(Cursor).where(Cursor.name == name).values(value=0, updated_at=now))
        conn.execute(delete(KpiDaily))
    total = 0
    while True:
        read = update_rollups(engine, zone, now, max_batches=1000)
        total += read
        if not read:
            return total
