"""KPI reports from the daily rollups against a full scan of the journal, in the same run.

One year of rollup rows for a base of `--contacts` contacts: `--scenarios` journeys, each with
`--steps` steps on two channels, every day (the rows such a base produces whatever its size:
their number grows with journeys x steps x channels x days, not with contacts), and the journal
rows they summarise (`--journal`, spread over the same year, journeys and contacts; a full
year of a million contacts is tens of millions of rows: pass that if you have the time, the
ratio only grows with it). Both are generated set-based in the database (generate_series on
PostgreSQL, a recursive CTE on SQLite).

Timed, best of 3: `report()` for the whole year by day and for a three-journey program by
scenario, against the aggregate a report without rollups has to run (journal rows counted per
scenario, kind and day, the whole table read). Then the worker's incremental pass catching up
on journal rows (rows per second).

    python bench/report.py [--contacts 1000000] [--journal 5000000] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.steps import fresh_database
from engine.insights import rollups
from engine.insights.kpis import report
from engine.store.db import make_engine, upgrade

START = date(2025, 1, 1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
ZONE = "Europe/Paris"
KINDS = "('entered', 'step', 'send', 'step', 'send', 'converted')"

SQLITE_ROLLUPS = """
WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 364),
s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < :scenarios - 1),
st(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM st WHERE n < :steps),
ch(name) AS (VALUES ('email'), ('sms'))
INSERT INTO kpi_daily (scenario_id, day, step_id, channel, arm, entries, sends, delivered, opens,
  clicks, bounces, unsubscribes, complaints, conversions, revenue, cost)
SELECT 'sc-' || s.n, date('2025-01-01', '+' || d.n || ' days'),
  CASE WHEN st.n = 0 THEN '' ELSE 'step-' || st.n END,
  CASE WHEN st.n = 0 THEN '' ELSE ch.name END, '',
  (d.n * 7 + s.n) % 500, (d.n + st.n) % 300, (d.n + st.n) % 280, (d.n + s.n) % 120, d.n % 30,
  d.n % 5, d.n % 3, 0, CASE WHEN st.n = 0 THEN (d.n + s.n) % 40 ELSE 0 END,
  CASE WHEN st.n = 0 THEN ((d.n + s.n) % 40) * 55.0 ELSE 0 END,
  CASE WHEN st.n = 0 THEN 0 ELSE ((d.n + st.n) % 300) * 0.003 END
FROM d, s, st, ch WHERE st.n > 0 OR ch.name = 'email'
"""
PG_ROLLUPS = """
INSERT INTO kpi_daily (scenario_id, day, step_id, channel, arm, entries, sends, delivered, opens,
  clicks, bounces, unsubscribes, complaints, conversions, revenue, cost)
SELECT 'sc-' || s, DATE '2025-01-01' + d,
  CASE WHEN st = 0 THEN '' ELSE 'step-' || st END, CASE WHEN st = 0 THEN '' ELSE ch END, '',
  (d * 7 + s) % 500, (d + st) % 300, (d + st) % 280, (d + s) % 120, d % 30, d % 5, d % 3, 0,
  CASE WHEN st = 0 THEN (d + s) % 40 ELSE 0 END,
  CASE WHEN st = 0 THEN ((d + s) % 40) * 55.0 ELSE 0 END,
  CASE WHEN st = 0 THEN 0 ELSE ((d + st) % 300) * 0.003 END
FROM generate_series(0, 364) d, generate_series(0, :scenarios - 1) s,
  generate_series(0, :steps) st, unnest(ARRAY['email', 'sms']) ch
WHERE st > 0 OR ch = 'email'
"""
SQLITE_JOURNAL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)
INSERT INTO journal (at, kind, enrollment_id, contact_id, scenario_id, version_id, step_id,
  reason, data)
SELECT strftime('%Y-%m-%d %H:%M:%f', '2025-01-01', '+' || (i * 31536 / :rows * 1000 + i % 1000)
    || ' seconds'),
  json_extract('["entered", "step", "send", "step", "send", "converted"]', '$[' || (i % 6) || ']'),
  i, i % :contacts + 1, 'sc-' || (i % :scenarios), 1, 'step-' || (i % :steps + 1), NULL,
  CASE WHEN i % 6 IN (2, 4) THEN '{"channel": "email"}' ELSE NULL END
FROM n
"""
PG_JOURNAL = f"""
INSERT INTO journal (at, kind, enrollment_id, contact_id, scenario_id, version_id, step_id,
  reason, data)
SELECT TIMESTAMPTZ '2025-01-01 00:00:00+00' + (i::float8 * 31536000 / :rows) * INTERVAL '1 second',
  (ARRAY{KINDS.replace("(", "[").replace(")", "]")})[i % 6 + 1],
  i, i % :contacts + 1, 'sc-' || (i % :scenarios), 1, 'step-' || (i % :steps + 1), NULL,
  CASE WHEN i % 6 IN (2, 4) THEN '{{"channel": "email"}}'::jsonb ELSE NULL END
FROM generate_series(1, :rows) i
"""
SCAN = {
    "sqlite": "SELECT scenario_id, substr(at, 1, 10) AS day, kind, count(*) FROM journal "
    "GROUP BY scenario_id, day, kind",
    "postgresql": "SELECT scenario_id, (at AT TIME ZONE 'Europe/Paris')::date AS day, kind, "
    "count(*) FROM journal GROUP BY scenario_id, day, kind",
}


def load(url: str, kind: str, params: dict[str, int]) -> float:
    started = time.perf_counter()
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        for statement in (SQLITE_ROLLUPS, SQLITE_JOURNAL):
            conn.execute(statement, params)
        conn.commit()
        conn.close()
    else:
        engine = make_engine(url)
        with engine.begin() as c:
            for statement in (PG_ROLLUPS, PG_JOURNAL):
                c.execute(text(statement), params)
            c.execute(text("ANALYZE kpi_daily"))
            c.execute(text("ANALYZE journal"))
        engine.dispose()
    return time.perf_counter() - started


def best_of(n: int, run: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(n):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def measure(url: str, kind: str) -> dict[str, float]:
    engine = make_engine(url)
    found: dict[str, float] = {}
    with engine.connect() as conn:
        found["rollup_rows"] = conn.execute(text("SELECT count(*) FROM kpi_daily")).scalar() or 0
        found["journal_rows"] = conn.execute(text("SELECT count(*) FROM journal")).scalar() or 0
        found["year"], year = best_of(3, lambda: report(conn, by="day"))
        assert len(year.rows) == 365, len(year.rows)
        program = ["sc-0", "sc-1", "sc-2"]
        found["program"], _ = best_of(3, lambda: report(conn, scenarios=program, by="scenario"))
        found["scan"], _ = best_of(3, lambda: conn.execute(text(SCAN[kind])).all())
    # the worker's incremental pass on the same journal, from its cursor at 0
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM kpi_daily"))
    started = time.perf_counter()
    read = rollups.update_rollups(engine, ZONE, NOW, max_batches=100)
    found["rollup_rate"] = read / (time.perf_counter() - started)
    engine.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--journal", type=int, default=5_000_000)
    parser.add_argument("--scenarios", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--db", default="both", choices=("postgresql", "sqlite", "both"))
    args = parser.parse_args()
    kinds = ("postgresql", "sqlite") if args.db == "both" else (args.db,)
    params = {"contacts": args.contacts, "rows": args.journal, "scenarios": args.scenarios,
              "steps": args.steps}  # fmt: skip
    print(f"one year, {args.scenarios} journeys x {args.steps} steps x 2 channels, "
          f"{args.contacts:,} contacts")  # fmt: skip
    print(f"{'database':<12}{'load s':>8}{'rollups':>9}{'journal':>11}{'year s':>8}"
          f"{'program s':>10}{'scan s':>8}{'scan/year':>10}{'rollup rows/s':>14}")  # fmt: skip
    var = Path(__file__).resolve().parent.parent / "var"
    var.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-report-", dir=var) as tmp:
        for kind in kinds:
            url, drop = fresh_database(kind, Path(tmp))
            try:
                upgrade(url)
                loaded = load(url, kind, params)
                r = measure(url, kind)
            finally:
                drop()
            print(
                f"{kind:<12}{loaded:>8.1f}{r['rollup_rows']:>9,.0f}{r['journal_rows']:>11,.0f}"
                f"{r['year']:>8.3f}{r['program']:>10.3f}{r['scan']:>8.2f}"
                f"{r['scan'] / r['year']:>10.0f}{r['rollup_rate']:>14,.0f}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
