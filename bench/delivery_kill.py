"""Delivery under kill -9: what a crash of a delivery process strands, and how long a drain takes.

On PostgreSQL, a journey queues two webhook sends per contact to a local receiver that counts
requests per send key. Two `parcours worker` processes deliver them; one of them, at random, is
killed with SIGKILL at a random moment (once at least 20 requests arrived since the last kill)
and started again, `--kills` times; then the ledger is
drained. Printed: kills, sends, ambiguous, ambiguous that reached the receiver, duplicates the
receiver got (a send key more than once), lost (a send neither sent nor ambiguous once drained,
or sent without reaching the receiver), and the time from the last kill until nothing is queued
or in flight.

    python bench/delivery_kill.py [--contacts 1000] [--kills 10] [--lease 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import secrets
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from engine.store.db import make_engine, upgrade
from tests.delivery_crash import (
    counting_receiver,
    environment,
    queue_sends,
    start_worker,
    statuses,
    write_workspace,
)

PG = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FLOW = 20  # requests the receiver must get between two kills


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease", type=int, default=30, help="PARCOURS_DELIVERY_LEASE_SECONDS")
    parser.add_argument("--pg", default=PG, help="base PostgreSQL URL (a database is created)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    admin = create_engine(make_url(args.pg).set(drivername="postgresql+psycopg"))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    name = f"parcours_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    try:
        run(url, args, rng)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(url: str, args: argparse.Namespace, rng: random.Random) -> None:
    upgrade(url)
    engine = make_engine(url)
    with tempfile.TemporaryDirectory() as tmp, counting_receiver() as receiver:
        workspace = write_workspace(Path(tmp) / "scenarios", receiver.url, idempotent=False)
        env = environment(url, workspace, args.lease)
        total = queue_sends(engine, env, args.contacts, NOW)
        print(f"{total} webhook sends queued for {args.contacts} contacts", flush=True)
        workers = [start_worker(env), start_worker(env)]
        started = time.monotonic()
        kills = 0
        last_kill = started
        while kills < args.kills:
            # A random moment once deliveries flow again (a process killed while it starts
            # holds nothing), and never after the last request.
            flowing = receiver.requests + FLOW
            while receiver.requests < min(flowing, total - FLOW):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
            if receiver.requests >= total - FLOW:
                break
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            kills += 1
            last_kill = time.monotonic()
            workers[victim] = start_worker(env)
        while True:
            by_status = statuses(engine)
            if not by_status.get("queued") and not by_status.get("sending"):
                break
            time.sleep(0.2)
        drained = time.monotonic()
        for worker in workers:
            worker.terminate()
            worker.wait()
        counts = dict(receiver.counts)
    engine.dispose()
    sent = by_status.get("sent", [])
    ambiguous = by_status.get("ambiguous", [])
    settled = len(sent) + len(ambiguous)
    print(f"kills: {kills}")
    print(f"sends: {total}")
    print(f"ambiguous: {len(ambiguous)}")
    print(f"ambiguous that reached the server: {sum(1 for k in ambiguous if k in counts)}")
    print(f"duplicates received by the server: {sum(1 for n in counts.values() if n > 1)}")
    print(f"lost: {total - settled + sum(1 for k in sent if k not in counts)}")
    print(f"time to drain after the last kill: {drained - last_kill:.1f} s")
    print(f"whole run: {drained - started:.1f} s (lease {args.lease} s)")


if __name__ == "__main__":
    main()
