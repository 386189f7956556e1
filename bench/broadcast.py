"""A monthly newsletter to the whole base: from fire time to the last ledger row, 2 workers.

On PostgreSQL, a fresh database gets --contacts contacts (set-based, generate_series): 2% have
opted out, 5% never consented to email (the policy's email default is opt-in) and 5% already had
three emails this week (the `email-week` cap of scenarios/policy.yaml), so the full policy gate
has something to refuse. A scheduled scenario (schedule → send email) was published 40 days ago:
its latest fire time is due. --workers `Worker` processes (this script, `--child`) run passes
until nothing is due. Timed from the firing's record (the worker's fire time) to the last batch
committed, with the moment the fan-out ended.

The floor, in the same run and database: one INSERT … SELECT of an enrollment row per contact,
then one of a ledger row per enrollment, into copies of the two tables (same indexes).

Then, unless --no-kill, the same broadcast again in a fresh database, with one worker killed by
SIGKILL mid fan-out and the other mid-send, each restarted at once (their batches wait for the
lease, --lease seconds). Both runs check: every eligible contact got exactly one newsletter, the
refused ones none, one enrollment and one "entered" journal row per contact, nothing left due.
Exit status 1 when a check fails.

    python bench/broadcast.py [--contacts 1000000] [--workers 2] [--lease 60] [--no-kill]
    python bench/broadcast.py --fan-out-only [--contacts 1000000]   (the fan-out alone)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from engine.store.db import make_engine, upgrade
from engine.worker.versions import publish_bundle

PG_BASE = os.environ.get("PARCOURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCENARIO = """\
format_version: 1
id: newsletter
name: Monthly newsletter
objective: newsletter
topic: newsletter
triggers:
  - schedule: "0 6 1 * *"
    timezone: UTC
entry:
  reentry: always
steps:
  issue:
    type: send
    channel: email
    content:
      subject: "The news, {{ contact.first_name }}"
      text: "Hello {{ contact.first_name }}, here is this month's news."
"""
# Who the gate must refuse (contact id modulo): opted out, no email consent, over the week's cap.
OPTED_OUT, NO_CONSENT, CAPPED = "id % 50 = 1", "id % 20 = 0", "id % 20 = 7"
REFUSED = f"({OPTED_OUT} OR {NO_CONSENT} OR {CAPPED})"
RENDER_FAILED = "SELECT count(*) FROM journal WHERE kind = 'error' AND reason = 'render_failed'"


# ---------------------------------------------------------------- databases
def fresh_database(prefix: str) -> tuple[str, Callable[[], None]]:
    """A new PostgreSQL database and the function that drops it."""
    admin = create_engine(
        make_url(PG_BASE).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"{prefix}_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(PG_BASE).set(database=name).render_as_string(hide_password=False), drop


def vacuum(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
        conn.execute(text("CHECKPOINT"))


def seed_contacts(engine: Engine, contacts: int, now: datetime) -> None:
    """Contacts, their email consent and this week's earlier sends, set-based."""
    created = now - timedelta(days=400)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contacts (id, external_id, email, timezone, attributes, tags, score, "
                "opted_out, created_at, updated_at, anonymous) "
                "SELECT id, 'c' || id, 'c' || id || '@example.com', 'Europe/Paris', "
                "jsonb_build_object('first_name', 'Name' || id), '[]', id % 100, "
                f"{OPTED_OUT}, :at, :at, false FROM generate_series(1, :n) AS id"
            ),
            {"n": contacts, "at": created},
        )
        conn.execute(text("SELECT setval('contacts_id_seq', :n)"), {"n": contacts})
        conn.execute(
            text(
                "INSERT INTO consent_states (contact_id, channel, topic, state, since, record_id) "
                "SELECT id, 'email', '*', 'opted_in', :at, 0 FROM generate_series(1, :n) AS id "
                f"WHERE NOT ({NO_CONSENT})"
            ),
            {"n": contacts, "at": created},
        )
        conn.execute(
            text(
                "INSERT INTO sends (send_key, contact_id, scenario_id, step_id, channel, kind, "
                "status, payload, attempts, created_at, sent_at) "
                "SELECT 'earlier:' || id || ':' || d, id, 'weekly', 'mail', 'email', "
                "'marketing', 'sent', '{}', 1, :now - d * interval '1 day', "
                "  :now - d * interval '1 day' "
                f"FROM generate_series(1, :n) AS id, generate_series(1, 3) AS d WHERE {CAPPED}"
            ),
            {"n": contacts, "now": now},
        )


def publish(engine: Engine, now: datetime) -> int:
    with Session(engine) as session, session.begin():
        published = now - timedelta(days=40)  # a monthly firing is due
        bundle = {"yaml": SCENARIO, "templates": {}}
        return publish_bundle(session, bundle, now=published).version_id


def floor(engine: Engine, version_id: int, now: datetime) -> tuple[float, float]:
    """Seconds for one INSERT … SELECT of an enrollment per contact, and of a send per one."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE floor_enrollments (LIKE enrollments INCLUDING ALL)"))
        conn.execute(text("CREATE TABLE floor_sends (LIKE sends INCLUDING ALL)"))
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO floor_enrollments (scenario_id, version_id, contact_id, status, "
                "step_id, due_at, entry_key, entered_at, visits, vars, attempt) "
                "SELECT 'newsletter', :v, id, 'active', 'issue', :now, 'schedule:floor', :now, "
                "0, '{}', 0 FROM contacts"
            ),
            {"v": version_id, "now": now},
        )
    enrollments = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO floor_sends (send_key, enrollment_id, contact_id, scenario_id, "
                "version_id, step_id, channel, topic, kind, status, payload, provider_id, "
                "attempts, created_at, sent_at) "
                "SELECT version_id || ':' || id || ':issue:1', id, contact_id, 'newsletter', "
                "version_id, 'issue', "
                "'email', 'newsletter', 'marketing', 'sent', "
                "jsonb_build_object('parts', jsonb_build_object('subject', 'The news', "
                "'text', 'Hello')), 'outbox:' || id, 1, :now, :now FROM floor_enrollments"
            ),
            {"now": now},
        )
    sends = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE floor_sends"))
        conn.execute(text("DROP TABLE floor_enrollments"))
    return enrollments, sends


# ---------------------------------------------------------------- worker processes
def start_worker(url: str, workspace: Path, lease: int, name: str) -> subprocess.Popen[str]:
    """One `Worker` in its own process (this script with --child), passes until nothing is due
    (under cProfile, its profile written to $BENCH_PROFILE_DIR/<name>.prof, when that is set)."""
    command = [sys.executable, __file__, "--child", url, "--workspace", str(workspace),
               "--lease", str(lease), "--name", name]  # fmt: skip
    profiles = os.environ.get("BENCH_PROFILE_DIR")
    if profiles:
        out = Path(profiles) / f"{name}-{secrets.token_hex(2)}.prof"
        command[1:1] = ["-m", "cProfile", "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def write_workspace(root: Path) -> Path:
    workspace = root / "scenarios"
    workspace.mkdir()
    shutil.copy(ROOT / "scenarios" / "policy.yaml", workspace / "policy.yaml")
    return workspace


def child(url: str, workspace: Path, lease: int, name: str) -> None:
    """A worker process: the full gate of the workspace policy, passes until nothing is due;
    prints, as JSON, the wall time of its last committed batch and its counts."""
    from engine.config import load_settings
    from engine.policy.loading import full_gate_factory
    from engine.worker.runner import PassReport, Worker

    settings = load_settings(env={}).evolve(lease_seconds=lease, scenarios_dir=workspace)

    class TimedWorker(Worker):
        last_batch = 0.0

        def process_batch(self, now: datetime, report: PassReport | None = None) -> int:
            claimed = super().process_batch(now, report)
            if claimed:
                self.last_batch = time.time()
            return claimed

    engine = make_engine(url)
    worker = TimedWorker(engine, settings, gate_factory=full_gate_factory(settings),
                         worker_id=f"{name}:{os.getpid()}")  # fmt: skip
    totals = {"passes": 0, "claimed": 0, "steps": 0, "sends": 0, "stale": 0, "entered": 0}
    busy = (
        "SELECT EXISTS (SELECT 1 FROM schedule_firings WHERE status = 'pending') OR EXISTS "
        "(SELECT 1 FROM enrollments WHERE status = 'active' AND due_at <= now())"
    )
    while True:
        report = worker.run_once()
        totals["passes"] += 1
        for key in ("claimed", "steps", "sends", "stale"):
            totals[key] += getattr(report, key)
        totals["entered"] += report.triggers.get("entered", 0)
        if report.claimed or report.triggers.get("fanned_out"):
            continue
        with engine.connect() as conn:
            if not conn.execute(text(busy)).scalar():
                break
        time.sleep(0.2)  # leased by another worker, or by a dead one until its lease ends
    engine.dispose()
    print(json.dumps({"name": name, "last_batch": worker.last_batch, **totals}), flush=True)


def poll(engine: Engine) -> tuple[str | None, int, int]:
    """The firing's status and cursor, and the ledger's last id (cheap: no count)."""
    with engine.connect() as conn:
        firing = conn.execute(text("SELECT status, cursor FROM schedule_firings")).first()
        last_send = conn.execute(text("SELECT last_value FROM sends_id_seq")).scalar()
    return (firing[0], firing[1], last_send) if firing else (None, 0, last_send)


def fan_out_alone(url: str, contacts: int) -> dict[str, Any]:
    """The fan-out by itself, in this process: the firing recorded, then its chunks until done
    (timed), against the floor's INSERT … SELECT of the enrollments, same database."""
    from engine.worker import triggers
    from engine.worker.versions import VersionCache

    now = datetime.now(UTC)
    upgrade(url)
    engine = make_engine(url)
    seed_contacts(engine, contacts, now)
    version_id = publish(engine, now)
    vacuum(engine)
    floor_enrollments, _ = floor(engine, version_id, now)
    vacuum(engine)
    with engine.connect() as conn:
        live = VersionCache().live(conn)
    with engine.begin() as conn:
        triggers.fire_schedules(conn, live, now)
    started, chunks = time.perf_counter(), 0
    while True:
        with engine.begin() as conn:
            counts = triggers.fan_out(conn, live, now)
        if not counts:
            break
        chunks += 1
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        found = conn.execute(text(
            "SELECT count(*), count(DISTINCT contact_id), (SELECT count(*) FROM journal "
            "WHERE kind = 'entered') FROM enrollments"
        )).one()  # fmt: skip
    engine.dispose()
    return {"floor": floor_enrollments, "seconds": seconds, "chunks": chunks, "found": found}


# ---------------------------------------------------------------- one broadcast
def broadcast(url: str, args: argparse.Namespace, kill: bool) -> dict[str, Any]:
    now = datetime.now(UTC)
    upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    seed_contacts(engine, args.contacts, now)
    version_id = publish(engine, now)
    vacuum(engine)
    out: dict[str, Any] = {"seed": time.perf_counter() - started}
    with engine.connect() as conn:
        seeded_sends = conn.execute(text("SELECT last_value FROM sends_id_seq")).scalar() or 0
    if not kill:
        out["floor_enrollments"], out["floor_sends"] = floor(engine, version_id, now)
        vacuum(engine)
    with tempfile.TemporaryDirectory(prefix="parcours-broadcast-") as tmp:
        workspace = write_workspace(Path(tmp))
        workers = [start_worker(url, workspace, args.lease, f"w{i}") for i in range(args.workers)]
        results: list[dict[str, Any]] = []
        fanned_at = None
        kills: list[str] = []
        eligible = args.contacts - count_refused(engine)
        try:
            while any(w.poll() is None for w in workers):
                status, cursor, last_send = poll(engine)
                if status == "done" and fanned_at is None:
                    fanned_at = time.time()
                if kill and not kills and status == "pending" and cursor > args.contacts // 3:
                    kills.append(f"mid fan-out (cursor {cursor})")
                    workers[0] = restart(workers[0], url, workspace, args.lease, "w0")
                if kill and len(kills) == 1 and last_send - seeded_sends > eligible // 2:
                    kills.append(f"mid-send ({last_send - seeded_sends} sends)")
                    workers[-1] = restart(workers[-1], url, workspace, args.lease, "w1")
                time.sleep(0.25)
            for w in workers:
                stdout, _ = w.communicate()
                results += [json.loads(line) for line in stdout.splitlines() if line]
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
    with engine.connect() as conn:
        fired = conn.execute(text("SELECT created_at FROM schedule_firings")).scalar_one()
    last = max(r["last_batch"] for r in results)
    print(f"  (fire → last ledger row {last - fired.timestamp():.1f} s; checking)", flush=True)
    out.update(fire_to_last=last - fired.timestamp(), kills=kills, workers=results,
               fan_out=(fanned_at or last) - fired.timestamp(), outcomes=outcomes(engine),
               checks=check(engine, args.contacts, eligible))  # fmt: skip
    engine.dispose()
    return out


def restart(
    worker: subprocess.Popen[str], url: str, workspace: Path, lease: int, name: str
) -> subprocess.Popen[str]:
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate()
    return start_worker(url, workspace, lease, name)


def count_refused(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM contacts WHERE {REFUSED}")).scalar())


def check(engine: Engine, contacts: int, eligible: int) -> dict[str, tuple[int, int]]:
    """Each check as (found, expected)."""
    queries = {
        "newsletters sent": "SELECT count(*) FROM sends WHERE scenario_id = 'newsletter'",
        "contacts sent to": "SELECT count(DISTINCT contact_id) FROM sends "
        "WHERE scenario_id = 'newsletter'",
        "sent to a refused contact": "SELECT count(*) FROM sends s JOIN contacts c "
        "ON c.id = s.contact_id WHERE s.scenario_id = 'newsletter' AND "
        + REFUSED.replace("id %", "c.id %"),
        "duplicate send keys": "SELECT count(*) FROM (SELECT send_key FROM sends "
        "GROUP BY send_key HAVING count(*) > 1) d",
        "enrollments": "SELECT count(*) FROM enrollments WHERE scenario_id = 'newsletter'",
        "contacts enrolled": "SELECT count(DISTINCT contact_id) FROM enrollments "
        "WHERE scenario_id = 'newsletter'",
        "entered journal rows": "SELECT count(*) FROM journal WHERE kind = 'entered'",
        "left due": "SELECT count(*) FROM enrollments WHERE status = 'active' AND due_at <= now()",
    }
    expected = {
        "newsletters sent": eligible, "contacts sent to": eligible,
        "sent to a refused contact": 0, "duplicate send keys": 0, "enrollments": contacts,
        "contacts enrolled": contacts, "entered journal rows": contacts, "left due": 0,
    }  # fmt: skip
    with engine.connect() as conn:
        # A render over its budget (wall clock: a worker descheduled on a busy machine can
        # overrun it) is journaled and the contact gets no send: counted, not lost.
        failed = int(conn.execute(text(RENDER_FAILED)).scalar())
        expected["newsletters sent"] = expected["contacts sent to"] = eligible - failed
        found = {k: (int(conn.execute(text(q)).scalar()), expected[k]) for k, q in queries.items()}
        return {"render_failed (journaled)": (failed, failed)} | found


def outcomes(engine: Engine) -> list[str]:
    """How the enrollments ended, and what became of eligible contacts that got no newsletter
    (enrollment and contact ids, statuses and reasons only)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # fresh statistics, or the planner takes the grown tables for empty ones (nested loops)
        conn.execute(text("ANALYZE enrollments, sends, journal"))
        ended = conn.execute(text(
            "SELECT status, coalesce(end_reason, ''), count(*) FROM enrollments "
            "WHERE scenario_id = 'newsletter' GROUP BY 1, 2 ORDER BY 3 DESC"
        )).all()  # fmt: skip
        decided = conn.execute(text(
            "SELECT kind, coalesce(reason, ''), count(*) FROM journal WHERE kind <> 'entered' "
            "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 12"
        )).all()  # fmt: skip
        missed = conn.execute(text(
            "WITH sent AS (SELECT contact_id FROM sends WHERE scenario_id = 'newsletter'), "
            "missed AS (SELECT e.id, e.contact_id, e.status, e.end_reason, e.step_id, e.due_at, "
            "e.attempt FROM enrollments e LEFT JOIN sent s ON s.contact_id = e.contact_id "
            "WHERE e.scenario_id = 'newsletter' AND s.contact_id IS NULL AND NOT "
            + REFUSED.replace("id %", "e.contact_id %") + " LIMIT 5) "
            "SELECT m.*, (SELECT string_agg(j.kind || ':' || coalesce(j.reason, ''), ' ' "
            "ORDER BY j.id) FROM journal j WHERE j.enrollment_id = m.id) FROM missed m"
        )).all()  # fmt: skip
    lines = [f"  enrollments {status} {reason}: {n}" for status, reason, n in ended]
    lines += [f"  journal {kind} {reason}: {n}" for kind, reason, n in decided]
    lines += [f"  no newsletter for eligible enrollment {tuple(r)}" for r in missed]
    return lines


def report(label: str, run: dict[str, Any], contacts: int) -> bool:
    print(f"\n{label}: seeded in {run['seed']:.1f} s" + (
        f"; killed {', '.join(run['kills'])}" if run["kills"] else ""))  # fmt: skip
    print(f"{'':<34}{'seconds':>9}{'rows/s':>10}{'vs floor':>10}")
    floor_total = run.get("floor_total")
    if "floor_enrollments" in run:
        fe, fs = run["floor_enrollments"], run["floor_sends"]
        print(f"{'floor: INSERT … SELECT enrollments':<34}{fe:>9.1f}{contacts / fe:>10.0f}")
        print(f"{'floor: INSERT … SELECT ledger rows':<34}{fs:>9.1f}{contacts / fs:>10.0f}")
        print(f"{'floor: both':<34}{fe + fs:>9.1f}{contacts / (fe + fs):>10.0f}{1.0:>10.2f}")
    ratio = lambda secs: f"{secs / floor_total:>10.1f}" if floor_total else ""  # noqa: E731
    print(f"{'engine: fire → fan-out done':<34}{run['fan_out']:>9.1f}"
          f"{contacts / run['fan_out']:>10.0f}")  # fmt: skip
    total = run["fire_to_last"]
    print(f"{'engine: fire → last ledger row':<34}{total:>9.1f}{contacts / total:>10.0f}"
          f"{ratio(total)}")  # fmt: skip
    for w in run["workers"]:
        print(f"  worker {w['name']}: {w['passes']} passes, {w['claimed']} claimed, "
              f"{w['sends']} sends, {w['stale']} stale, {w['entered']} entered")  # fmt: skip
    print("\n".join(run["outcomes"]))
    ok = True
    for name, (found, expected) in run["checks"].items():
        good = found == expected
        ok &= good
        print(f"  check {name:<28}{found:>10}  expected {expected:<10}{'ok' if good else 'FAILED'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lease", type=int, default=60, help="PARCOURS_LEASE_SECONDS")
    parser.add_argument("--no-kill", action="store_true", help="skip the run with kill -9")
    parser.add_argument("--fan-out-only", action="store_true",
                        help="time the fan-out alone against the enrollments' floor")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="w", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workspace, args.lease, args.name)
        return
    print(f"{args.contacts} contacts, {args.workers} worker processes, PostgreSQL, full gate; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip
    if args.fan_out_only:
        url, drop = fresh_database("bench_scaleout_fanout")
        try:
            got = fan_out_alone(url, args.contacts)
        finally:
            drop()
        fe, secs = got["floor"], got["seconds"]
        print(f"{'':<34}{'seconds':>9}{'rows/s':>10}{'vs floor':>10}")
        print(f"{'floor: INSERT … SELECT enrollments':<34}{fe:>9.1f}{args.contacts / fe:>10.0f}"
              f"{1.0:>10.2f}")  # fmt: skip
        print(f"{'fan-out, ' + str(got['chunks']) + ' chunks':<34}{secs:>9.1f}"
              f"{args.contacts / secs:>10.0f}{secs / fe:>10.2f}")  # fmt: skip
        good = tuple(got["found"]) == (args.contacts,) * 3
        print(f"  enrollments, contacts enrolled, entered journal rows: {tuple(got['found'])}"
              f" {'ok' if good else 'FAILED'}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
        sys.exit(0 if good else 1)
    ok = True
    runs = [("broadcast", False)] + ([] if args.no_kill else [("broadcast with kill -9", True)])
    floor_total = None
    for label, kill in runs:
        url, drop = fresh_database("bench_scaleout_broadcast")
        try:
            run = broadcast(url, args, kill)
        finally:
            drop()
        if "floor_enrollments" in run:
            floor_total = run["floor_enrollments"] + run["floor_sends"]
        run["floor_total"] = floor_total
        ok &= report(label, run, args.contacts)
        sys.stdout.flush()
    print(f"\nload {os.getloadavg()[0]:.2f}; checks {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
