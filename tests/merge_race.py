"""Processes that race on the same contacts: worker passes, and an operator merging contacts.

`python -m tests.merge_race worker URL ID` and `python -m tests.merge_race merger URL` start once
(imports and connections are paid before the race), then wait for a line on stdin, like
tests/gate_race.py. A worker runs the real pass (`Worker.run_once` with the workspace gate); the
merger merges pairs with the real `merge_contacts`, one transaction each, and, still holding both
contacts' locks, counts the round's sends of the pair: a send the ledger has beyond that count
went out after the merge committed.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from engine.audience.merge import merge_contacts
from engine.config import load_settings
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.policy.locks import lock_contacts
from engine.policy.model import Policy
from engine.store.db import make_engine
from engine.store.models import Send
from engine.worker.runner import Worker

BATCH = 10  # small batches: many claims, so merges land between a claim and its save
POLICY = """\
format_version: 1
topics: {promotions: Promotions}
consent:
  defaults: {email: opt_in}
caps:
  - {id: email-hour, channels: [email], max: 1, window: 1h}
outcome: {action: skip}
pressure: {under_extra: 0, over_factor: 1}  # the cap exactly as written
"""
SCENARIO = """\
format_version: 1
id: merge-race
name: Merge race
objective: other
topic: promotions
triggers:
  - manual: true
entry:
  reentry: always
steps:
  offer:
    type: send
    channel: email
    content: {subject: Offer, text: offer}
    next: linger
  linger:
    type: wait
    duration: 1d
"""


def race_policy() -> Policy:
    policy, problems = lint_policy_text(POLICY)
    assert policy is not None, problems
    return policy


def _worker(url: str, worker_id: str) -> None:
    settings = load_settings(env={}).evolve(
        timezone="Europe/Paris", batch_size=BATCH, lease_seconds=600
    )
    factory = full_gate_factory(settings, race_policy())
    worker = Worker(make_engine(url), settings, gate_factory=factory, worker_id=worker_id)
    for line in sys.stdin:
        report = worker.run_once(datetime.fromisoformat(line.strip()))
        answer = {"claimed": report.claimed, "sends": report.sends, "stale": report.stale}
        print(json.dumps(answer), flush=True)


def _merge(conn: Connection, pair: str, now: datetime, policy: Policy) -> int:
    """Merge the pair, then count its sends of the round (the locks are still held)."""
    survivor, absorbed = map(int, pair.split(":"))
    merge_contacts(conn, survivor, absorbed, now, "race", "cli", policy=policy)
    query = select(func.count()).select_from(Send)
    query = query.where(Send.contact_id.in_([survivor, absorbed]), Send.created_at >= now)
    return int(conn.execute(query).scalar_one())


def _merger(url: str) -> None:
    """`<instant> <pairs>`: merge each pair in its own transaction, racing the workers.
    `hold <instant> <pairs>` (PostgreSQL): take every pair's lock first and answer; on the next
    line merge them all and commit, so that the workers' batches, claimed meanwhile and waiting
    for these locks, find their enrollments fenced."""
    engine = make_engine(url)
    policy = race_policy()
    for line in sys.stdin:
        words = line.split()
        hold = words[0] == "hold"
        instant, pairs = words[1:] if hold else words
        now = datetime.fromisoformat(instant)
        if hold:
            with engine.begin() as conn:
                ids = [int(i) for pair in pairs.split(",") for i in pair.split(":")]
                lock_contacts(conn, ids)
                print(json.dumps({"held": len(ids)}), flush=True)
                sys.stdin.readline()
                seen = {pair: _merge(conn, pair, now, policy) for pair in pairs.split(",")}
        else:
            seen = {}
            for pair in pairs.split(","):
                with engine.begin() as conn:
                    seen[pair] = _merge(conn, pair, now, policy)
        print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        _merger(sys.argv[2])
