"""The README's deployment, run as written: deploy/example.sh starts PostgreSQL + `parcours web`
+ two `parcours worker` behind nginx; an event posted through nginx is sent; `stop` stops it all.

nginx comes from Debian's packages; the script installs it when it runs as root. Without nginx
and without root the test is skipped, except under CI=true where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "example.sh"
PUBLIC = "http://127.0.0.1:18080"


def _nginx_available() -> bool:
    return bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists())


def _call(path: str, key: str, body: object, method: str = "POST") -> dict:  # type: ignore[type-arg]
    req = urllib.request.Request(
        PUBLIC + path, data=json.dumps(body).encode(), method=method,
        headers={"Content-Type": "application/json", "X-Api-Key": key},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.pg
def test_the_example_deployment_sends_through_nginx(pg_admin: Engine, tmp_path: Path) -> None:
    if not _nginx_available() and os.geteuid() != 0:
        reason = "nginx is not installed and the script cannot install it without root"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env["PARCOURS_EXAMPLE_DIR"] = str(run)
    started = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "healthy through nginx" in started.stdout
        settings = dict(
            line.split("=", 1) for line in (run / "env").read_text().splitlines() if line
        )
        key = settings["PARCOURS_API_KEY"]
        assert _call("/api/contacts/d1", key, {"email": "d1@example.com"}, "PUT")["created"]
        sent_at = time.monotonic()
        assert _call("/api/events", key, {"contact": "d1", "name": "order_placed",
                                          "properties": {"total": 12}})["recorded"] == 1  # fmt: skip
        outbox: list[dict] = []  # type: ignore[type-arg]
        cli = [str(ROOT / ".venv" / "bin" / "parcours"), "outbox", "--json"]
        if not Path(cli[0]).exists():
            cli[0] = "parcours"
        while not outbox and time.monotonic() - sent_at < 20:
            out = subprocess.run(
                cli, env={**env, **settings}, capture_output=True, text=True, check=True
            )
            outbox = json.loads(out.stdout)
        assert [(m["contact"], m["scenario"]) for m in outbox] == [("d1", "thank-you")]
        assert "12 EUR" in outbox[0]["parts"]["text"]
        logs = "".join(p.read_text() for p in run.glob("worker-*.log"))
        assert "d1@example.com" not in logs and "Traceback" not in logs
        # The web's /metrics adds up the workers' counters (PROMETHEUS_MULTIPROC_DIR).
        scrape = urllib.request.Request(PUBLIC + "/metrics", headers={"X-Api-Key": key})
        with urllib.request.urlopen(scrape, timeout=10) as resp:
            metrics = resp.read().decode()
        sent = [line for line in metrics.splitlines()
                if line.startswith("parcours_sends_total{") and 'status="sent"' in line]  # fmt: skip
        assert sent and sum(float(line.rsplit(" ", 1)[1]) for line in sent) >= 1, metrics[:2000]
    finally:
        stopped = subprocess.run(
            [str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=300
        )
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name in ("nginx", "web", "worker-1", "worker-2"):
        assert f"{name} stopped" in stopped.stdout
    assert not list(run.glob("*.pid")) and not (run / "nginx" / "nginx.pid").exists()
    for log in run.glob("worker-*.log"):
        assert log.read_text().rstrip().endswith("worker stopped")
