"""Event to send under load: events posted through the HTTP API, the send seen in the ledger.

A fresh database holds a marketing journey "signup → email" (no wait, the full policy gate of
scenarios/policy.yaml, the embedded outbox so nothing leaves the machine) and one opted-in
contact per event to come. The product runs as the README's deployment runs it: `parcours web
--workers 2` (gunicorn, 8 threads each) and `parcours worker`, each its own process. A paced
client (`--clients` threads, one keep-alive connection each) posts one event per request
(`POST /api/events`) at a steady rate for `--seconds`; an observer thread polls the send
ledger and notes when each send becomes visible (committed). Latency = that moment minus the
moment the client posted the event; the ledger's `created_at` (the worker's clock at the start
of its pass) is printed too.

The baseline, measured in the same run against the same processes: 1 event a second for
`--baseline-seconds` (after 3 s of warm-up), the unloaded event-to-send latency. Checks: every
answer 202, every event one enrollment and exactly one send, no duplicate send key; the script
exits 1 otherwise.

    python bench/latency.py [--rates 100,500] [--seconds 60] [--db postgresql,sqlite]
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from engine.audience.ingest import upsert_contacts
from engine.config import load_settings
from engine.store.db import make_engine, upgrade
from engine.store.models import ConsentState, Contact, Enrollment, Send
from engine.worker.versions import publish_dir

PG = os.environ.get("PARCOURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCENARIO = """\
format_version: 1
id: welcome
name: Welcome
objective: activation
triggers:
  - event: signup
steps:
  hello:
    type: send
    channel: email
    content:
      subject: "Bienvenue {{ contact.first_name }}"
      text: "Votre code : {{ event.code }}."
"""


@dataclass
class Phase:
    """One steady rate: what the client posted and what the observer saw."""

    name: str
    rate: float
    seconds: float
    first: int  # first contact number of the phase
    posted: dict[int, float] = field(default_factory=dict)  # contact number → wall time
    answers: list[tuple[int, float]] = field(default_factory=list)  # (status, round trip s)
    backlog: int = 0  # events without a visible send when the posting ended
    drain: float = 0.0  # from the end of the posting until every send was visible
    elapsed: float = 0.0  # the posting itself
    latencies: list[float] = field(default_factory=list)  # post → send visible, s
    created: list[float] = field(default_factory=list)  # post → the send's created_at, s

    @property
    def count(self) -> int:
        return max(1, round(self.rate * self.seconds))


class Observer(threading.Thread):
    """Polls the send ledger for new rows: contact id → (wall time first seen, created_at)."""

    def __init__(self, engine: Engine, every: float = 0.005) -> None:
        super().__init__(name="observer", daemon=True)
        self.engine, self.every = engine, every
        self.seen: dict[int, tuple[float, datetime | str]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        last = 0
        query = text(
            "SELECT id, contact_id, created_at FROM sends WHERE id > :last ORDER BY id LIMIT 5000"
        )
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                rows = conn.execute(query, {"last": last}).all()
                conn.rollback()  # a fresh snapshot for the next poll
                now = time.time()
                for send_id, contact_id, created in rows:
                    self.seen.setdefault(contact_id, (now, created))
                    last = max(last, send_id)
                if len(rows) < 5000:
                    self.stop.wait(self.every)


def post_phase(port: int, key: str, phase: Phase, clients: int) -> None:
    """Post `phase.count` events, the i-th at start + i / rate, from `clients` threads."""
    numbers = itertools.count()
    lock = threading.Lock()
    start = time.time() + 0.2

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json", "X-Api-Key": key}
        while (i := next(numbers)) < phase.count:
            delay = start + i / phase.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            n = phase.first + i
            body = json.dumps({"contact": f"c{n}", "name": "signup", "properties": {"code": n}})
            posted = time.time()
            try:
                conn.request("POST", "/api/events", body, headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = 0
            with lock:
                phase.posted[n] = posted
                phase.answers.append((status, time.time() - posted))
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.elapsed = time.time() - start


def wait_sent(observer: Observer, phase: Phase, contact_ids: dict[int, int], limit: float) -> None:
    """Backlog at the end of the posting, then the time until every send of the phase is seen."""
    wanted = [contact_ids[n] for n in phase.posted]
    ended = time.time()
    phase.backlog = sum(1 for c in wanted if c not in observer.seen)
    while any(c not in observer.seen for c in wanted) and time.time() - ended < limit:
        time.sleep(0.01)
    phase.drain = time.time() - ended


def quantiles(values: list[float]) -> tuple[float, float, float, float]:
    """p50, p95, p99, max (nearest rank), in the values' unit."""
    if not values:
        return (float("nan"),) * 4
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return rank(0.50), rank(0.95), rank(0.99), ordered[-1]


def fresh_database(kind: str, tmp: Path) -> tuple[str, Callable[[], None]]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'latency.db'}", lambda: None
    name = f"bench_latency_{secrets.token_hex(4)}"
    admin = create_engine(make_url(PG).set(drivername="postgresql+psycopg"))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return make_url(PG).set(database=name).render_as_string(hide_password=False), drop


def seed(engine: Engine, workspace: Path, contacts: int) -> dict[int, int]:
    """Publish the journey; contacts c0…c<n-1> with an email and an email opt-in. Number → id."""
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        publish_dir(session, workspace)
    for start in range(0, contacts, 5000):
        rows = [
            {"external_id": f"c{n}", "email": f"c{n}@example.org", "first_name": f"N{n}"}
            for n in range(start, min(start + 5000, contacts))
        ]
        with engine.begin() as conn:
            upsert_contacts(conn, rows, now)
    with engine.begin() as conn:
        ids = {
            int(ext[1:]): cid for cid, ext in conn.execute(select(Contact.id, Contact.external_id))
        }
        conn.execute(
            insert(ConsentState).from_select(
                ["contact_id", "channel", "topic", "state", "since", "record_id"],
                select(
                    Contact.id,
                    text("'email'"),
                    text("'*'"),
                    text("'opted_in'"),
                    Contact.created_at,
                    text("0"),
                ),
            )
        )
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_product(
    env: dict[str, str], port: int, logs: Path, web_workers: int
) -> list[subprocess.Popen[bytes]]:
    """`parcours web` and `parcours worker`, as the deployment runs them; waits for health."""
    cli = [sys.executable, "-m", "designer"]
    web = [*cli, "web", "--port", str(port), "--workers", str(web_workers)]
    procs = [
        subprocess.Popen(web, env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=(logs / "web.log").open("wb")),
        subprocess.Popen([*cli, "worker"], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=(logs / "worker.log").open("wb")),
    ]  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                print(f"  parcours web (pid {procs[0].pid}), parcours worker (pid {procs[1].pid})",
                      flush=True)  # fmt: skip
                return procs
        except OSError:
            time.sleep(0.1)
    stop_product(procs)
    raise SystemExit(f"the web server did not answer within 60 s; see {logs}/web.log")


def stop_product(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(kind: str, args: argparse.Namespace, tmp: Path) -> tuple[list[Phase], list[str]]:
    # warm-up (not printed): the worker's first passes run its start-up jobs too
    phases = [Phase("warm-up", 1.0, 3, 0)]
    phases.append(Phase("baseline", 1.0, args.baseline_seconds, phases[0].count))
    for rate in (float(r) for r in args.rates.split(",")):
        phases.append(Phase(f"{rate:.0f}/s", rate, args.seconds, sum(p.count for p in phases)))
    total = sum(p.count for p in phases)
    workspace = tmp / "scenarios"
    workspace.mkdir()
    (workspace / "welcome.yaml").write_text(SCENARIO)
    shutil.copy(ROOT / "scenarios" / "policy.yaml", workspace / "policy.yaml")
    url, drop = fresh_database(kind, tmp)
    key = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        PARCOURS_DATABASE_URL=url, PARCOURS_SCENARIOS_DIR=str(workspace),
        PARCOURS_DATA_DIR=str(tmp / "data"), PARCOURS_API_KEY=key, PARCOURS_API_RATE="0",
        PARCOURS_SECRET_KEY="l" * 32, PARCOURS_LOG_LEVEL="WARNING",
    )  # fmt: skip
    engine = None
    procs: list[subprocess.Popen[bytes]] = []
    observer = None
    try:
        upgrade(url)
        engine = make_engine(url)
        contact_ids = seed(engine, load_settings(env).scenarios_dir, total)
        port = free_port()
        procs = start_product(env, port, tmp, args.web_workers)
        observer = Observer(engine)
        observer.start()
        for phase in phases:
            post_phase(port, key, phase, args.clients)
            wait_sent(observer, phase, contact_ids, args.drain_limit)
            print(f"  {kind} {phase.name}: {len(phase.posted)} posted in {phase.elapsed:.1f} s, "
                  f"drained {phase.drain:.2f} s after", flush=True)  # fmt: skip
        for phase in phases:  # the latency of each event, from its send's row
            for n, posted in phase.posted.items():
                seen = observer.seen.get(contact_ids[n])
                if seen is not None:
                    phase.latencies.append(seen[0] - posted)
                    phase.created.append(_instant(seen[1]) - posted)
        return phases, check(engine, phases, observer, contact_ids)
    finally:
        if observer is not None:
            observer.stop.set()
            observer.join()
        stop_product(procs)
        if engine is not None:
            engine.dispose()
        drop()


def _instant(value: datetime | str) -> float:
    """A ledger time as a POSIX timestamp (SQLite hands the raw column back as text)."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.replace(tzinfo=at.tzinfo or UTC).timestamp()


def check(
    engine: Engine, phases: list[Phase], observer: Observer, contact_ids: dict[int, int]
) -> list[str]:
    """What went wrong, in words: non-202 answers, lost or doubled sends and enrollments."""
    failures = []
    posted = sum(len(p.posted) for p in phases)
    refused = sum(1 for p in phases for status, _ in p.answers if status != 202)
    if refused:
        failures.append(f"{refused} answers were not 202")
    with engine.connect() as conn:
        sends = conn.execute(select(func.count(), func.count(Send.send_key.distinct()),
                                    func.count(Send.contact_id.distinct()))).one()  # fmt: skip
        enrollments = conn.execute(select(func.count()).select_from(Enrollment)).scalar_one()
        unsent = conn.execute(select(func.count()).where(Send.status != "sent")).scalar_one()
    if sends[0] != posted or sends[2] != posted:
        failures.append(f"{posted} events, {sends[0]} sends to {sends[2]} contacts")
    if sends[1] != sends[0]:
        failures.append(f"{sends[0] - sends[1]} duplicate send keys")
    if enrollments != posted:
        failures.append(f"{posted} events, {enrollments} enrollments")
    if unsent:
        failures.append(f"{unsent} sends not sent")
    missing = [n for p in phases for n in p.posted if contact_ids[n] not in observer.seen]
    if missing:
        failures.append(f"{len(missing)} sends never seen by the observer")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="100,500", help="events per second, one phase each")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="at 1 event/s")
    parser.add_argument("--db", default="postgresql", help="postgresql, sqlite or both (a,b)")
    parser.add_argument("--clients", type=int, default=32, help="client threads (connections)")
    parser.add_argument("--web-workers", type=int, default=2, help="parcours web --workers")
    parser.add_argument("--drain-limit", type=float, default=300.0, help="seconds to wait")
    args = parser.parse_args()
    # a SIGTERM runs the clean-up too: the child processes stop, the databases are dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failures: list[str] = []
    print(f"events posted one per request; phases of {args.seconds:.0f} s at {args.rates}/s, "
          f"baseline 1/s for {args.baseline_seconds:.0f} s")  # fmt: skip
    results = []
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix="parcours-latency-") as tmp:
            phases, failed = run(kind, args, Path(tmp))
        results.append((kind, phases))
        failures += [f"{kind}: {f}" for f in failed]
    print(f"{'database':<12}{'phase':<10}{'posted':>8}{'202':>7}{'req p95':>9}"
          f"{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'p95/base':>9}{'created p95':>12}"
          f"{'backlog':>8}{'drain':>7}")  # fmt: skip
    for kind, phases in results:
        base = quantiles(phases[1].latencies)[1]
        for p in phases[1:]:
            p50, p95, p99, top = quantiles(p.latencies)
            accepted = sum(1 for status, _ in p.answers if status == 202)
            round_trip = quantiles([t for _, t in p.answers])[1]
            print(
                f"{kind:<12}{p.name:<10}{len(p.posted):>8}{accepted:>7}"
                f"{round_trip * 1000:>7.0f}ms{p50 * 1000:>7.0f}ms{p95 * 1000:>7.0f}ms"
                f"{p99 * 1000:>7.0f}ms{top * 1000:>7.0f}ms{p95 / base:>9.1f}"
                f"{quantiles(p.created)[1] * 1000:>10.0f}ms{p.backlog:>8}{p.drain:>6.1f}s"
            )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for failure in failures:
        print(f"FAILED {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
