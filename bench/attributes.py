"""Full recompute of the computed attributes (RFM, lifecycle, customer value) over N contacts and
M events, next to the same statements written by hand in raw SQL, in the same run.

For each database, one population is generated in SQL (60% of the contacts buy; 70% of the
events are purchases spread over two years, the rest page views), then:
  engine — engine.audience.attributes.recompute (SQLAlchemy Core, the worker's daily job);
  raw    — the same DELETE, INSERT … SELECT, NTILE edges and UPDATE typed as SQL text;
each run twice, alternately, the best time kept. Then `refresh` — one purchasing contact
recomputed per transaction, as ingestion does — in contacts per second.

    python bench/attributes.py [--contacts 200000] [--events 1000000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from bench.steps import fresh_database
from engine.audience.attributes import recompute, refresh_contacts
from engine.spec.attributes import AttributesSpec, Lifecycle
from engine.spec.metric_names import RFM_CLASSES
from engine.store.db import make_engine, upgrade

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SPEC = AttributesSpec(lifecycle=Lifecycle(premium_value=1000))
SQLITE_SERIES = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "


def seed(engine: Engine, contacts: int, events: int) -> None:
    pg = engine.dialect.name == "postgresql"
    buyers = max(1, contacts * 6 // 10)
    with engine.begin() as conn:
        if pg:
            conn.execute(text(
                "INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out, "
                "created_at, updated_at) SELECT i, 'c' || i, '{}', '[]', 0, false, :now, :now "
                "FROM generate_series(1, :n) AS i"
            ), {"n": contacts, "now": NOW})  # fmt: skip
            conn.execute(text(
                "INSERT INTO events (contact_id, name, properties, occurred_at, received_at) "
                "SELECT 1 + (i::bigint * 7919) % :buyers, "
                "CASE WHEN i % 10 < 7 THEN 'order_placed' ELSE 'page_viewed' END, "
                "jsonb_build_object('total', (i * 13) % 300 + 0.5), "
                ":now - make_interval(secs => ((i::bigint * 104729) % 63072000)::float), :now "
                "FROM generate_series(1, :m) AS i"
            ), {"m": events, "buyers": buyers, "now": NOW})  # fmt: skip
        else:
            stamp = NOW.strftime("%Y-%m-%d %H:%M:%S")
            conn.execute(text(
                SQLITE_SERIES.format(n=contacts)
                + "INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out, "
                f"created_at, updated_at) SELECT i, 'c' || i, '{{}}', '[]', 0, 0, '{stamp}', "
                f"'{stamp}' FROM s"
            ))  # fmt: skip
            conn.execute(text(
                SQLITE_SERIES.format(n=events)
                + "INSERT INTO events (contact_id, name, properties, occurred_at, received_at) "
                f"SELECT 1 + (i * 7919) % {buyers}, "
                "CASE WHEN i % 10 < 7 THEN 'order_placed' ELSE 'page_viewed' END, "
                "json_object('total', (i * 13) % 300 + 0.5), "
                f"strftime('%Y-%m-%d %H:%M:%S', '{stamp}', '-' || ((i * 104729) % 63072000) "
                f"|| ' seconds') || '.000000', '{stamp}' FROM s"
            ))  # fmt: skip
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if pg else "ANALYZE"))


def _at(value: datetime, pg: bool) -> Any:
    return value if pg else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def raw_recompute(conn: Connection) -> None:
    """The engine's statements, typed by hand."""
    pg = conn.dialect.name == "postgresql"
    stages = SPEC.lifecycle
    params = {
        "now": _at(NOW, pg), "since": _at(NOW - SPEC.window, pg),
        "lost": _at(NOW - stages.lost_after, pg), "dormant": _at(NOW - stages.dormant_after, pg),
        "risk": _at(NOW - stages.at_risk_after, pg), "premium": stages.premium_value,
    }  # fmt: skip
    if pg:
        amount = ("CASE WHEN jsonb_typeof(properties -> 'total') = 'number' "
                  "THEN CAST(properties ->> 'total' AS FLOAT) END")  # fmt: skip
        since_last = "EXTRACT(EPOCH FROM (CAST(:now AS timestamptz) - p.last))"
        days = f"CAST(floor({since_last} / 86400) AS INT)"
    else:
        amount = ("CASE WHEN json_type(properties, '$.total') IN ('integer', 'real') "
                  "THEN json_extract(properties, '$.total') END")  # fmt: skip
        days = "CAST(julianday(:now) - julianday(p.last) AS INTEGER)"
    conn.execute(text("DELETE FROM contact_metrics"))
    conn.execute(text(
        "INSERT INTO contact_metrics (contact_id, last_purchase_at, recency_days, orders, "
        "frequency, monetary, value, lifecycle, computed_at) "
        f"SELECT c.id, p.last, {days}, COALESCE(p.orders, 0), COALESCE(p.frequency, 0), "
        "COALESCE(p.monetary, 0), COALESCE(p.value, 0), "
        "CASE WHEN p.orders IS NULL THEN 'prospect' WHEN p.last < :lost THEN 'lost' "
        "WHEN p.last < :dormant THEN 'dormant' WHEN p.last < :risk THEN 'at_risk' "
        "WHEN p.value >= :premium THEN 'premium' WHEN p.frequency >= 4 THEN 'loyal' "
        "WHEN p.orders >= 2 THEN 'repeat' ELSE 'first_purchase' END, :now "
        "FROM contacts c LEFT JOIN (SELECT contact_id, max(occurred_at) AS last, "
        "count(*) AS orders, sum(CASE WHEN occurred_at >= :since THEN 1 ELSE 0 END) AS frequency, "
        f"COALESCE(sum(CASE WHEN occurred_at >= :since THEN {amount} END), 0) AS monetary, "
        f"COALESCE(sum({amount}), 0) AS value FROM events "
        "WHERE name = 'order_placed' AND occurred_at <= :now GROUP BY contact_id) p "
        "ON p.contact_id = c.id"
    ), params)  # fmt: skip
    parts = []
    for key, column, order, edge in (("r", "recency_days", "DESC", "min"),
                                     ("f", "frequency", "ASC", "max"),
                                     ("m", "monetary", "ASC", "max")):  # fmt: skip
        parts.append(
            f"SELECT '{key}' AS k, tile, {edge}(v) AS edge FROM (SELECT {column} AS v, "
            f"NTILE(5) OVER (ORDER BY {column} {order}) AS tile FROM contact_metrics "
            "WHERE orders > 0) t WHERE tile < 5 GROUP BY tile"
        )
    edges: dict[str, list[float]] = {"r": [], "f": [], "m": []}
    for k, _tile, edge in conn.execute(text(" UNION ALL ".join(parts) + " ORDER BY k, tile")):
        edges[k].append(float(edge))

    def score(column: str, edges: list[float], op: str) -> str:
        return "1" + "".join(f" + CASE WHEN {column} {op} {e!r} THEN 1 ELSE 0 END" for e in edges)

    r = score("recency_days", edges["r"], "<")
    f = score("frequency", edges["f"], ">")
    m = score("monetary", edges["m"], ">")
    classes = " ".join(
        f"WHEN ({r}) BETWEEN {rl} AND {rh} AND ({f}) BETWEEN {fl} AND {fh} THEN '{name}'"
        for name, rl, rh, fl, fh in RFM_CLASSES
    )
    conn.execute(text(
        f"UPDATE contact_metrics SET r = {r}, f = {f}, m = {m}, rfm_class = CASE {classes} END "
        "WHERE orders > 0"
    ))  # fmt: skip
    conn.execute(text("SELECT count(*) FROM contact_metrics WHERE orders > 0")).scalar_one()


def summary(engine: Engine) -> list[Any]:
    """What both runs must agree on: per class and stage, the count and the summed scores."""
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT rfm_class, lifecycle, count(*), sum(r), sum(f), sum(m), sum(recency_days), "
            "sum(frequency), round(sum(value)) FROM contact_metrics "
            "GROUP BY rfm_class, lifecycle ORDER BY 1, 2"
        )))  # fmt: skip


def timed(engine: Engine, run: Any) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        run(conn)
    return time.perf_counter() - started


def refresh_rate(engine: Engine, contacts: int, count: int = 500) -> float:
    """Purchasing contacts recomputed per second, one per transaction (the ingest path)."""
    started = time.perf_counter()
    for i in range(count):
        with engine.begin() as conn:
            refresh_contacts(conn, SPEC, [1 + (i * 7919) % contacts], NOW)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"{args.contacts} contacts, {args.events} events; full recompute, best of 2")
    print(f"{'database':<12}{'seed s':>8}{'raw s':>8}{'engine s':>10}{'engine/raw':>12}"
          f"{'refresh/s':>11}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="parcours-bench-") as tmp:
        for kind in args.db.split(","):
            url, drop = fresh_database(kind, Path(tmp))
            engine = make_engine(url)
            try:
                upgrade(engine)
                started = time.perf_counter()
                seed(engine, args.contacts, args.events)
                seeded = time.perf_counter() - started
                raw, eng = [], []
                for _ in range(2):
                    raw.append(timed(engine, raw_recompute))
                    expected = summary(engine)
                    eng.append(timed(engine, lambda conn: recompute(conn, SPEC, NOW)))
                    assert summary(engine) == expected, "the engine and the raw SQL disagree"
                rate = refresh_rate(engine, args.contacts)
            finally:
                engine.dispose()
                drop()
            print(f"{kind:<12}{seeded:>8.1f}{min(raw):>8.2f}{min(eng):>10.2f}"
                  f"{min(eng) / min(raw):>12.2f}{rate:>11.0f}")  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
