"""Two worker processes that race on one program's daily budget, on a cue.

`python -m tests.program_race worker URL SCENARIOS_DIR ID` starts once (imports and connections
are paid before the race), then runs a real pass (`Worker.run_once` with the workspace gate and
the programs of SCENARIOS_DIR) for each instant written on stdin, answering with one JSON line.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.audience.ingest import contact_ids, upsert_contacts
from engine.config import load_settings
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.store.db import make_engine
from engine.worker.enroll import Candidate, enroll
from engine.worker.runner import Worker
from engine.worker.versions import VersionCache, publish_bundle

CONTACTS = 20  # due each round; each worker's batch claims half
DAILY = 5  # the budget allows five emails a day
POLICY = """\
format_version: 1
topics: {promotions: Promotions}
consent: {defaults: {email: opt_out}}
outcome: {action: skip}
pressure: {under_extra: 0, over_factor: 1}
"""
PROGRAM = """\
format_version: 1
id: daily
name: Daily
objective: other
scenarios: [race]
budget: {amount: 0.005, period: day}   # email costs 0.001
"""
JOURNEY = """\
format_version: 1
id: {id}
name: {id}
objective: other
kind: {kind}
topic: promotions
triggers: [{trigger}]
entry: {{reentry: always, concurrent: true}}
steps:
  mail:
    type: send
    channel: email
    content: {{subject: Hello, text: Hello}}
"""


def journey(scenario_id: str, event: str | None, kind: str = "marketing") -> str:
    """A one-email journey triggered by `event` (None: started by hand)."""
    trigger = f"{{event: {event}}}" if event else "{manual: true}"
    return JOURNEY.format(id=scenario_id, kind=kind, trigger=trigger)


def prepare(url: str, scenarios_dir: Path, now: datetime) -> None:
    """The program file, the race journey and its contacts."""
    (scenarios_dir / "programs").mkdir(exist_ok=True)
    (scenarios_dir / "programs" / "daily.yaml").write_text(PROGRAM)
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": journey("race", None), "templates": {}}, now=now)
    names = [f"r{i}" for i in range(CONTACTS)]
    with engine.begin() as conn:
        rows = [{"external_id": n, "email": f"{n}@example.com", "attributes": {}} for n in names]
        upsert_contacts(conn, rows, now)
    engine.dispose()


def due(engine: Engine, now: datetime) -> None:
    """One enrollment per contact, due a second ago."""
    with engine.begin() as conn:
        ids = contact_ids(conn, [f"r{i}" for i in range(CONTACTS)], now)
        ((version_id, scenario),) = VersionCache().live(conn)
        enroll(conn, [
            Candidate(version_id, scenario, cid, f"{now.isoformat()}:{cid}",
                      now - timedelta(seconds=1), source="manual")
            for cid in ids.values()
        ], now)  # fmt: skip


def _worker(url: str, scenarios_dir: str, worker_id: str) -> None:
    settings = load_settings(env={}).evolve(
        timezone="Europe/Paris", batch_size=CONTACTS // 2, lease_seconds=600,
        scenarios_dir=Path(scenarios_dir),
    )  # fmt: skip
    policy, problems = lint_policy_text(POLICY)
    assert policy is not None, problems
    factory = full_gate_factory(settings, policy)
    worker = Worker(make_engine(url), settings, gate_factory=factory, worker_id=worker_id)
    for line in sys.stdin:
        report = worker.run_once(datetime.fromisoformat(line.strip()), max_batches=1)
        print(json.dumps({"claimed": report.claimed, "sends": report.sends}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[2], sys.argv[3], sys.argv[4])
