"""Merges while two real worker processes run, on SQLite and PostgreSQL.

Round after round, fresh pairs of contacts have enrollments due in the same scenario (a send,
then a wait: it stays active), while an operator merges every pair
(tests/merge_race.py); every other survivor has no enrollment, so the absorbed one moves and
stays active. Every merged contact must refuse the round's next message: in a third of
the pairs the absorbed contact already had the hour's only cap slot, in a third it had opted
out, in a third the survivor had. Whatever the interleaving:

- no (scenario, live contact) has two active enrollments;
- no send goes out after the merge committed (the merged contact refused it, or the cap, which
  counts both pasts, was full), to the survivor nor to the tombstone;
- every consent record written before is still there, unchanged;
- no enrollment is ended as `contact_missing`: the fenced batch rolled back and the moved
  enrollment ran again as the survivor's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from selectors import EVENT_READ, DefaultSelector
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import contact_ids, upsert_contacts
from engine.policy.consent import record_consent
from engine.store.db import make_engine
from engine.store.models import ConsentRecord, Contact, Enrollment, Send
from engine.worker.enroll import Candidate, enroll
from engine.worker.versions import VersionCache, publish_bundle
from tests import merge_race

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
ROUNDS = {"postgresql": 12, "sqlite": 4}  # SQLite cannot race: fewer rounds check it
PAIRS = 24


def _start(args: list[str], log: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    with log.open("w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.merge_race", *args],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True, bufsize=1,
        )  # fmt: skip


def _cue(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _answer(proc: subprocess.Popen[str], log: Path) -> dict[str, int]:
    assert proc.stdout is not None
    with DefaultSelector() as selector:  # a process stuck on a lock fails the test, never hangs it
        selector.register(proc.stdout, EVENT_READ)
        ready = selector.select(timeout=120)
    line = proc.stdout.readline() if ready else ""
    assert line, f"{log.stem} gave no answer:\n{log.read_text()}"
    answer: dict[str, int] = json.loads(line)
    return answer


def _round(engine: Engine, n: int, now: datetime, held: bool) -> list[tuple[int, int]]:
    """Fresh pairs (survivor, absorbed), each with an enrollment due on both sides, and what
    makes the merged contact refuse the next message: a used cap slot or an opt-out."""
    policy = merge_race.race_policy()
    names = [(f"s{n}-{i}", f"a{n}-{i}") for i in range(PAIRS)]
    flat = [name for pair in names for name in pair]
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": e, "email": f"{e}@example.com", "attributes": {}}
                               for e in flat], now)  # fmt: skip
        ids = contact_ids(conn, flat, now)
        pairs = [(ids[s], ids[a]) for s, a in names]
        at = now - timedelta(minutes=10)
        for i, (s, a) in enumerate(pairs):
            refusing = {1: a, 2: s}.get(i % 3)
            for cid in (s, a):
                state = "opted_out" if cid == refusing else "opted_in"
                record_consent(conn, cid, "email", "*", state, "import", at, policy=policy)
            if i % 3 == 0:  # the absorbed contact had the hour's only slot
                conn.execute(Send.__table__.insert().values(
                    send_key=f"past:{a}", contact_id=a, scenario_id="elsewhere", step_id="x",
                    channel="email", topic="promotions", kind="marketing", status="sent",
                    created_at=at, sent_at=at))  # fmt: skip
        ((version_id, scenario),) = VersionCache().live(conn)
        # Every other survivor has no enrollment: the absorbed one moves and stays active, and
        # only the fencing stops a batch that claimed it as the absorbed contact's.
        due = now - timedelta(seconds=1)
        enroll(conn, [Candidate(version_id, scenario, cid, f"round:{n}", due, source="manual")
                      for i, (s, a) in enumerate(pairs)
                      for cid in ((s, a) if i % 2 and not held else (a,))],
               now)  # fmt: skip
    return pairs


def _wait_for_claims(engine: Engine, n: int) -> None:
    """Until both workers hold a batch of round `n` (two lease owners), at most 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            query = select(func.count(Enrollment.lease_owner.distinct())).where(
                Enrollment.entry_key.like(f"round:{n}%"), Enrollment.lease_owner.is_not(None)
            )
            if conn.execute(query).scalar_one() >= 2:
                return
        time.sleep(0.02)


def _records(engine: Engine) -> dict[int, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {r.id: tuple(r) for r in conn.execute(select(ConsentRecord))}


def _duplicates(engine: Engine) -> int:
    with engine.connect() as conn:
        grouped = (
            select(Enrollment.scenario_id, Enrollment.contact_id)
            .join(Contact, Contact.id == Enrollment.contact_id)
            .where(Enrollment.status == "active", Contact.merged_into.is_(None))
            .group_by(Enrollment.scenario_id, Enrollment.contact_id)
            .having(func.count() > 1)
        )
        return len(conn.execute(grouped).all())


def _sends(engine: Engine, contacts: list[int], now: datetime) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(Send)
        query = query.where(Send.contact_id.in_(contacts), Send.created_at >= now)
        return int(conn.execute(query).scalar_one())


@pytest.mark.slow  # starts three processes
def test_merges_racing_two_workers_never_duplicate_nor_let_a_refused_message_through(
    engine_url: str, tmp_path: Path
) -> None:
    engine = make_engine(engine_url)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": merge_race.SCENARIO, "templates": {}}, now=START)
    rounds = ROUNDS[engine.dialect.name]
    logs = [tmp_path / f"{role}.log" for role in ("w1", "w2", "merger")]
    procs = [
        _start(["worker", engine_url, "w1"], logs[0]),
        _start(["worker", engine_url, "w2"], logs[1]),
        _start(["merger", engine_url], logs[2]),
    ]
    after_merge: list[str] = []
    stale = pre_merge_sends = duplicates = 0
    try:
        for proc, log in zip(procs[:2], logs, strict=False):  # connect and load the scenario
            _cue(proc, (START - timedelta(hours=1)).isoformat())
            _answer(proc, log)
        for n in range(rounds):
            now = START + timedelta(hours=3 * n)
            held = engine.dialect.name == "postgresql" and n % 3 == 2
            pairs = _round(engine, n, now, held)
            before = _records(engine)
            cue = f"{now.isoformat()} {','.join(f'{s}:{a}' for s, a in pairs)}"
            if held:
                # Forced interleaving: the merges wait for the workers' claims, and the batches
                # then wait for the merges (the gate's lock), which fence them out. Only absorbed
                # contacts have enrollments then: none ends as a duplicate, so only the fencing
                # of the moved ones stops a batch deciding for a tombstone.
                _cue(procs[2], f"hold {cue}")
                _answer(procs[2], logs[2])
            for proc in procs[:2]:
                _cue(proc, now.isoformat())
            if held:
                _wait_for_claims(engine, n)
                _cue(procs[2], "go")
            else:
                _cue(procs[2], cue)
            answers = [_answer(proc, log) for proc, log in zip(procs, logs, strict=True)]
            for proc, log in zip(procs[:2], logs, strict=False):  # what the fencing put back
                _cue(proc, now.isoformat())
                answers.append(_answer(proc, log))
            stale += sum(a["stale"] for a in answers[:2] + answers[3:])
            seen = answers[2]
            for s, a in pairs:
                sent = _sends(engine, [s, a], now)
                pre_merge_sends += seen[f"{s}:{a}"]
                if sent > seen[f"{s}:{a}"]:
                    after_merge.append(f"round {n} pair {s}:{a}: {sent} > {seen[f'{s}:{a}']}")
            after = _records(engine)
            lost = [i for i, row in before.items() if after.get(i) != row]
            assert lost == [], f"consent records lost or changed by merges: {lost}"
            duplicates += _duplicates(engine)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()  # end of input: the process exits
        for proc in procs:
            proc.wait(timeout=60)
            assert proc.stdout is not None
            proc.stdout.close()
    with engine.connect() as conn:
        ends = dict(conn.execute(
            select(Enrollment.end_reason, func.count()).group_by(Enrollment.end_reason)).all())  # fmt: skip
        merged = conn.execute(select(func.count()).where(Contact.merged_into.is_not(None)))
        tombstones = merged.scalar_one()
    engine.dispose()
    assert (after_merge, duplicates) == ([], 0), "\n".join(after_merge)
    assert tombstones == rounds * PAIRS
    assert "contact_missing" not in ends, ends
    # one of each pair's two enrollments ended as merged, unless it had completed already
    assert ends.get("merged", 0) > 0, ends
    assert pre_merge_sends > 0  # the workers did send: the race was on
    if engine.dialect.name == "postgresql":
        # Fencing really happened: the held rounds' batches claimed enrollments the merges then
        # moved, and rolled back (free rounds may add more).
        assert stale >= 2 * (rounds // 3), f"only {stale} enrollments fenced out in {rounds} rounds"
