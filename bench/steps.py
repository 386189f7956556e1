"""Contact-steps per second for a 3-step journey (condition → send to outbox → wait).

With --gate both, the engine runs twice more: with the placeholder gate (opt-out flag and
address) and with the full policy gate of scenarios/policy.yaml (consent, suppression, quiet
hours, caps, spacing, pressure, and the barometer updated for every send).

For each database, the same population is advanced twice from the same starting state:
  engine  — the real Worker (claim with lease, interpreter, gate, fenced writes, ledger, journal);
  floor   — raw DB-API doing the same writes per batch (claim UPDATE … RETURNING, enrollment
            updates, one ledger row and three journal rows per enrollment, one commit per batch).
The ratio engine/floor is the figure to watch; absolute numbers move with the machine.

    python bench/steps.py [--contacts 200000] [--batch 500] [--db sqlite,postgresql] [--gate full]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from engine.config import load_settings
from engine.store.db import make_engine, upgrade
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle

SCENARIO = """\
format_version: 1
id: bench
name: Bench journey
objective: other
triggers:
  - manual: true
steps:
  check:
    type: condition
    if:
      attribute: score
      op: gte
      value: 0
    then: mail
    else: null
  mail:
    type: send
    channel: email
    content:
      subject: "Hello {{ contact.first_name }}"
      text: "Your score is {{ contact.score }}."
    next: pause
  pause:
    type: wait
    duration: 1d
"""
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
PG_BASE = os.environ.get("PARCOURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def seed(url: str, contacts: int) -> int:
    """Migrate, publish the bench scenario, insert contacts and due enrollments; version id."""
    engine = make_engine(url)
    upgrade(engine)
    with Session(engine) as session, session.begin():
        version_id = publish_bundle(
            session, {"yaml": SCENARIO, "templates": {}}, now=NOW
        ).version_id
    created = NOW - timedelta(days=1)
    with engine.begin() as conn:
        for start in range(0, contacts, 10_000):
            ids = range(start + 1, min(start + 10_000, contacts) + 1)
            conn.execute(
                text(
                    "INSERT INTO contacts (id, external_id, email, timezone, attributes, tags, "
                    "score, opted_out, created_at, updated_at) VALUES (:id, :ext, :email, "
                    ":tz, :attrs, '[]', :score, false, :at, :at)"
                ),
                [
                    {
                        "id": i,
                        "ext": f"c{i}",
                        "email": f"c{i}@example.com",
                        "tz": "Europe/Paris",
                        "attrs": json.dumps({"first_name": f"Name{i}"}),
                        "score": i % 100,
                        "at": created,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                text(
                    "INSERT INTO enrollments (scenario_id, version_id, contact_id, status, "
                    "step_id, due_at, entry_key, entered_at, visits, vars, attempt) VALUES "
                    "('bench', :v, :c, 'active', 'check', :due, 'bench', :due, 0, '{}', 0)"
                ),
                [{"v": version_id, "c": i, "due": NOW - timedelta(seconds=i % 3600)} for i in ids],
            )
            # Marketing email needs consent: everyone opted in (the full gate reads these).
            conn.execute(
                text(
                    "INSERT INTO consent_states (contact_id, channel, topic, state, since, "
                    "record_id) VALUES (:c, 'email', '*', 'opted_in', :at, 0)"
                ),
                [{"c": i, "at": created} for i in ids],
            )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(text("CHECKPOINT"))
    engine.dispose()
    return version_id


def run_engine(url: str, batch: int, gate: str) -> tuple[float, int]:
    engine = make_engine(url)
    settings = load_settings(env={}).evolve(batch_size=batch)
    gate_factory = None
    if gate == "full":
        from engine.policy.loader import load_policy_file
        from engine.policy.loading import full_gate_factory

        policy = load_policy_file(
            Path(__file__).resolve().parent.parent / "scenarios" / "policy.yaml"
        )
        gate_factory = full_gate_factory(settings, policy)
    worker = Worker(engine, settings, gate_factory=gate_factory, worker_id="bench")
    steps = 0
    started = time.perf_counter()
    while True:
        from engine.worker.runner import PassReport

        report = PassReport()
        if worker.process_batch(NOW, report) == 0:
            break
        steps += report.steps
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, steps


def _raw_connection(url: str) -> Any:
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))


def run_floor(url: str, batch: int) -> tuple[float, int]:
    """Raw DB-API, same statements per batch as the engine's writes."""
    sqlite = url.startswith("sqlite")
    conn = _raw_connection(url)
    cur = conn.cursor()
    p = "?" if sqlite else "%s"
    now = NOW.isoformat(sep=" ") if sqlite else NOW
    lease = (
        (NOW + timedelta(minutes=1)).isoformat(sep=" ") if sqlite else NOW + timedelta(minutes=1)
    )
    later = (NOW + timedelta(days=1)).isoformat(sep=" ") if sqlite else NOW + timedelta(days=1)
    lock = "" if sqlite else " FOR UPDATE SKIP LOCKED"
    claim = (
        f"UPDATE enrollments SET lease_owner={p}, lease_until={p}, attempt=attempt+1 WHERE id IN "
        f"(SELECT id FROM enrollments WHERE status='active' AND due_at <= {p} AND "
        f"(lease_until IS NULL OR lease_until < {p}) ORDER BY due_at LIMIT {batch}{lock}) "
        "RETURNING id, contact_id, attempt"
    )
    save = (
        f"UPDATE enrollments SET status='active', step_id='pause', step_entered_at={p}, "
        f"deadline={p}, due_at={p}, waiting_for=NULL, visits=3, vars='{{}}', ended_at=NULL, "
        f"end_reason=NULL, lease_owner=NULL, lease_until=NULL WHERE id={p} AND attempt={p}"
    )
    send = (
        "INSERT INTO sends (send_key, enrollment_id, contact_id, scenario_id, version_id, step_id, "
        "channel, topic, kind, status, payload, provider_id, attempts, created_at, sent_at) "
        f"VALUES ({p}, {p}, {p}, 'bench', 1, 'mail', 'email', NULL, 'marketing', 'sent', {p}, "
        f"{p}, 1, {p}, {p})"
    )
    journal = (
        "INSERT INTO journal (at, kind, enrollment_id, contact_id, scenario_id, version_id, "
        f"step_id, reason, data) VALUES ({p}, {p}, {p}, {p}, 'bench', 1, {p}, {p}, NULL)"
    )
    steps = 0
    started = time.perf_counter()
    while True:
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.execute(claim, ("floor", lease, now, now))
        rows = cur.fetchall()
        conn.commit() if not sqlite else cur.execute("COMMIT")
        if not rows:
            break
        if sqlite:
            cur.execute("BEGIN IMMEDIATE")
        cur.executemany(save, [(now, later, later, r[0], r[2]) for r in rows])
        body = json.dumps({"parts": {"subject": "Hello", "text": "Your score"}})
        cur.executemany(
            send, [(f"1:{r[0]}:mail:2", r[0], r[1], body, f"outbox:{r[0]}", now, now) for r in rows]
        )
        cur.executemany(
            journal,
            [
                (now, kind, r[0], r[1], step, reason)
                for r in rows
                for kind, step, reason in (
                    ("step", "check", "then"),
                    ("send", "mail", "allowed"),
                    ("step", "pause", "wait"),
                )
            ],
        )
        conn.commit() if not sqlite else cur.execute("COMMIT")
        steps += 3 * len(rows)
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed, steps


def fresh_database(kind: str, tmp: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        path = tmp / f"bench-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: None
    name = f"parcours_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        PG_BASE.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    base = PG_BASE.rsplit("/", 1)[0]
    return f"{base}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--gate", default="simple", choices=("simple", "full", "both"))
    args = parser.parse_args()
    gates = ("simple", "full") if args.gate == "both" else (args.gate,)
    print(f"{args.contacts} contacts, 3 steps each, batches of {args.batch}")
    print(f"{'database':<12}{'run':<14}{'seconds':>9}{'steps':>10}{'steps/s':>10}{'vs floor':>10}")
    with tempfile.TemporaryDirectory(prefix="parcours-bench-") as tmp:
        for kind in args.db.split(","):
            url, drop = fresh_database(kind, Path(tmp))
            try:
                seed(url, args.contacts)
                f_secs, f_steps = run_floor(url, args.batch)
            finally:
                drop()
            f_rate = f_steps / f_secs
            print(
                f"{kind:<12}{'raw floor':<14}{f_secs:>9.2f}{f_steps:>10}{f_rate:>10.0f}{1.0:>10.2f}"
            )
            for gate in gates:
                url, drop = fresh_database(kind, Path(tmp))
                try:
                    seed(url, args.contacts)
                    e_secs, e_steps = run_engine(url, args.batch, gate)
                finally:
                    drop()
                e_rate = e_steps / e_secs
                label = f"engine/{gate}"
                print(
                    f"{kind:<12}{label:<14}{e_secs:>9.2f}{e_steps:>10}{e_rate:>10.0f}"
                    f"{e_rate / f_rate:>10.2f}"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
