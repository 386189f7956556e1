"""`parcours up` as an operator runs it: real processes, HTTP on 127.0.0.1, the worker beside."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.up_process import CLI, free_port, parcours_up

SCENARIO = """\
# Thanks a contact right after a purchase.
format_version: 1
id: thank-you
name: Thank you
objective: loyalty
kind: transactional
triggers:
  - event: order_placed
steps:
  thanks:
    type: send
    channel: email
    content:
      subject: "Merci {{ contact.first_name }}"
      text: "Commande de {{ event.total }} EUR bien reçue."
"""


def _request(
    url: str, body: object | None = None, key: str = "", method: str = ""
) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method or ("POST" if data else "GET"),
        headers={"Content-Type": "application/json", "X-Api-Key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_up_serves_the_api_and_the_worker_sends(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "thank-you.yaml").write_text(SCENARIO, encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        PARCOURS_DATA_DIR=str(tmp_path / "data"),
        PARCOURS_SCENARIOS_DIR=str(scenarios),
        PARCOURS_PORT=str(port),
        PARCOURS_API_KEY="test-key",
        PARCOURS_TICK_SECONDS="30",
    )
    with parcours_up(env, port) as up:
        base = up.base
        assert _request(f"{base}/api/events", {"contact": "c1", "name": "x"}, key="wrong")[0] == 401
        status, _ = _request(
            f"{base}/api/contacts/c1", {"email": "c1@example.com"}, "test-key", "PUT"
        )
        assert status in (200, 201)
        status, body = _request(
            f"{base}/api/events",
            {"contact": "c1", "name": "order_placed", "properties": {"total": 42}},
            key="test-key",
        )
        assert status == 202 and body["recorded"] == 1
        # The tick runs every 30 s here: a send well before it proves the event woke the worker,
        # a process of its own (a datagram on SQLite, engine.worker.wake).
        deadline = time.monotonic() + 20
        sent: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline and not sent:
            out = subprocess.run(
                [*CLI, "outbox", "--json"], env=env, capture_output=True, text=True, check=True
            )
            sent = json.loads(out.stdout)
            time.sleep(0.3)
        assert len(sent) == 1
        assert sent[0]["parts"]["subject"] == "Merci " and "42" in sent[0]["parts"]["text"]
    assert "scenario thank-you: version 1 published" in up.output
    assert "Traceback" not in up.output
