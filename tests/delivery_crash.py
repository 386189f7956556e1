"""Pieces of a delivery crash drill, shared by the kill test and bench/delivery_kill.py.

A receiver on 127.0.0.1 that counts requests per send key (and can hold one request
unanswered, so a delivery process can be killed while the provider has the message), a workspace
whose journey makes two webhook sends per contact to it, and `parcours worker` in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import upsert_contacts
from engine.config import load_settings
from engine.store.models import Send
from engine.worker.enroll import Candidate, enroll
from engine.worker.runner import Worker
from engine.worker.versions import VersionCache, publish_dir
from tests.serving import serving

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = """\
format_version: 1
id: crm-handoff
name: CRM hand-off
objective: other
kind: transactional
triggers:
  - manual: true
steps:
  lead:
    type: webhook
    url: {url}/lead
    payload: {{contact: "{{{{ contact.external_id }}}}", stage: lead}}
    next: qualified
  qualified:
    type: webhook
    url: {url}/qualified
    payload: {{contact: "{{{{ contact.external_id }}}}", stage: qualified}}
"""


class CountingReceiver(ThreadingHTTPServer):
    """Answers 200 to every request and counts them per `Idempotency-Key`.

    `hold_from`: the request of that number (1 = the first) and every later one stay
    unanswered until `release()`; `held` is set when the first of them has arrived.
    """

    daemon_threads = False  # server_close joins the handlers: no thread outlives its drill

    def __init__(self, hold_from: int | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.hold_from = hold_from
        self.held = threading.Event()
        self._released = threading.Event()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Counting)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def arrived(self, key: str) -> bool:
        """Count one request; True when it must be held."""
        with self._lock:
            self.counts[key] += 1
            hold = self.hold_from is not None and self.requests >= self.hold_from
        if hold:
            self.held.set()
        return hold

    def release(self) -> None:
        """Answer held requests (and stop holding new ones)."""
        self.hold_from = None
        self._released.set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a killed client hangs up on its held request: expected


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingReceiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.arrived(self.headers.get("Idempotency-Key", "")):
            self.server._released.wait(60)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def counting_receiver(hold_from: int | None = None) -> Iterator[CountingReceiver]:
    server = CountingReceiver(hold_from)
    with serving(server):
        try:
            yield server
        finally:
            server.release()  # held handlers answer, so closing can join them


def write_workspace(folder: Path, receiver_url: str, *, idempotent: bool) -> Path:
    """A scenarios folder: the two-webhook journey and a channels.yaml delivering webhooks."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "crm-handoff.yaml").write_text(SCENARIO.format(url=receiver_url))
    (folder / "channels.yaml").write_text(
        "webhook:\n"
        "  provider: webhook\n"
        "  secret: drill-secret\n"
        "  allow: [127.0.0.1]\n"
        "  allow_http: true\n" + ("  idempotent: true\n" if idempotent else "")
    )
    return folder


def environment(db_url: str, workspace: Path, lease_seconds: int) -> dict[str, str]:
    """PARCOURS_* variables of a worker on that database and workspace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        PARCOURS_DATABASE_URL=db_url,
        PARCOURS_SCENARIOS_DIR=str(workspace),
        PARCOURS_DATA_DIR=str(workspace.parent),
        PARCOURS_DELIVERY_LEASE_SECONDS=str(lease_seconds),
        PARCOURS_TICK_SECONDS="0.1",
        PARCOURS_SECRET_KEY="d" * 32,
        PARCOURS_LOG_LEVEL="WARNING",
    )
    return env


def queue_sends(engine: Engine, env: dict[str, str], contacts: int, now: datetime) -> int:
    """Publish the journey, enroll `contacts` contacts and run the worker until every webhook
    send is queued in the ledger; the number of sends."""
    settings = load_settings(env)
    with Session(engine) as session, session.begin():
        publish_dir(session, settings.scenarios_dir)
    rows = [{"external_id": f"c{i}", "email": f"c{i}@example.org"} for i in range(contacts)]
    with engine.begin() as conn:
        upsert_contacts(conn, rows, now)
        ((vid, scenario),) = VersionCache().live(conn)
        ids = conn.execute(text("SELECT id FROM contacts ORDER BY id")).scalars().all()
        enroll(conn, [Candidate(vid, scenario, i, "once", now, None, "manual") for i in ids], now)
    worker = Worker(engine, settings, delivering=("webhook",))
    while worker.run_once(now).claimed:
        pass
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Send)).scalar_one())


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`parcours worker` (journeys and the delivery loop) in a child process."""
    return subprocess.Popen(
        [sys.executable, "-c", "from designer.cli import main; main()", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def statuses(engine: Engine) -> dict[str, list[str]]:
    """Send keys by ledger status."""
    found: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for key, status in conn.execute(select(Send.send_key, Send.status)):
            found.setdefault(status, []).append(key)
    return found
