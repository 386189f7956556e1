"""Contact-steps per second for a 3-step journey (condition → send to outbox → wait).

With --gate both, the engine runs twice more: with the placeholder gate (opt-out flag and
address) and with the full policy gate of scenarios/policy.yaml (consent, suppression, quiet
hours, caps, spacing, pressure, and the barometer updated for every send).

For each database, the same population is advanced twice from the same starting state:
  engine  — the real Worker (claim with lease, interpreter, gate, fenced writes, ledger, journal);
  floor   — raw DB-API doing the same writes per batch (claim UPDATE … RETURNING, enrollment
            updates, one ledger row and three journal rows per enrollment, one commit per batch).
The ratio engine/floor is the figure to watch; absolute numbers move with the machine.
Each run starts from a copy of one seeded database (SQLite: a file copy; PostgreSQL: a
database created from a template) and is checked afterwards: every contact advanced three
steps to the wait, one ledger row per contact under a distinct send key, three journal rows
per contact, no enrollment left due, and with the full gate two barometer rows per contact.
A failed check exits with status 1. `--repeat 3` prints the median of three runs of each.

`--growth 20000,200000,1000000` runs the floor and the engine at each size and prints the cost
per contact-step (µs) with its ratio to the first size's: flat means the hot path does not slow
down as the base grows.

    python bench/steps.py [--contacts 200000] [--batch 500] [--db sqlite,postgresql]
                          [--gate simple|full|both] [--repeat 3] [--growth 20000,200000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, event, text
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


SQLITE_PRAGMAS: list[str] = []  # --sqlite-cache-mb: applied to the engine's and the floor's


def _pragmas(engine: Any) -> None:
    if not SQLITE_PRAGMAS or engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        for pragma in SQLITE_PRAGMAS:
            dbapi_connection.execute(pragma)


def run_engine(url: str, batch: int, gate: str) -> tuple[float, int]:
    engine = make_engine(url)
    _pragmas(engine)
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
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
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


class Seeded:
    """One seeded database per (kind, size); each run gets a fresh copy of it."""

    def __init__(self, kind: str, contacts: int, tmp: Path, prefix: str) -> None:
        self.kind, self.contacts, self.tmp, self.prefix = kind, contacts, tmp, prefix
        self.admin: Any = None
        if kind == "sqlite":
            self.template = tmp / f"seed-{contacts}-{uuid.uuid4().hex[:6]}.db"
            seed(f"sqlite:///{self.template}", contacts)
            return
        self.admin = create_engine(
            PG_BASE.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        self.name = f"{prefix}_seed_{uuid.uuid4().hex[:8]}"
        self._create(self.name)
        try:
            seed(self._url(self.name), contacts)
        except BaseException:
            self.close()
            raise

    def _url(self, name: str) -> str:
        return f"{PG_BASE.rsplit('/', 1)[0]}/{name}"

    def _create(self, name: str, template: str | None = None) -> None:
        with self.admin.connect() as conn:
            clause = f' TEMPLATE "{template}"' if template else ""
            conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))

    def _drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def copy(self) -> tuple[str, Callable[[], None]]:
        """A fresh copy: (url, drop)."""
        if self.kind == "sqlite":
            path = self.tmp / f"run-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.template, path)

            def remove() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)

            return f"sqlite:///{path}", remove
        name = f"{self.prefix}_run_{uuid.uuid4().hex[:8]}"
        self._create(name, template=self.name)
        return self._url(name), lambda: self._drop(name)

    def close(self) -> None:
        if self.kind == "sqlite":
            self.template.unlink(missing_ok=True)
            return
        self._drop(self.name)
        self.admin.dispose()


def check(url: str, contacts: int, steps: int, gate: str | None) -> list[str]:
    """What must hold after a run; the failures, in words (empty: all good)."""
    engine = make_engine(url)
    later = NOW + timedelta(days=1)
    problems = []
    try:
        with engine.connect() as conn:

            def one(sql: str, **params: Any) -> int:
                return int(conn.execute(text(sql), params).scalar_one())

            expected = {
                "steps": (steps, 3 * contacts),
                "enrollments at the wait": (
                    one(
                        "SELECT count(*) FROM enrollments WHERE status = 'active' "
                        "AND step_id = 'pause' AND lease_owner IS NULL AND due_at >= :later",
                        later=later,
                    ),
                    contacts,
                ),
                "enrollments still due": (
                    one("SELECT count(*) FROM enrollments WHERE due_at <= :now", now=NOW),
                    0,
                ),
                "ledger rows": (one("SELECT count(*) FROM sends"), contacts),
                "distinct send keys": (one("SELECT count(DISTINCT send_key) FROM sends"), contacts),
                "contacts sent to": (one("SELECT count(DISTINCT contact_id) FROM sends"), contacts),
                "journal rows": (one("SELECT count(*) FROM journal"), 3 * contacts),
            }
            if gate == "full":
                expected["barometer rows"] = (one("SELECT count(*) FROM pressure"), 2 * contacts)
            for what, (got, want) in expected.items():
                if got != want:
                    problems.append(f"{what}: {got}, expected {want}")
    finally:
        engine.dispose()
    return problems


def measure(
    seeded: Seeded, runs: dict[str, Callable[[str], tuple[float, int]]], repeat: int
) -> dict[str, tuple[float, int]]:
    """Median seconds and steps of each run (label → run), each on a fresh copy and checked.

    The runs take turns (floor, engine, floor, engine...), so that a shared machine's load
    weighs on the floor and the engine alike. Exits on a failed check."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    steps: dict[str, int] = {}
    for _ in range(repeat):
        for label, run in runs.items():
            url, drop = seeded.copy()
            try:
                secs, steps[label] = run(url)
                gate = label.removeprefix("engine/") if label.startswith("engine/") else None
                problems = check(url, seeded.contacts, steps[label], gate)
            finally:
                drop()
            if problems:
                print(f"CHECK FAILED ({seeded.kind}, {label}): " + "; ".join(problems))
                sys.exit(1)
            times[label].append(secs)
    return {label: (statistics.median(times[label]), steps[label]) for label in runs}


def _runs(args: argparse.Namespace) -> dict[str, Callable[[str], tuple[float, int]]]:
    gates = ("simple", "full") if args.gate == "both" else (args.gate,)
    runs: dict[str, Callable[[str], tuple[float, int]]] = {
        "raw floor": lambda url: run_floor(url, args.batch)
    }
    for gate in gates:
        runs[f"engine/{gate}"] = lambda url, gate=gate: run_engine(url, args.batch, gate)
    return runs


def table(args: argparse.Namespace, tmp: Path) -> None:
    runs = f", median of {args.repeat} runs" if args.repeat > 1 else ""
    print(f"{args.contacts} contacts, 3 steps each, batches of {args.batch}{runs}")
    print(f"{'database':<12}{'run':<14}{'seconds':>9}{'steps':>10}{'steps/s':>10}{'vs floor':>10}")
    for kind in args.db.split(","):
        seeded = Seeded(kind, args.contacts, tmp, args.pg_prefix)
        try:
            results = measure(seeded, _runs(args), args.repeat)
        finally:
            seeded.close()
        f_secs, f_steps = results["raw floor"]
        for label, (secs, steps) in results.items():
            print(
                f"{kind:<12}{label:<14}{secs:>9.2f}{steps:>10}{steps / secs:>10.0f}"
                f"{(steps / secs) / (f_steps / f_secs):>10.2f}"
            )
        sys.stdout.flush()


def growth(args: argparse.Namespace, tmp: Path) -> None:
    sizes = [int(n) for n in args.growth.split(",")]
    runs = f", median of {args.repeat} runs" if args.repeat > 1 else ""
    print(f"cost per contact-step as the base grows, batches of {args.batch}{runs}")
    head = f"{'database':<12}{'run':<14}{'contacts':>10}{'seconds':>9}{'µs/step':>9}"
    print(f"{head}{'vs first':>10}{'vs floor':>10}")
    for kind in args.db.split(","):
        first: dict[str, float] = {}
        for size in sizes:
            seeded = Seeded(kind, size, tmp, args.pg_prefix)
            try:
                results = measure(seeded, _runs(args), args.repeat)
            finally:
                seeded.close()
            f_secs, f_steps = results["raw floor"]
            for label, (secs, steps) in results.items():
                cost = secs / steps * 1e6
                base = first.setdefault(label, cost)
                print(
                    f"{kind:<12}{label:<14}{size:>10}{secs:>9.2f}{cost:>9.1f}{cost / base:>10.2f}"
                    f"{f_secs / f_steps * 1e6 / cost:>10.2f}"
                )
            sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--gate", default="simple", choices=("simple", "full", "both"))
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the median is shown")
    parser.add_argument("--growth", help="sizes, e.g. 20000,200000,1000000: cost per step")
    parser.add_argument(
        "--pg-prefix", default="bench_steps", help="name prefix of the PostgreSQL databases made"
    )
    parser.add_argument(
        "--sqlite-cache-mb",
        type=int,
        default=0,
        help="SQLite page cache and memory map of this size, for the floor and the engine alike "
        "(0: the driver's defaults, as parcours runs today)",
    )
    args = parser.parse_args()
    # A stopped run (SIGTERM) still drops its databases and temporary files (the finally blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    if args.sqlite_cache_mb:
        size = args.sqlite_cache_mb
        SQLITE_PRAGMAS.extend(
            [f"PRAGMA cache_size=-{size * 1024}", f"PRAGMA mmap_size={size * 1024 * 1024}"]
        )
    with tempfile.TemporaryDirectory(prefix="parcours-bench-") as tmp:
        if args.growth:
            growth(args, Path(tmp))
        else:
            table(args, Path(tmp))


if __name__ == "__main__":
    main()
