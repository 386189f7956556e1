"""Worker memory with many enrollments waiting: the RSS of `parcours worker` at 10,000 and at
1,000,000 enrollments, after its passes over them.

A fresh PostgreSQL database per size holds a journey email → wait 30 days, the contacts (with
an email opt-in) and their enrollments, all loaded set-based (`generate_series`): `--due` of
them at the email, due now, the rest at the wait, due in a month (`--due all`: every one due,
so the worker's tick goes over all of them in batches). `parcours worker` (the real process:
scheduler, tick, heartbeat, the hourly jobs) starts on it; once every due enrollment has its
send and a few more ticks ran, the script reads the worker's VmHWM (peak) and VmRSS from
/proc/<pid>/status. The small size is the baseline: the figure is the peak at the large size
over the peak at the small one (target ≤ 1.2: the worker reads what is due, in batches, never
a table into Python).

Checks: every due enrollment got exactly one send (no duplicate key), none of the waiting ones
moved; the script exits 1 otherwise.

    python bench/memory.py [--sizes 10000,1000000] [--due 2000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from engine.store.db import make_engine, upgrade
from engine.worker.versions import publish_dir

PG = os.environ.get("PARCOURS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCENARIO = """\
format_version: 1
id: memory
name: Memory journey
objective: other
triggers:
  - manual: true
steps:
  mail:
    type: send
    channel: email
    content:
      subject: "Hello {{ contact.external_id }}"
      text: "Your score is {{ contact.score }}."
    next: pause
  pause:
    type: wait
    duration: 30d
"""
SETTLE_SECONDS = 5.0  # ticks after the last send, so the periodic jobs have run too


def load(engine: Engine, workspace: Path, size: int, due: int, now: datetime) -> None:
    """The journey, `size` contacts opted in to email, and their enrollments, set-based."""
    with Session(engine) as session, session.begin():
        publish_dir(session, workspace)
    later = now + timedelta(days=30)
    with engine.begin() as conn:
        version = conn.execute(text("SELECT current_version_id FROM scenarios")).scalar_one()
        params = {"n": size, "due": due, "now": now, "later": later, "v": version}
        for statement in (
            "INSERT INTO contacts (id, external_id, email, timezone, attributes, tags, score, "
            "opted_out, anonymous, created_at, updated_at) SELECT g, 'c' || g, "
            "'c' || g || '@example.org', 'Europe/Paris', '{}', '[]', g % 100, false, false, "
            ":now, :now FROM generate_series(1, :n) g",
            "SELECT setval(pg_get_serial_sequence('contacts', 'id'), :n)",
            "INSERT INTO consent_states (contact_id, channel, topic, state, since, record_id) "
            "SELECT g, 'email', '*', 'opted_in', :now, 0 FROM generate_series(1, :n) g",
            "INSERT INTO enrollments (scenario_id, version_id, contact_id, status, step_id, "
            "step_entered_at, due_at, deadline, entry_key, entered_at, visits, vars, attempt) "
            "SELECT 'memory', :v, g, 'active', CASE WHEN g <= :due THEN 'mail' ELSE 'pause' END, "
            ":now, CASE WHEN g <= :due THEN :now ELSE :later END, "
            "CASE WHEN g <= :due THEN NULL ELSE :later END, 'memory', :now, "
            "CASE WHEN g <= :due THEN 0 ELSE 3 END, '{}', 0 FROM generate_series(1, :n) g",
        ):
            conn.execute(text(statement), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def counts(engine: Engine) -> tuple[int, int, int, int]:
    """Sends, distinct send keys, enrollments still waiting at the wait step untouched, and
    enrollments that ran (claimed once)."""
    with engine.connect() as conn:
        sends, keys = conn.execute(
            text("SELECT count(*), count(DISTINCT send_key) FROM sends")
        ).one()
        untouched = "step_id = 'pause' AND visits = 3 AND attempt = 0"
        waiting = conn.execute(
            text(f"SELECT count(*) FROM enrollments WHERE {untouched}")
        ).scalar_one()
        ran = conn.execute(text("SELECT count(*) FROM enrollments WHERE attempt > 0")).scalar_one()
    return int(sends), int(keys), int(waiting), int(ran)


def measure(size: int, due: int, tmp: Path) -> tuple[dict[str, float], list[str]]:
    name = f"bench_latency_mem_{secrets.token_hex(4)}"
    admin = create_engine(make_url(PG).set(drivername="postgresql+psycopg"))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(PG).set(database=name).render_as_string(hide_password=False)
    engine = None
    worker = None
    try:
        workspace = tmp / f"scenarios-{size}"
        workspace.mkdir()
        (workspace / "memory.yaml").write_text(SCENARIO)
        (workspace / "policy.yaml").write_text((ROOT / "scenarios" / "policy.yaml").read_text())
        upgrade(url)
        engine = make_engine(url)
        started = time.perf_counter()
        load(engine, workspace, size, due, datetime.now(UTC) - timedelta(minutes=1))
        loaded = time.perf_counter() - started
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
        env.update(
            PARCOURS_DATABASE_URL=url, PARCOURS_SCENARIOS_DIR=str(workspace),
            PARCOURS_DATA_DIR=str(tmp / f"data-{size}"), PARCOURS_SECRET_KEY="m" * 32,
            PARCOURS_LOG_LEVEL="WARNING", PARCOURS_TICK_SECONDS="1",
        )  # fmt: skip
        log = (tmp / f"worker-{size}.log").open("wb")
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "designer", "worker"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
        while counts(engine)[0] < due and time.perf_counter() - started < 3600:
            if worker.poll() is not None:
                raise SystemExit(f"the worker stopped; see {log.name}")
            time.sleep(0.2)
        done = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
        rss = memory_of(worker.pid)
        sends, keys, waiting, ran = counts(engine)
        failures = []
        if sends != due or ran != due:
            failures.append(f"{size}: {due} due, {ran} ran, {sends} sends")
        if keys != sends:
            failures.append(f"{size}: {sends - keys} duplicate send keys")
        if waiting != size - due:
            failures.append(f"{size}: {size - due - waiting} waiting enrollments moved")
        figures = {"load": loaded, "done": done, "hwm": rss["VmHWM"], "rss": rss["VmRSS"]}
        return figures, failures
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if engine is not None:
            engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,1000000", help="enrollments; the first: baseline")
    parser.add_argument(
        "--due", default="2000", help="enrollments due now at every size, or 'all' (a tick "
        "over every enrollment, in batches)",
    )  # fmt: skip
    args = parser.parse_args()
    # a SIGTERM runs the clean-up too: the child processes stop, the databases are dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"PostgreSQL, {args.due} enrollments due, the rest waiting 30 days")
    due = {size: size if args.due == "all" else min(size, int(args.due)) for size in sizes}
    results = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="parcours-memory-") as tmp:
        for size in sizes:
            figures, failed = measure(size, due[size], Path(tmp))
            failures += failed
            results.append((size, figures))
            print(f"  {size} loaded in {figures['load']:.1f} s, due sent "
                  f"{figures['done']:.1f} s after the worker started", flush=True)  # fmt: skip
    base = results[0][1]["hwm"]
    print(f"{'enrollments':>12}{'due':>10}{'sent in':>10}{'peak RSS':>12}{'RSS now':>12}"
          f"{'peak / base':>13}")  # fmt: skip
    for size, f in results:
        print(f"{size:>12,}{due[size]:>10,}{f['done']:>9.1f}s{f['hwm'] / 1024:>8.1f} MiB"
              f"{f['rss'] / 1024:>8.1f} MiB{f['hwm'] / base:>13.2f}")  # fmt: skip
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for failure in failures:
        print(f"FAILED {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
