"""Several processes, one /metrics: two `parcours worker --once` processes count into the
folder PROMETHEUS_MULTIPROC_DIR names, and a third process's scrape adds them up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from engine.store import db
from tests.test_metrics import parse, value, visit

SCENARIO = """\
format_version: 1
id: promo
name: Promo
objective: other
kind: transactional
triggers:
  - event: visited
entry:
  reentry: always
steps:
  mail:
    type: send
    channel: email
    content:
      subject: "Offers"
      text: "Hello, our offers are here."
"""
SCRAPE = (
    "from engine.metrics import exposition; from engine.store.db import make_engine; "
    "import sys; sys.stdout.write(exposition(make_engine(sys.argv[1]))[0].decode())"
)


@pytest.mark.slow
def test_counters_of_several_processes_add_up(tmp_path: Path) -> None:
    from engine.worker.versions import publish_dir

    url = f"sqlite:///{tmp_path / 'p.db'}"
    db.upgrade(url)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "promo.yaml").write_text(SCENARIO)
    folder = tmp_path / "prometheus"
    folder.mkdir()
    engine = db.make_engine(url)
    with Session(engine) as session, session.begin():
        publish_dir(session, scenarios)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(PARCOURS_DATABASE_URL=url, PARCOURS_SCENARIOS_DIR=str(scenarios),
               PARCOURS_DATA_DIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR=str(folder))  # fmt: skip
    cli = [sys.executable, "-c", "from designer.cli import main; main()", "worker", "--once"]
    try:
        visit(engine, ["anne", "bruno"])
        first = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        visit(engine, ["chloe", "david", "emma"])
        second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
    finally:
        engine.dispose()
    assert len(list(folder.glob("counter_*.db"))) == 2  # one file per process
    scraped = subprocess.run(
        [sys.executable, "-c", SCRAPE, url], env=env, capture_output=True, text=True, timeout=60
    )
    assert scraped.returncode == 0, scraped.stderr
    samples = parse(scraped.stdout)
    assert value(samples, "parcours_events_total") == 5
    assert value(samples, "parcours_batches_total") == 2
    assert value(samples, "parcours_sends_total", channel="email", status="sent") == 5
    assert value(samples, "parcours_database_up") == 1
