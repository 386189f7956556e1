"""`parcours up` without PARCOURS_API_KEY, as a real process: the first start makes the admin
key `bootstrap` and prints it once; the next start prints nothing about keys and the key
still works; publishing at start-up is audited with the operator's name."""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.store.db import make_engine
from engine.store.models import AuditEntry
from tests.integration.test_up import SCENARIO
from tests.up_process import free_port, parcours_up


def _status(url: str, key: str = "") -> int:
    request = urllib.request.Request(url, headers={"X-Api-Key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _start_and_stop(env: dict[str, str], port: int, key: str = "") -> tuple[str, int]:
    """Start `parcours up`, wait for it, ask for an export with `key`, stop: (output, status)."""
    with parcours_up(env, port) as up:
        status = _status(f"{up.base}/api/contacts/nobody/export", key) if key else 0
    assert "Traceback" not in up.output
    return up.output, status


@pytest.mark.slow
def test_first_start_makes_the_bootstrap_key_once(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "thank-you.yaml").write_text(SCENARIO, encoding="utf-8")
    port = free_port()  # the same at each start
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        PARCOURS_DATA_DIR=str(tmp_path / "data"),
        PARCOURS_SCENARIOS_DIR=str(scenarios),
        PARCOURS_TICK_SECONDS="30",
        LOGNAME="ops-anne",
    )
    first, _ = _start_and_stop(env, port)
    found = re.findall(r"API key 'bootstrap' \(admin\), shown this once: (pk_\S+)", first)
    assert len(found) == 1, first
    key = found[0]

    second, status = _start_and_stop(env, port, key)
    assert status == 404  # past the key and the admin scope: there is no such contact
    assert "API key" not in second and key not in second
    assert _start_and_stop(env, port, key + "x")[1] == 401

    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'parcours.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(AuditEntry).order_by(AuditEntry.id)).all()
    finally:
        engine.dispose()
    entries = [(r.username, r.action, r.target_kind, r.target_id) for r in rows]
    assert entries == [
        ("ops-anne", "create", "api_key", "bootstrap"),
        ("ops-anne", "publish", "scenario", "thank-you"),  # once: unchanged at the next starts
    ]
