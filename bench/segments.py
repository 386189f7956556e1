"""Segment rebuild at scale: the compiled condition next to the same query written by hand.

Loads N contacts and M events set-based (generate_series on PostgreSQL, a recursive CTE on
SQLite; the event index is built after the load), then for the 3-clause segment

    country = FR  AND  at least one order_placed in the last 90 days  AND  NOT tag unsubscribed

times, in the same run and on the same data:
  raw      — the query written by hand in the database's own SQL (best of 3);
  compiled — the query engine.audience.segment_sql compiles from the condition (best of 3);
  rebuild  — engine.audience.membership.rebuild from empty (every member enters, with history),
             then again after 1% of the contacts changed country (the difference only);
  refresh  — events arriving at 500 a second: each second's 500 order_placed events are
             inserted and refresh_contacts recomputes the segment for the contacts they touched;
  worker   — the same segment as a file of a workspace, kept by engine.worker.runner.Worker: its
             first pass builds it, then a feeder thread records 500 events a second through
             engine.audience.ingest.record_events while the worker runs passes (event pass,
             change feed, refresh, clock, triggers); reported: the events per second processed
             from the first arrival until nothing waits, the catch-up after the last arrival,
             and the most events and changes ever waiting after a pass.
The ratio compiled/raw is the figure to watch (target: at most 1.5).

    python bench/segments.py [--contacts 1000000] [--events 10000000] [--db postgresql|sqlite|both]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Connection, func, select, text

from bench.steps import fresh_database
from engine.audience.ingest import record_events
from engine.audience.membership import rebuild, refresh_contacts
from engine.audience.segment_sql import compile_condition
from engine.config import load_settings
from engine.spec.conditions import All, AttributeTest, EventTest, Not, TagTest
from engine.store.db import make_engine, upgrade
from engine.worker.runner import Worker

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=90)
SEGMENT = All(
    (
        AttributeTest("country", "eq", "FR"),
        EventTest("order_placed", within=WINDOW),
        Not(TagTest("unsubscribed")),
    )
)
RATE = 500  # events per second arriving
SECONDS = 20  # seconds of arrivals refreshed
SEGMENT_FILE = """\
format_version: 1
id: bench
name: Bench
condition:
  all:
    - {attribute: country, op: eq, value: FR}
    - {event: order_placed, within: 90d}
    - not: {tag: unsubscribed}
"""

# Countries 1 in 5 FR, one contact in 10 unsubscribed, events over the past year: 20% orders.
PG_LOAD = [
    "SET session_replication_role = replica",  # no per-row foreign key checks while loading
    "SELECT setseed(0.42)",
    "DROP INDEX ix_events_contact_id_name_occurred_at",
    """INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out,
                             created_at, updated_at)
       SELECT g, 'c' || g,
              jsonb_build_object('country', (ARRAY['BE','FR','DE','ES','IT'])[1 + g % 5],
                                 'age', g % 80),
              CASE WHEN g % 10 = 0 THEN '["unsubscribed"]'::jsonb ELSE '["news"]'::jsonb END,
              0, false, :now, :now
       FROM generate_series(1, :contacts) AS g""",
    "SELECT setval(pg_get_serial_sequence('contacts', 'id'), :contacts)",
    """INSERT INTO events (contact_id, name, properties, occurred_at, received_at)
       SELECT 1 + floor(random() * :contacts)::bigint,
              CASE WHEN r < 0.2 THEN 'order_placed' WHEN r < 0.8 THEN 'page_viewed'
                   ELSE 'email_opened' END,
              '{"total": 20}'::jsonb,
              CAST(:now AS timestamptz) - random() * interval '365 days', :now
       FROM (SELECT random() AS r FROM generate_series(1, :events)) AS g""",
    "CREATE INDEX ix_events_contact_id_name_occurred_at ON events (contact_id, name, occurred_at)",
    "SET session_replication_role = DEFAULT",
    "ANALYZE",
]
SQLITE_LOAD = [
    "DROP INDEX ix_events_contact_id_name_occurred_at",
    """WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :contacts)
       INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out,
                             created_at, updated_at)
       SELECT i, 'c' || i,
              json_object('country', CASE i % 5 WHEN 0 THEN 'BE' WHEN 1 THEN 'FR'
                          WHEN 2 THEN 'DE' WHEN 3 THEN 'ES' ELSE 'IT' END, 'age', i % 80),
              CASE WHEN i % 10 = 0 THEN '["unsubscribed"]' ELSE '["news"]' END,
              0, 0, :stamp, :stamp
       FROM g""",
    """WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :events)
       INSERT INTO events (contact_id, name, properties, occurred_at, received_at)
       SELECT 1 + abs(random()) % :contacts,
              CASE WHEN r < 20 THEN 'order_placed' WHEN r < 80 THEN 'page_viewed'
                   ELSE 'email_opened' END,
              '{"total": 20}',
              strftime('%Y-%m-%d %H:%M:%S', :stamp, '-' || (abs(random()) % 31536000) ||
                       ' seconds') || '.000000',
              :stamp
       FROM (SELECT abs(random()) % 100 AS r FROM g)""",
    "CREATE INDEX ix_events_contact_id_name_occurred_at ON events (contact_id, name, occurred_at)",
    "ANALYZE",
]

RAW = {
    "postgresql": """
        SELECT c.id FROM contacts c
        WHERE c.attributes ->> 'country' = 'FR'
          AND EXISTS (SELECT 1 FROM events e
                      WHERE e.contact_id = c.id AND e.name = 'order_placed'
                        AND e.occurred_at >= :start AND e.occurred_at <= :now)
          AND NOT c.tags @> '["unsubscribed"]'""",
    "sqlite": """
        SELECT c.id FROM contacts c
        WHERE json_extract(c.attributes, '$.country') = 'FR'
          AND EXISTS (SELECT 1 FROM events e
                      WHERE e.contact_id = c.id AND e.name = 'order_placed'
                        AND e.occurred_at >= :start AND e.occurred_at <= :now)
          AND NOT EXISTS (SELECT 1 FROM json_each(c.tags) WHERE value = 'unsubscribed')""",
}


def load(url: str, kind: str, contacts: int, events: int) -> float:
    started = time.perf_counter()
    params = {"contacts": contacts, "events": events, "now": NOW}
    if kind == "sqlite":
        # Driver level, without the engine's foreign_keys pragma: one big transaction.
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        stamp = NOW.strftime("%Y-%m-%d %H:%M:%S.%f")
        for statement in SQLITE_LOAD:
            conn.execute(statement, {**params, "stamp": stamp, "now": stamp})
        conn.commit()
        conn.close()
    else:
        engine = make_engine(url)
        with engine.begin() as c:
            for statement in PG_LOAD:
                c.execute(text(statement), params)
        engine.dispose()
    return time.perf_counter() - started


def best_of(n: int, run: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(n):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def counted(conn: Connection, query: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def measure(url: str, kind: str) -> dict[str, Any]:
    engine = make_engine(url)
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        start, now = NOW - WINDOW, NOW
        if kind == "sqlite":  # timestamps are stored as text there
            start, now = (t.strftime("%Y-%m-%d %H:%M:%S.%f") for t in (NOW - WINDOW, NOW))
        raw = text(f"SELECT count(*) FROM ({RAW[kind]}) AS q").bindparams(start=start, now=now)
        compiled = compile_condition(SEGMENT, NOW, dialect=kind)
        by_hand, ours = [], []
        for _ in range(3):  # alternate, so that caches warm both alike
            t, n_raw = best_of(1, lambda: conn.execute(raw).scalar_one())
            by_hand.append(t)
            t, n_compiled = best_of(1, lambda: counted(conn, compiled))
            ours.append(t)
        assert n_raw == n_compiled, (n_raw, n_compiled)
        out.update(raw=min(by_hand), compiled=min(ours), members=n_compiled)
        conn.commit()
        with conn.begin():
            out["rebuild"], changes = best_of(1, lambda: rebuild(conn, "bench", SEGMENT, NOW))
        out["entered"] = changes.entered
        with conn.begin():  # 1% of the contacts move to another country
            conn.execute(
                text(
                    "UPDATE contacts SET attributes = "
                    + (
                        "jsonb_set(attributes, '{country}', '\"BE\"')"
                        if kind == "postgresql"
                        else "json_set(attributes, '$.country', 'BE')"
                    )
                    + " WHERE id % 100 = 1"
                )
            )
        with conn.begin():
            out["again"], changes = best_of(1, lambda: rebuild(conn, "bench", SEGMENT, NOW))
        out["changed"] = changes.entered + changes.exited
        out["refresh"] = refresh_rate(conn, kind)
    engine.dispose()
    return out


def refresh_rate(conn: Connection, kind: str) -> float:
    """Events per second the insert + refresh of each second's arrivals sustains."""
    total = conn.execute(text("SELECT max(id) FROM contacts")).scalar_one()
    conn.commit()
    step = max(1, total // (RATE * SECONDS))
    started = time.perf_counter()
    for second in range(SECONDS):
        ids = [1 + ((second * RATE + i) * step) % total for i in range(RATE)]
        at = NOW + timedelta(seconds=second)
        with conn.begin():
            conn.execute(
                text(
                    "INSERT INTO events (contact_id, name, properties, occurred_at, received_at)"
                    " VALUES (:cid, 'order_placed', '{}', :at, :at)"
                ),
                [
                    {
                        "cid": cid,
                        "at": at if kind == "postgresql" else at.strftime("%Y-%m-%d %H:%M:%S.%f"),
                    }
                    for cid in ids
                ],
            )
            refresh_contacts(conn, "bench", SEGMENT, ids, at)
    return RATE * SECONDS / (time.perf_counter() - started)


def worker_rate(url: str, kind: str, tmp: Path) -> dict[str, float]:
    """The worker's own path at RATE events a second for SECONDS seconds (module docstring)."""
    folder = tmp / f"workspace-{kind}" / "segments"
    folder.mkdir(parents=True)
    (folder / "bench.yaml").write_text(SEGMENT_FILE)
    engine = make_engine(url)
    worker = Worker(engine, load_settings(env={}, scenarios_dir=folder.parent))
    started = time.perf_counter()
    worker.run_once(NOW)
    out: dict[str, float] = {"build": time.perf_counter() - started}
    with engine.connect() as conn:
        total = int(conn.execute(text("SELECT max(id) FROM contacts")).scalar_one())
    step = max(1, total // (RATE * SECONDS)) + 7  # other contacts than refresh_rate's
    t0 = time.perf_counter()

    def feed() -> None:
        for second in range(SECONDS):
            at = NOW + timedelta(seconds=second + 1)
            rows = [
                {"contact": f"c{1 + ((second * RATE + i) * step) % total}", "name": "order_placed",
                 "properties": {}, "occurred_at": at, "event_key": None}
                for i in range(RATE)
            ]  # fmt: skip
            with engine.begin() as conn:
                record_events(conn, rows, at)
            time.sleep(max(0.0, t0 + second + 1 - time.perf_counter()))

    feeder = threading.Thread(target=feed)
    feeder.start()
    backlog = waiting = 0
    while True:
        now = NOW + timedelta(seconds=1 + time.perf_counter() - t0)
        report = worker.run_once(now)
        with engine.connect() as conn:
            waiting = int(
                conn.execute(
                    text(
                        "SELECT (SELECT count(*) FROM event_inbox)"
                        " + (SELECT count(*) FROM contact_changes)"
                    )
                ).scalar_one()
            )
        backlog = max(backlog, waiting)
        if not feeder.is_alive() and not waiting:
            break
        if not report.triggers.get("events"):
            time.sleep(0.02)
    feeder.join()
    elapsed = time.perf_counter() - t0
    engine.dispose()
    out.update(rate=RATE * SECONDS / elapsed, catch_up=max(0.0, elapsed - SECONDS), backlog=backlog)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--db", default="both", choices=("postgresql", "sqlite", "both"))
    args = parser.parse_args()
    kinds = ("postgresql", "sqlite") if args.db == "both" else (args.db,)
    print(f"{args.contacts} contacts, {args.events} events; segment: country = FR and an")
    print("order_placed in the last 90 days and not tagged unsubscribed")
    header = f"{'database':<12}{'load s':>8}{'members':>9}{'raw s':>8}{'compiled s':>11}"
    print(header + f"{'ratio':>7}{'rebuild s':>10}{'again s':>9}{'refresh ev/s':>13}")
    results: list[tuple[str, dict[str, float]]] = []
    var = Path(__file__).resolve().parent.parent / "var"
    var.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-segments-", dir=var) as tmp:
        for kind in kinds:
            url, drop = fresh_database(kind, Path(tmp))
            try:
                upgrade(url)
                loaded = load(url, kind, args.contacts, args.events)
                r = measure(url, kind)
                results.append((kind, worker_rate(url, kind, Path(tmp))))
            finally:
                drop()
            print(
                f"{kind:<12}{loaded:>8.1f}{r['members']:>9}{r['raw']:>8.2f}{r['compiled']:>11.2f}"
                f"{r['compiled'] / r['raw']:>7.2f}{r['rebuild']:>10.2f}{r['again']:>9.2f}"
                f"{r['refresh']:>13.0f}"
            )
            sys.stdout.flush()
    print(f"\nthe worker's path, {RATE} events/s arriving for {SECONDS} s")
    print(f"{'database':<12}{'build s':>8}{'processed ev/s':>15}{'catch-up s':>11}{'backlog':>8}")
    for kind, w in results:
        print(
            f"{kind:<12}{w['build']:>8.2f}{w['rate']:>15.0f}{w['catch_up']:>11.2f}"
            f"{w['backlog']:>8.0f}"
        )


if __name__ == "__main__":
    main()
