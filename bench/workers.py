"""Several workers on PostgreSQL: the journey of bench/steps.py with 1, 2 and 4 worker processes.

The population of bench/steps.py (condition → send → wait, every enrollment due at once, every
contact opted in) is seeded once into a template database; each run gets a fresh copy of it.
--workers processes (this script, `--child`), each a real `Worker` with the full policy gate of
scenarios/policy.yaml, claim batches (`FOR UPDATE SKIP LOCKED`) until none is left. Timed from
the moment all are started and connected to the last batch committed; contact-steps per second
and the speed-up against 1 worker measured in the same run.

While a run goes, pg_stat_activity is sampled every 50 ms: the wait events of the workers'
backends (what they wait for when not running: a lock, the WAL, the client) and the locks not
granted (pg_locks), printed as shares of the samples. BENCH_PROFILE_DIR=dir writes each worker
process's cProfile to dir/.

Checks, each run: every enrollment advanced exactly once (at the wait step, claimed once; none
left due), one send per contact and no duplicate send key, three journal rows per contact; exit
status 1 when one fails.

    python bench/workers.py [--contacts 200000] [--workers 1,2,4] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.broadcast import PG_BASE, fresh_database
from bench.steps import NOW, seed
from engine.store.db import make_engine

LATER = NOW + timedelta(days=1)  # where the wait step leaves every enrollment
RENDER_FAILED = "SELECT count(*) FROM journal WHERE kind = 'error' AND reason = 'render_failed'"


def copy_of(template: str) -> tuple[str, Any]:
    """A fresh database copied from the seeded template (a file copy, not a new seed)."""
    admin = create_engine(
        make_url(PG_BASE).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"{template}_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(PG_BASE).set(database=name).render_as_string(hide_password=False), drop


# ---------------------------------------------------------------- worker processes
def child(url: str, batch: int, name: str) -> None:
    """A worker process: says "ready", waits for "go" on stdin, then claims batches at NOW
    until none is left; prints its counts and the wall time of its last commit as JSON."""
    from engine.config import load_settings
    from engine.policy.loader import load_policy_file
    from engine.policy.loading import full_gate_factory
    from engine.worker.runner import PassReport, Worker

    settings = load_settings(env={}).evolve(batch_size=batch)
    policy = load_policy_file(ROOT / "scenarios" / "policy.yaml")
    engine = make_engine(url)
    worker = Worker(engine, settings, gate_factory=full_gate_factory(settings, policy),
                    worker_id=f"{name}:{os.getpid()}")  # fmt: skip
    with engine.connect() as conn:  # connected before the clock starts
        conn.execute(text("SELECT 1"))
    print("ready", flush=True)
    sys.stdin.readline()
    before = resource.getrusage(resource.RUSAGE_SELF)
    report, last = PassReport(), time.time()
    while worker.process_batch(NOW, report):
        last = time.time()
    engine.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"name": name, "last": last, "cpu": cpu, "claimed": report.claimed,
                      "steps": report.steps, "sends": report.sends, "stale": report.stale,
                      "batches": report.batches}), flush=True)  # fmt: skip


def start_children(url: str, n: int, batch: int) -> list[subprocess.Popen[str]]:
    procs = []
    profiles = os.environ.get("BENCH_PROFILE_DIR")
    for i in range(n):
        command = [sys.executable, __file__, "--child", url, "--batch", str(batch),
                   "--name", f"w{i}"]  # fmt: skip
        if profiles:
            command[1:1] = ["-m", "cProfile", "-o", str(Path(profiles) / f"workers{n}-w{i}.prof")]
        procs.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, cwd=ROOT))  # fmt: skip
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker process did not start")
    return procs


class WaitSampler(threading.Thread):
    """Samples the wait events of the run's backends and the locks they wait for."""

    def __init__(self, url: str, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.every = every
        self.stop = threading.Event()
        self.waits: Counter[str] = Counter()
        self.locks: Counter[str] = Counter()
        self.samples = 0
        self.backend_cpu: dict[int, float] = {}  # backend pid → CPU seconds last seen

    def run(self) -> None:
        activity = text(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'running'), state, pid "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        waiting = text(
            "SELECT l.locktype || coalesce(':' || c.relname, '') FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid LEFT JOIN pg_class c ON c.oid = l.relation "
            "WHERE NOT l.granted AND a.datname = current_database()"
        )
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            while not self.stop.wait(self.every):
                self.samples += 1
                for event, state, pid in conn.execute(activity):
                    # idle: the backend waits for its worker (Python, or between transactions)
                    self.waits["client (idle)" if state.startswith("idle") else event] += 1
                    self.backend_cpu[pid] = cpu_seconds(pid, self.backend_cpu.get(pid, 0.0))
                for (lock,) in conn.execute(waiting):
                    self.locks[lock] += 1
        self.engine.dispose()


def cpu_seconds(pid: int, default: float) -> float:
    """User + system CPU of a process of this machine (/proc), or `default` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return default
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, n: int, batch: int) -> dict[str, Any]:
    procs = start_children(url, n, batch)
    sampler = WaitSampler(url)
    sampler.start()
    started = time.time()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        stdout, _ = p.communicate()
        results.append(json.loads(stdout.strip().splitlines()[-1]))
        if p.returncode:
            raise RuntimeError(f"worker process exited with {p.returncode}")
    sampler.stop.set()
    sampler.join()
    return {
        "seconds": max(r["last"] for r in results) - started,
        "steps": sum(r["steps"] for r in results),
        "stale": sum(r["stale"] for r in results),
        "claimed": [r["claimed"] for r in results],
        "waits": sampler.waits,
        "locks": sampler.locks,
        "samples": sampler.samples,
        "worker_cpu": sum(r["cpu"] for r in results),
        "backend_cpu": sum(sampler.backend_cpu.values()),
    }


def check(engine: Engine, contacts: int) -> dict[str, tuple[int, int]]:
    """Each check as (found, expected)."""
    queries = {
        "advanced to the wait": "SELECT count(*) FROM enrollments WHERE step_id = 'pause' "
        "AND status = 'active' AND due_at = :later AND lease_owner IS NULL",
        "claimed more than once": "SELECT count(*) FROM enrollments WHERE attempt <> 1",
        "left due": "SELECT count(*) FROM enrollments WHERE status = 'active' AND due_at <= :now",
        "sends": "SELECT count(*) FROM sends",
        "contacts sent to": "SELECT count(DISTINCT contact_id) FROM sends",
        "duplicate send keys": "SELECT count(*) FROM (SELECT send_key FROM sends "
        "GROUP BY send_key HAVING count(*) > 1) d",
        "journal rows": "SELECT count(*) FROM journal",
    }
    expected = {
        "advanced to the wait": contacts, "claimed more than once": 0, "left due": 0,
        "sends": contacts, "contacts sent to": contacts, "duplicate send keys": 0,
        "journal rows": 3 * contacts,
    }  # fmt: skip
    params = {"now": NOW, "later": LATER}
    with engine.connect() as conn:
        # A render over its budget (wall clock: a worker descheduled on a busy machine can
        # overrun it) is journaled and the contact gets no send: counted, not lost.
        failed = int(conn.execute(text(RENDER_FAILED)).scalar())
        expected["sends"] = expected["contacts sent to"] = contacts - failed
        return {"render_failed (journaled)": (failed, failed)} | {
            k: (int(conn.execute(text(q), params).scalar()), expected[k])
            for k, q in queries.items()
        }


def shares(counter: Counter[str], samples: int, top: int = 6) -> str:
    if not samples:
        return "-"
    return ", ".join(f"{k} {v / samples:.2f}" for k, v in counter.most_common(top)) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--name", default="w", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.batch, args.name)
        return
    counts = [int(n) for n in args.workers.split(",")]
    print(f"{args.contacts} contacts, 3 steps each, full gate, PostgreSQL, batches of "
          f"{args.batch}; load {os.getloadavg()[0]:.2f} at {datetime.now():%H:%M}")  # fmt: skip
    template, drop_template = fresh_database("bench_scaleout_workers")
    ok, rows, base = True, [], None
    try:
        seed(template, args.contacts)
        for n in counts:
            url, drop = copy_of(make_url(template).database or "")
            try:
                result = run(url, n, args.batch)
                engine = make_engine(url)
                result["checks"] = check(engine, args.contacts)
                with engine.connect() as conn:
                    result["journal"] = conn.execute(text(
                        "SELECT kind, coalesce(step_id, ''), coalesce(reason, ''), count(*) "
                        "FROM journal GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 8"
                    )).all()  # fmt: skip
                engine.dispose()
            finally:
                drop()
            rate = result["steps"] / result["seconds"]
            base = base or (rate if n == counts[0] else None)
            rows.append((n, result, rate))
            print(f"\n{n} worker(s): {result['seconds']:.1f} s, {rate:.0f} steps/s"
                  f"{f', {rate / base:.2f}x' if base else ''}; claimed {result['claimed']}, "
                  f"{result['stale']} stale")  # fmt: skip
            print(f"  backend states (per sample, {result['samples']} samples): "
                  f"{shares(result['waits'], result['samples'])}")  # fmt: skip
            print(f"  locks waited for: {shares(result['locks'], result['samples'])}")
            wcpu, bcpu = result["worker_cpu"], result["backend_cpu"]
            per = 1000 / result["steps"]
            print(f"  CPU: worker processes {wcpu:.1f} s, their PostgreSQL backends {bcpu:.1f} s "
                  f"({wcpu * per:.3f} + {bcpu * per:.3f} s per 1000 steps); "
                  f"{(wcpu + bcpu) / result['seconds']:.2f} cores busy on average")  # fmt: skip
            journal = ", ".join(f"{k} {st} {r}: {c}" for k, st, r, c in result["journal"])
            print(f"  journal: {journal}")
            for name, (found, expected) in result["checks"].items():
                good = found == expected
                ok &= good
                print(f"  check {name:<24}{found:>10}  expected {expected:<10}"
                      f"{'ok' if good else 'FAILED'}")  # fmt: skip
            sys.stdout.flush()
    finally:
        drop_template()
    # What the CPU accounting allows on a machine of `cores` cores doing nothing else: a worker
    # and its backend take turns (one core at most); n workers use min(n, cores) cores.
    cores = os.cpu_count() or 1
    print(f"\n{'workers':<9}{'seconds':>9}{'steps':>10}{'steps/s':>10}{'vs 1 worker':>13}"
          f"{'CPU s/1k steps':>16}{f'CPU-bound on {cores} idle cores':>28}")  # fmt: skip
    first = None
    for n, result, rate in rows:
        speedup = f"{rate / base:>13.2f}" if base else f"{'':>13}"
        cpu = (result["worker_cpu"] + result["backend_cpu"]) / result["steps"]
        bound = min(n, cores) / cpu
        first = first or bound
        print(f"{n:<9}{result['seconds']:>9.1f}{result['steps']:>10}{rate:>10.0f}{speedup}"
              f"{cpu * 1000:>16.3f}{bound:>15.0f} steps/s {bound / first:>5.2f}x")  # fmt: skip
    print(f"load {os.getloadavg()[0]:.2f}; checks {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
