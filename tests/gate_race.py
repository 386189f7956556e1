"""Processes that race on the same contacts: a worker pass or an operator's opt-outs, on a cue.

`python -m tests.gate_race worker URL ID` and `python -m tests.gate_race operator URL` start once
(imports and connections are paid before the race), then wait for a line on stdin. The test writes
the same cue to every process at once, so their transactions overlap on the same contacts in every
round, and each answers with one JSON line. A worker runs the real pass (`Worker.run_once` with
the workspace gate); the operator records opt-outs with the real `record_consent`.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from sqlalchemy import func, select

from engine.config import load_settings
from engine.policy.consent import record_consent
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.policy.model import Policy
from engine.store.db import make_engine
from engine.store.models import Send
from engine.worker.runner import Worker

CONTACTS = 20  # each worker's batch holds every contact once
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
id: last-slot
name: Last slot
objective: other
topic: promotions
triggers:
  - manual: true
entry:
  reentry: always
  concurrent: true
steps:
  offer:
    type: send
    channel: email
    content: {subject: Offer, text: offer}
"""


def race_policy() -> Policy:
    policy, problems = lint_policy_text(POLICY)
    assert policy is not None, problems
    return policy


def _worker(url: str, worker_id: str) -> None:
    settings = load_settings(env={}).evolve(
        timezone="Europe/Paris", batch_size=CONTACTS, lease_seconds=600
    )
    factory = full_gate_factory(settings, race_policy())
    worker = Worker(make_engine(url), settings, gate_factory=factory, worker_id=worker_id)
    for line in sys.stdin:
        report = worker.run_once(datetime.fromisoformat(line.strip()))
        print(json.dumps({"claimed": report.claimed, "sends": report.sends}), flush=True)


def _operator(url: str) -> None:
    """Opt contacts out one transaction each; under the contact's lock, count the round's sends
    already committed. A send committed after that (a later count in the ledger) went out after
    the opt-out."""
    engine = make_engine(url)
    policy = race_policy()
    for line in sys.stdin:
        instant, ids = line.split()
        now = datetime.fromisoformat(instant)
        seen: dict[int, int] = {}
        for contact_id in map(int, ids.split(",")):
            with engine.begin() as conn:
                record_consent(
                    conn, contact_id, "email", "*", "opted_out", "operator", now, policy=policy
                )
                seen[contact_id] = conn.execute(
                    select(func.count())
                    .select_from(Send)
                    .where(Send.contact_id == contact_id, Send.created_at >= now)
                ).scalar_one()
        print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        _worker(sys.argv[2], sys.argv[3])
    else:
        _operator(sys.argv[2])
