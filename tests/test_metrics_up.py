"""`parcours up` as a real process: /api/health turns 200 once its worker has beaten, and
/metrics shows that worker's heartbeat to the bearer token."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_metrics import parse, value
from tests.up_process import free_port, parcours_up


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_up_reports_its_worker_in_health_and_metrics(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        PARCOURS_DATA_DIR=str(tmp_path / "data"), PARCOURS_SCENARIOS_DIR=str(tmp_path / "scenarios"),
        PARCOURS_PORT=str(port), PARCOURS_API_KEY="k", PARCOURS_METRICS_TOKEN="t",
        PARCOURS_HEARTBEAT_SECONDS="1",
    )  # fmt: skip
    with parcours_up(env, port) as up:  # healthy: the worker has beaten
        base = up.base
        status, body = _get(f"{base}/api/health")
        assert status == 200, body
        assert json.loads(body)["checks"]["worker"]["state"] == "ok"
        assert _get(f"{base}/metrics")[0] == 401
        status, text = _get(f"{base}/metrics", {"Authorization": "Bearer t"})
        assert status == 200
        samples = parse(text)
        assert value(samples, "parcours_database_up") == 1
        ages = [v for (name, _), v in samples.items()
                if name == "parcours_worker_heartbeat_age_seconds"]  # fmt: skip
        assert len(ages) == 1 and ages[0] < 10
