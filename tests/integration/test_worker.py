"""The worker against real databases: crashes, fencing, version pinning, concurrent workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import clean_event, record_events, upsert_contacts
from engine.config import load_settings
from engine.runtime.interpreter import Interpreter
from engine.store.db import make_engine
from engine.store.models import Enrollment, JournalEntry, Send
from engine.worker.enroll import Candidate, enroll
from engine.worker.runner import PassReport, Worker, _StaleBatch
from engine.worker.versions import VersionCache, publish_bundle

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

TWO_SENDS = """\
format_version: 1
id: two-sends
name: Two sends
objective: other
triggers:
  - manual: true
steps:
  first:
    type: send
    channel: email
    content:
      subject: "One for {{ contact.first_name }}"
      text: first
    next: second
  second:
    type: send
    channel: email
    content:
      subject: Two
      text: second
"""


def _publish(engine: Engine, yaml_text: str, now: datetime = NOW) -> int:
    with Session(engine) as session, session.begin():
        return publish_bundle(session, {"yaml": yaml_text, "templates": {}}, now=now).version_id


def _population(engine: Engine, count: int, now: datetime = NOW) -> None:
    rows = [
        {
            "external_id": f"c{i}",
            "email": f"c{i}@example.com",
            "attributes": {"first_name": f"N{i}"},
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        upsert_contacts(conn, rows, now)


def _enroll_all(engine: Engine, scenario_id: str, now: datetime = NOW) -> None:
    with engine.begin() as conn:
        live = {sc.id: (vid, sc) for vid, sc in VersionCache().live(conn)}
        vid, scenario = live[scenario_id]
        ids = conn.execute(text("SELECT id FROM contacts ORDER BY id")).scalars().all()
        enroll(
            conn, [Candidate(vid, scenario, cid, "once", now, None, "manual") for cid in ids], now
        )


def _run_worker(url: str, fault: str | None, now: datetime) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(PARCOURS_DATABASE_URL=url, PARCOURS_BATCH_SIZE="50", PARCOURS_LEASE_SECONDS="1")
    if fault:
        env["PARCOURS_FAULT_POINT"] = fault
    script = (
        "import sys; from datetime import datetime;"
        "from engine.config import load_settings; from engine.worker.runner import Worker;"
        "from engine.store.db import make_engine;"
        "s = load_settings(); w = Worker(make_engine(s.db_url), s);"
        "w.run_once(datetime.fromisoformat(sys.argv[1]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, now.isoformat()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr)
    return proc.returncode


def test_killed_worker_loses_nothing_and_sends_nothing_twice(engine_url: str) -> None:
    """SIGKILL at each fault point, restart, and every enrollment ends with exactly two sends."""
    engine = make_engine(engine_url)
    _publish(engine, TWO_SENDS)
    _population(engine, 400)
    _enroll_all(engine, "two-sends")
    now = NOW
    kills = 0
    for fault in ("before_commit:2", "after_commit:3", "after_claim:2", "before_commit:1"):
        now += timedelta(seconds=2)  # past the dead worker's 1 s lease
        kills += _run_worker(engine_url, fault, now) == -signal.SIGKILL
    assert kills == 4, "every fault point must have killed its worker"
    with engine.connect() as conn:
        done_early = conn.execute(
            select(func.count()).select_from(Enrollment).where(Enrollment.status == "completed")
        ).scalar_one()
    assert 0 < done_early < 400, "the kills must have happened mid-run"
    now += timedelta(seconds=2)
    assert _run_worker(engine_url, None, now) == 0
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(select(Enrollment.status, func.count()).group_by(Enrollment.status)).all()
        )
        per_step = conn.execute(
            select(Send.enrollment_id, Send.step_id, func.count()).group_by(
                Send.enrollment_id, Send.step_id
            )
        ).all()
        journal_sends = conn.execute(
            select(func.count()).select_from(JournalEntry).where(JournalEntry.kind == "send")
        ).scalar_one()
        leftovers = conn.execute(
            select(func.count()).select_from(Enrollment).where(Enrollment.lease_owner.is_not(None))
        ).scalar_one()
    engine.dispose()
    assert statuses == {"completed": 400}, "no enrollment lost or stuck"
    assert len(per_step) == 800 and all(n == 1 for _, _, n in per_step), (
        "one send per step, never two"
    )
    assert journal_sends == 800, "the journal matches the ledger"
    assert leftovers == 0


def test_stale_worker_writes_nothing(engine_url: str) -> None:
    """A worker whose lease ran out is fenced off: the reclaiming worker's work stands alone."""
    engine = make_engine(engine_url)
    _publish(engine, TWO_SENDS)
    _population(engine, 10)
    _enroll_all(engine, "two-sends")
    settings = load_settings(env={}).evolve(lease_seconds=60)
    slow, fast = (
        Worker(engine, settings, worker_id="slow"),
        Worker(engine, settings, worker_id="fast"),
    )
    rows = slow.claim(NOW)
    assert len(rows) == 10
    assert fast.claim(NOW + timedelta(seconds=30)) == [], "a live lease is respected"
    report = PassReport()
    assert fast.process_batch(NOW + timedelta(seconds=61), report) == 10
    with pytest.raises(_StaleBatch):
        slow._advance_and_save(rows, NOW + timedelta(seconds=62))
    with engine.connect() as conn:
        sends = conn.execute(select(func.count()).select_from(Send)).scalar_one()
    engine.dispose()
    assert report.sends == 20 and sends == 20


def test_new_version_leaves_running_enrollments_on_theirs(engine_url: str) -> None:
    engine = make_engine(engine_url)
    v1 = _publish(
        engine,
        TWO_SENDS.replace("next: second", "next: pause").replace(
            "  second:", "  pause:\n    type: wait\n    duration: 1d\n    next: second\n  second:"
        ),
    )
    _population(engine, 3)
    _enroll_all(engine, "two-sends")
    worker = Worker(engine, load_settings(env={}))
    worker.run_once(NOW)
    v2 = _publish(
        engine, TWO_SENDS.replace("subject: Two", "subject: Two (v2)"), NOW + timedelta(hours=1)
    )
    assert v2 != v1
    worker.run_once(NOW + timedelta(days=1, seconds=1))
    with engine.connect() as conn:
        versions = set(conn.execute(select(Enrollment.version_id)).scalars())
        subjects = list(conn.execute(select(Send.payload)).scalars())
    engine.dispose()
    assert versions == {v1}
    assert {p["parts"]["subject"] for p in subjects} == {
        "One for N0",
        "One for N1",
        "One for N2",
        "Two",
    }


def test_event_wakes_a_waiting_enrollment_at_once(engine_url: str) -> None:
    scenario = """\
format_version: 1
id: waiter
name: Waiter
objective: other
triggers:
  - event: cart_abandoned
goal:
  event: order_placed
steps:
  hold:
    type: wait_event
    event: email_clicked
    timeout: 3d
    on_event: thanks
    on_timeout: null
  thanks:
    type: send
    channel: email
    content:
      subject: Thanks
      text: clicked
"""
    engine = make_engine(engine_url)
    _publish(engine, scenario)
    worker = Worker(engine, load_settings(env={}))
    with engine.begin() as conn:
        record_events(
            conn,
            [
                {
                    "contact": "a",
                    "name": "cart_abandoned",
                    "properties": {},
                    "occurred_at": NOW,
                    "event_key": None,
                },
                {
                    "contact": "b",
                    "name": "cart_abandoned",
                    "properties": {},
                    "occurred_at": NOW,
                    "event_key": None,
                },
            ],
            NOW,
        )
    worker.run_once(NOW)
    later = NOW + timedelta(minutes=5)
    with engine.begin() as conn:
        record_events(
            conn,
            [
                {
                    "contact": "a",
                    "name": "email_clicked",
                    "properties": {},
                    "occurred_at": later,
                    "event_key": None,
                },
                {
                    "contact": "b",
                    "name": "order_placed",
                    "properties": {},
                    "occurred_at": later,
                    "event_key": None,
                },
            ],
            later,
        )
    report = worker.run_once(later)
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                text(
                    "SELECT c.external_id, e.status FROM enrollments e JOIN contacts c ON c.id = e.contact_id"
                )
            ).all()
        )
    engine.dispose()
    assert report.triggers["woken"] == 2
    assert rows == {"a": "completed", "b": "converted"}


@pytest.mark.pg
@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.pg)], indirect=True
)
def test_two_workers_on_postgresql_share_the_work(engine_url: str) -> None:
    """Two workers claim concurrently (SKIP LOCKED): each enrollment advanced once, sends once."""
    engine = make_engine(engine_url)
    _publish(engine, TWO_SENDS)
    _population(engine, 3000)
    _enroll_all(engine, "two-sends")
    settings = load_settings(env={}).evolve(batch_size=100)
    reports = [PassReport(), PassReport()]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            worker = Worker(make_engine(engine_url), settings, worker_id=f"w{index}")
            while worker.process_batch(NOW, reports[index]):
                pass
            worker.engine.dispose()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    with engine.connect() as conn:
        sends = conn.execute(select(func.count()).select_from(Send)).scalar_one()
        done = conn.execute(
            select(func.count()).select_from(Enrollment).where(Enrollment.status == "completed")
        ).scalar_one()
    engine.dispose()
    assert not errors
    assert reports[0].claimed > 0 and reports[1].claimed > 0, "both workers took batches"
    assert reports[0].claimed + reports[1].claimed == 3000
    assert done == 3000 and sends == 6000


def test_an_event_between_trigger_and_pass_satisfies_a_first_wait(engine_url: str) -> None:
    scenario = """\
format_version: 1
id: first-wait
name: First wait
objective: other
triggers:
  - event: signed_up
steps:
  confirm:
    type: wait_event
    event: email_confirmed
    timeout: 1d
    on_event: null
    on_timeout: reminder
  reminder:
    type: send
    channel: email
    content:
      subject: Please confirm
      text: confirm
"""
    engine = make_engine(engine_url)
    _publish(engine, scenario)
    with engine.begin() as conn:
        record_events(conn, [
            {"contact": "a", "name": "signed_up", "properties": {}, "occurred_at": NOW, "event_key": None},
            {"contact": "a", "name": "email_confirmed", "properties": {}, "occurred_at": NOW + timedelta(seconds=20), "event_key": None},
        ], NOW + timedelta(seconds=30))  # fmt: skip
    Worker(engine, load_settings(env={})).run_once(NOW + timedelta(seconds=30))
    with engine.connect() as conn:
        status = conn.execute(select(Enrollment.status)).scalar_one()
    engine.dispose()
    assert status == "completed", "the confirmation that came before the pass counts"


def test_one_broken_enrollment_does_not_hold_back_its_batch(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(engine_url)
    _publish(engine, TWO_SENDS)
    _population(engine, 20)
    _enroll_all(engine, "two-sends")
    original = Interpreter.advance

    def flaky(self: Interpreter, state, contact, history, now):  # type: ignore[no-untyped-def]
        if contact.external_id == "c7":
            raise ZeroDivisionError("a bug in one step")
        return original(self, state, contact, history, now)

    monkeypatch.setattr(Interpreter, "advance", flaky)
    Worker(engine, load_settings(env={})).run_once(NOW)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(select(Enrollment.status, func.count()).group_by(Enrollment.status)).all()
        )
        failure = conn.execute(
            select(JournalEntry.reason, JournalEntry.data).where(JournalEntry.kind == "failed")
        ).one()
    engine.dispose()
    assert statuses == {"completed": 19, "failed": 1}
    assert failure.reason == "internal_error" and failure.data == {"error": "ZeroDivisionError"}


def test_a_long_pass_leases_from_the_time_it_has_run(engine_url: str) -> None:
    """A pass that has run past a lease still hands out whole leases: another worker does not
    claim (and redo) the batch it has just taken."""
    engine = make_engine(engine_url)
    _publish(engine, TWO_SENDS)
    _population(engine, 2)
    _enroll_all(engine, "two-sends")
    settings = load_settings(env={}).evolve(lease_seconds=20, batch_size=2)
    busy, other = (
        Worker(engine, settings, worker_id="busy"),
        Worker(engine, settings, worker_id="other"),
    )
    busy._pass = (NOW, time.monotonic() - 100)  # its pass at NOW started 100 s ago
    taken = busy.claim(NOW)
    assert len(taken) == 2
    with engine.connect() as conn:
        until = conn.execute(
            select(Enrollment.lease_until).where(Enrollment.id == taken[0].id)
        ).scalar_one()
    assert until.replace(tzinfo=UTC) >= NOW + timedelta(seconds=119)
    # Another worker's pass 30 s later: busy's lease, taken 100 s into its pass, still holds.
    assert other.claim(NOW + timedelta(seconds=30)) == []
    engine.dispose()


def test_a_steady_flow_of_events_does_not_keep_a_pass_from_its_enrollments(
    engine_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk of the trigger pass finds the events posted while the previous one ran: the
    pass moves on to the due enrollments after a partial chunk instead of draining the inbox."""
    from engine.worker import runner

    engine = make_engine(engine_url)
    _publish(engine, TWO_SENDS)
    _population(engine, 3)
    _enroll_all(engine, "two-sends")
    real = runner.process_events
    chunks: list[int] = []

    def flowing(conn: Any, *args: Any, **kwargs: Any) -> dict[str, int]:
        counts = real(conn, *args, **kwargs)
        chunks.append(counts.get("events", 0))
        if len(chunks) < 50:  # one more event arrives while each chunk runs
            record_events(conn, [clean_event({"contact": "c0", "name": "page_viewed"}, NOW)], NOW)
        return counts

    with engine.begin() as conn:  # the flow has started
        record_events(conn, [clean_event({"contact": "c1", "name": "page_viewed"}, NOW)], NOW)
    monkeypatch.setattr(runner, "process_events", flowing)
    report = Worker(engine, load_settings(env={})).run_once(NOW)
    engine.dispose()
    assert len(chunks) == 1, chunks  # the inbox as it was, then the enrollments
    assert report.sends == 6  # the three contacts' two sends each, in the same pass
