"""Pressure health at scale: `engine.policy.health.health` over a year of sends and events.

Loads N contacts, S sends and E events spread over the past 365 days (set-based: generate_series
on PostgreSQL, a recursive CTE on SQLite; indexes built after the load), a barometer row per
contact (overall and email), then times, in the same run and on the same data (best of 3):

  scan      — the baseline: `SELECT name, count(*) FROM events GROUP BY name` (every event
              read once, what counting without the window and its index costs);
  health    — health() over the default 7 + 28 days: sends and events grouped by hour and
              channel, the over-pressured share decayed in SQL;
  filtered  — health(scenarios=[one of 5]): events joined to their sends by send key;
  no index  — health() again without ix_events_name_occurred_at (migration 0014);
  snapshot  — record_health_day, the worker's hourly count of over-pressured contacts.

The ratio health/scan is the figure to watch: about one read of every event for the whole
health of the base; `no index` shows what migration 0014's index saves.

    python bench/health.py [--contacts 200000] [--sends 2000000] [--events 4000000]
                           [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.steps import fresh_database
from engine.policy.health import health, record_health_day
from engine.policy.model import Policy
from engine.store.db import make_engine, upgrade

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SCAN = "SELECT name, count(*) FROM events GROUP BY name"  # every event read once
NAMES = (  # event name by decile: 40% noise, then opens, clicks, unsubscribes, bounces
    "page_viewed", "page_viewed", "order_placed", "cart_abandoned", "email_opened",
    "email_opened", "email_opened", "email_clicked", "unsubscribed", "email_bounced",
)  # fmt: skip

PG_LOAD = [
    "SET session_replication_role = replica",
    "SELECT setseed(0.42)",
    "DROP INDEX ix_events_contact_id_name_occurred_at",
    "DROP INDEX ix_events_name_occurred_at",
    "DROP INDEX ix_sends_channel_created_at",
    """INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out, created_at,
                             updated_at, anonymous)
       SELECT g, 'c' || g, '{}', '[]', 0, false, :now, :now, false
       FROM generate_series(1, :contacts) AS g""",
    """INSERT INTO sends (send_key, contact_id, scenario_id, step_id, channel, kind, status,
                          payload, attempts, created_at)
       SELECT 'k' || g, 1 + g % :contacts, 's' || (g % 5), 'offer',
              CASE WHEN g % 4 = 0 THEN 'sms' ELSE 'email' END, 'marketing', 'sent', '{}', 1,
              CAST(:now AS timestamptz) - random() * interval '365 days'
       FROM generate_series(1, :sends) AS g""",
    """INSERT INTO events (contact_id, name, properties, occurred_at, received_at)
       SELECT 1 + g % :contacts, (ARRAY[:names])[1 + g % 10],
              jsonb_build_object('channel', 'email', 'send_key', 'k' || (1 + g % :sends)),
              CAST(:now AS timestamptz) - random() * interval '365 days', :now
       FROM generate_series(1, :events) AS g""",
    """INSERT INTO pressure (contact_id, channel, score, state, updated_at, signals)
       SELECT g, c, random() * 8, 'equilibrium',
              CAST(:now AS timestamptz) - random() * interval '30 days', '[]'
       FROM generate_series(1, :contacts) AS g, (VALUES ('*'), ('email')) AS v(c)""",
    "CREATE INDEX ix_events_contact_id_name_occurred_at ON events (contact_id, name, occurred_at)",
    "CREATE INDEX ix_events_name_occurred_at ON events (name, occurred_at)",
    "CREATE INDEX ix_sends_channel_created_at ON sends (channel, created_at)",
    "SET session_replication_role = DEFAULT",
]
_STAMP = "strftime('%Y-%m-%d %H:%M:%S', :stamp, '-' || (abs(random()) % 31536000) || ' seconds')"
SQLITE_LOAD = [
    "DROP INDEX ix_events_contact_id_name_occurred_at",
    "DROP INDEX ix_events_name_occurred_at",
    "DROP INDEX ix_sends_channel_created_at",
    """WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :contacts)
       INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out, created_at,
                             updated_at, anonymous)
       SELECT i, 'c' || i, '{}', '[]', 0, 0, :stamp, :stamp, 0 FROM g""",
    f"""WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :sends)
       INSERT INTO sends (send_key, contact_id, scenario_id, step_id, channel, kind, status,
                          payload, attempts, created_at)
       SELECT 'k' || i, 1 + i % :contacts, 's' || (i % 5), 'offer',
              CASE WHEN i % 4 = 0 THEN 'sms' ELSE 'email' END, 'marketing', 'sent', '{{}}', 1,
              {_STAMP} || '.000000'
       FROM g""",
    f"""WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :events)
       INSERT INTO events (contact_id, name, properties, occurred_at, received_at)
       SELECT 1 + i % :contacts, json_extract(:names_json, '$[' || (i % 10) || ']'),
              json_object('channel', 'email', 'send_key', 'k' || (1 + i % :sends)),
              {_STAMP} || '.000000', :stamp
       FROM g""",
    """WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < :contacts)
       INSERT INTO pressure (contact_id, channel, score, state, updated_at, signals)
       SELECT i, c.c, (abs(random()) % 8000) / 1000.0, 'equilibrium',
              strftime('%Y-%m-%d %H:%M:%S', :stamp, '-' || (abs(random()) % 2592000) ||
                       ' seconds') || '.000000', '[]'
       FROM g, (SELECT '*' AS c UNION ALL SELECT 'email') AS c""",
    "CREATE INDEX ix_events_contact_id_name_occurred_at ON events (contact_id, name, occurred_at)",
    "CREATE INDEX ix_events_name_occurred_at ON events (name, occurred_at)",
    "CREATE INDEX ix_sends_channel_created_at ON sends (channel, created_at)",
    "ANALYZE",
]


def best(fn: Callable[[], Any], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def load(engine: Any, kind: str, args: argparse.Namespace) -> float:
    import json

    start = time.perf_counter()
    params = {"contacts": args.contacts, "sends": args.sends, "events": args.events}
    with engine.begin() as conn:
        if kind == "postgresql":
            for sql in PG_LOAD:
                stmt = text(sql.replace(":names", ", ".join(f"'{n}'" for n in NAMES)))
                conn.execute(stmt, {**params, "now": NOW} if ":" in stmt.text else {})
        else:
            stamp = NOW.strftime("%Y-%m-%d %H:%M:%S")
            for sql in SQLITE_LOAD:
                conn.execute(text(sql), {**params, "stamp": stamp, "names_json": json.dumps(NAMES)})
    if kind == "postgresql":  # as autovacuum leaves a table: statistics and visibility map
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return time.perf_counter() - start


def run(kind: str, args: argparse.Namespace, tmp: Path) -> None:
    url, drop = fresh_database(kind, tmp)
    engine = make_engine(url)
    try:
        upgrade(engine)
        loaded = load(engine, kind, args)
        policy = Policy()
        with engine.connect() as conn:
            scan = best(lambda: conn.execute(text(SCAN)).all())
            result = health(conn, NOW, policy)
            full = best(lambda: health(conn, NOW, policy))
            one = best(lambda: health(conn, NOW, policy, scenarios=["s1"]))
        with engine.begin() as conn:
            snap = best(lambda: record_health_day(conn, NOW, policy.pressure, UTC))
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_events_name_occurred_at"))
            bare = best(lambda: health(conn, NOW, policy), 1)
        email = result.channels["email"]
        print(
            f"{kind:<10} load {loaded:6.1f} s | scan {scan:6.3f} s | health {full:6.3f} s "
            f"({full / scan:4.2f} x scan) | filtered {one:6.3f} s | no index {bare:6.3f} s "
            f"({bare / full:4.1f} x) | snapshot {snap:6.3f} s | email sends recent "
            f"{email.recent['sends']}, open rate {email.signals['open_rate'].value:.3f}"
        )
    finally:
        engine.dispose()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--sends", type=int, default=2_000_000)
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"{args.contacts} contacts, {args.sends} sends, {args.events} events over 365 days")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            run(kind, args, Path(tmp))


if __name__ == "__main__":
    main()
