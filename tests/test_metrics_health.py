"""/api/health: the database, the worker's heartbeat (written by a real Service), and each
configured provider (a real SMTP server that stops answering; an HTTP provider's last
delivery). 200 only when all are well; never a host, an address or a secret."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from designer import create_app
from engine import metrics
from engine.config import load_settings
from engine.service_health import forget_probes
from engine.store import db
from engine.store.db import utcnow
from engine.store.models import WorkerHeartbeat
from engine.worker.heartbeats import record_beat, this_worker
from engine.worker.scheduler import Service
from tests.smtp import smtp_server


def make_app(url: str, tmp_path: Path, channels: str | None = None) -> Flask:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir(exist_ok=True)
    if channels is not None:
        (scenarios / "channels.yaml").write_text(channels)
    settings = load_settings(
        {}, database_url=url, data_dir=tmp_path, scenarios_dir=scenarios, api_key="k",
        worker_stale_seconds=30,
    )  # fmt: skip
    return create_app(settings, {"TESTING": True})


@pytest.fixture
def url(tmp_path: Path) -> str:
    found = f"sqlite:///{tmp_path / 'p.db'}"
    db.upgrade(found)
    return found


def health(app: Flask) -> tuple[int, dict[str, Any], str]:
    response = app.test_client().get("/api/health")
    assert response.is_json
    return response.status_code, response.get_json(), response.get_data(as_text=True)


def beat(app: Flask, ago: float = 0.0, providers: dict[str, Any] | None = None) -> None:
    engine = app.extensions["parcours"].engine
    now = utcnow() - timedelta(seconds=ago)
    record_beat(engine, "host-a:1", now, now, 3, providers or {})


def test_health_follows_the_newest_heartbeat(url: str, tmp_path: Path) -> None:
    app = make_app(url, tmp_path)
    status, body, _ = health(app)
    assert status == 503
    assert body["status"] == "degraded"
    assert body["checks"]["worker"] == {"state": "none", "workers": 0}
    assert body["checks"]["database"]["state"] == "ok"
    beat(app)
    status, body, _ = health(app)
    assert status == 200 and body["status"] == "ok"
    assert body["checks"]["worker"]["state"] == "ok"
    assert body["checks"]["worker"]["workers"] == 1
    beat(app, ago=90)  # the same worker, silent for 90 s (stale after 30)
    status, body, _ = health(app)
    assert status == 503 and body["status"] == "degraded"
    assert body["checks"]["worker"]["state"] == "stale"
    assert 90 <= body["checks"]["worker"]["seconds"] < 120
    app.extensions["parcours"].engine.dispose()


def test_health_is_down_without_a_database(tmp_path: Path) -> None:
    app = make_app("postgresql://nobody:hunter2@127.0.0.1:1/none?connect_timeout=1", tmp_path)
    status, body, text = health(app)
    assert status == 503
    assert body["status"] == "down"
    assert body["checks"]["database"]["state"] == "fail"
    assert "hunter2" not in text and "127.0.0.1" not in text


def test_health_says_when_the_smtp_server_stops_answering(url: str, tmp_path: Path) -> None:
    with smtp_server() as (_handler, port):
        app = make_app(url, tmp_path, (
            f"email:\n  provider: smtp\n  host: 127.0.0.1\n  port: {port}\n  security: none\n"
            "  username: parcours\n  password: ${SMTP_PASSWORD}\n"
            "  from_address: news@shop.example\n"
        ))  # fmt: skip
        beat(app)
        forget_probes()
        status, body, _ = health(app)
        assert status == 200, body
        assert body["checks"]["providers"] == {"email": {"provider": "smtp", "state": "ok"}}
    forget_probes()  # the answer is kept 30 s; ask again now
    status, body, text = health(app)
    assert status == 503 and body["status"] == "degraded"
    assert body["checks"]["providers"]["email"]["state"] == "unreachable"
    assert "127.0.0.1" not in text and str(port) not in text and "SMTP_PASSWORD" not in text
    app.extensions["parcours"].engine.dispose()


def test_health_judges_an_http_provider_by_its_last_delivery(url: str, tmp_path: Path) -> None:
    app = make_app(url, tmp_path, (
        "sms:\n  provider: sms_http\n  url: https://sms.example.com/v1/messages\n"
        "  auth: bearer\n  token: ${SMS_TOKEN}\n  sender: Shop\n"
    ))  # fmt: skip
    beat(app)
    status, body, _ = health(app)
    assert status == 200
    assert body["checks"]["providers"]["sms"] == {"provider": "sms_http", "state": "unknown"}
    # what the delivery loop records after a transient error, carried by the heartbeat
    metrics.delivery_done("sms", "queued", 0.2, "503 from the provider")
    beat(app, providers=metrics.provider_states())
    status, body, _ = health(app)
    assert status == 503
    assert body["checks"]["providers"]["sms"]["state"] == "failing"
    metrics.delivery_done("sms", "sent", 0.1)
    beat(app, providers=metrics.provider_states())
    status, body, _ = health(app)
    assert status == 200
    assert body["checks"]["providers"]["sms"]["state"] == "ok"
    assert body["checks"]["providers"]["sms"]["last_delivery_at"]
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def service(url: str, tmp_path: Path) -> Iterator[Service]:
    settings = load_settings(
        {}, database_url=url, data_dir=tmp_path, scenarios_dir=tmp_path, heartbeat_seconds=1,
        tick_seconds=1.0,
    )  # fmt: skip
    made = Service(db.make_engine(url), settings)
    yield made
    made.shutdown()
    made.worker.engine.dispose()


def test_a_running_worker_beats_and_its_row_goes_when_it_stops(
    service: Service, url: str, tmp_path: Path
) -> None:
    app = make_app(url, tmp_path)
    engine = app.extensions["parcours"].engine

    def rows() -> list[Any]:
        with engine.connect() as conn:
            return list(conn.execute(select(WorkerHeartbeat)))

    service.start()
    deadline = time.monotonic() + 10
    while not rows() and time.monotonic() < deadline:
        time.sleep(0.1)
    (row,) = rows()
    assert row.worker_id == this_worker()
    first = row.last_beat
    while rows()[0].last_beat == first and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rows()[0].last_beat > first  # it beats again, every second here
    assert health(app)[0] == 200
    service.shutdown()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(WorkerHeartbeat)).scalar() == 0
    assert health(app)[1]["checks"]["worker"]["state"] == "none"
    engine.dispose()
