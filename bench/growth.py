"""The claim's cost when the enrollments table carries dead tuples (PostgreSQL).

Every step rewrites its enrollment row, so the table and its due index fill with dead row
versions between two autovacuum runs. The claim (``UPDATE … WHERE id IN (SELECT … ORDER BY
due_at LIMIT n FOR UPDATE SKIP LOCKED)``) walks the due index and must step over them. This
script times full passes of claims over the same due enrollments, each claimed batch moved on as
a step would move it (due in three days, lease released), in three states of the same table:

  fresh     — just loaded and vacuumed (the baseline);
  dead      — after every row was rewritten `--rewrites` times with autovacuum off for the table
              (what a busy day leaves when autovacuum lags behind);
  vacuumed  — after a plain VACUUM of the table.

and prints the claim's mean cost per batch with the ratio to the fresh table, the dead tuples
counted by pg_stat_user_tables, and checks that every enrollment was claimed exactly once per
pass (none skipped, none twice).

    python bench/growth.py [--contacts 200000] [--batch 500] [--rewrites 5]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from engine.config import load_settings
from engine.store.db import make_engine, upgrade
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle

PG_BASE = os.environ.get("PARCOURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
JOURNEY = """\
format_version: 1
id: growth
name: Growth
objective: other
triggers:
  - manual: true
steps:
  pause:
    type: wait
    duration: 3d
"""


def seed(engine: Engine, contacts: int) -> None:
    """Contacts and one due enrollment each, set-based."""
    upgrade(engine)
    with Session(engine) as session, session.begin():
        version = publish_bundle(session, {"yaml": JOURNEY, "templates": {}}, now=NOW).version_id
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (id, external_id, attributes, tags, score, opted_out,"
                " created_at, updated_at) SELECT g, 'c' || g, '{}', '[]', 0, false, :at, :at"
                " FROM generate_series(1, :n) g"
            ),
            {"n": contacts, "at": NOW - timedelta(days=1)},
        )
        conn.execute(
            text(
                "INSERT INTO enrollments (scenario_id, version_id, contact_id, status, step_id,"
                " due_at, entry_key, entered_at, visits, vars, attempt)"
                " SELECT 'growth', :v, g, 'active', 'pause', :now - (g % 3600) * interval '1 s',"
                " 'growth', :now, 0, '{}', 0 FROM generate_series(1, :n) g"
            ),
            {"v": version, "n": contacts, "now": NOW},
        )


def autocommit(engine: Engine, *statements: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for statement in statements:
            conn.execute(text(statement))


def dead_tuples(engine: Engine) -> int:
    autocommit(engine, "SELECT pg_stat_force_next_flush()")
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'enrollments'")
        ).scalar_one()
    return int(found)


def claim_pass(engine: Engine, worker: Worker, now: datetime, contacts: int) -> list[float]:
    """Claim every due enrollment once, batch after batch; each batch's claim time."""
    times: list[float] = []
    claimed: set[int] = set()
    moved_to = now + timedelta(days=3)
    while True:
        started = time.perf_counter()
        rows = worker.claim(now)
        times.append(time.perf_counter() - started)
        if not rows:
            break
        ids = [int(r.id) for r in rows]
        if claimed.intersection(ids):
            raise SystemExit("CHECK FAILED: an enrollment was claimed twice in one pass")
        claimed.update(ids)
        with engine.begin() as conn:  # the step moves it on, as the worker's save does
            conn.execute(
                text(
                    "UPDATE enrollments SET due_at = :due, lease_owner = NULL,"
                    " lease_until = NULL WHERE id = ANY(:ids)"
                ),
                {"due": moved_to, "ids": ids},
            )
    if len(claimed) != contacts:
        raise SystemExit(f"CHECK FAILED: {len(claimed)} claimed of {contacts} due")
    return times[:-1]  # the last, empty claim is not a batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rewrites", type=int, default=5)
    args = parser.parse_args()

    name = f"bench_growth_{secrets.token_hex(4)}"
    admin = make_engine(PG_BASE).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_BASE).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        seed(engine, args.contacts)
        autocommit(
            engine,
            "ALTER TABLE enrollments SET (autovacuum_enabled = false)",
            "VACUUM ANALYZE enrollments",
        )
        settings = load_settings(env={}).evolve(batch_size=args.batch)
        worker = Worker(engine, settings, worker_id="growth")
        results: list[tuple[str, int, list[float]]] = []
        now = NOW
        for state in ("fresh", "dead", "vacuumed"):
            if state == "dead":
                for _ in range(args.rewrites):
                    autocommit(engine, "UPDATE enrollments SET attempt = attempt + 1")
            if state == "vacuumed":
                autocommit(engine, "VACUUM enrollments")
            dead = dead_tuples(engine)
            results.append((state, dead, claim_pass(engine, worker, now, args.contacts)))
            now += timedelta(days=4)  # every enrollment is due again
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    base = statistics.mean(results[0][2])
    print(f"claim of {args.batch} over {args.contacts:,} due enrollments, PostgreSQL")
    print("| table | dead tuples | claims | mean per claim | p95 per claim | vs fresh |")
    print("|---|---:|---:|---:|---:|---:|")
    for state, dead, times in results:
        mean = statistics.mean(times)
        p95 = statistics.quantiles(times, n=20)[-1]
        print(
            f"| {state} | {dead:,} | {len(times)} | {mean * 1000:.2f} ms | "
            f"{p95 * 1000:.2f} ms | {mean / base:.2f} |"
        )
    print("check: every enrollment claimed exactly once in each pass")


if __name__ == "__main__":
    main()
