"""The production server's parts: graceful stop of `parcours worker`, waking it across processes,
the reverse proxy's headers, cookie flags, quiet and JSON logs, the settings that refuse nonsense.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask, request
from sqlalchemy import select

from designer import create_app
from engine.config import load_settings
from engine.errors import ConfigError
from engine.store.db import make_engine, upgrade
from engine.store.models import Send
from engine.worker.scheduler import Service
from engine.worker.wake import WakeListener, notify_workers
from tests.delivery_crash import (
    ROOT,
    counting_receiver,
    environment,
    queue_sends,
    statuses,
    write_workspace,
)
from tests.up_process import STARTUP_SECONDS

NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


# --- parcours worker: SIGTERM ---------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_lets_the_message_in_flight_finish_and_releases_the_rest(
    engine_url: str, tmp_path: Path
) -> None:
    """The provider holds the third message when SIGTERM comes: it is recorded as sent once
    answered, the others stay queued (no lease, no `ambiguous`), and the worker exits 0."""
    engine = make_engine(engine_url)
    with counting_receiver(hold_from=3) as receiver:
        workspace = write_workspace(tmp_path / "scenarios", receiver.url, idempotent=False)
        env = environment(engine_url, workspace, lease_seconds=30)
        env.update(PARCOURS_LOG_FORMAT="json", PARCOURS_LOG_LEVEL="INFO")
        queued = queue_sends(engine, env, contacts=5, now=NOW)
        proc = subprocess.Popen(
            [sys.executable, "-m", "designer", "worker"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert receiver.held.wait(STARTUP_SECONDS), "the worker delivered nothing"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)  # the signal is handled while the provider still has the message
            receiver.release()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    found = statuses(engine)
    with engine.connect() as conn:
        leased = conn.execute(select(Send.id).where(Send.lease_owner.is_not(None))).all()
    engine.dispose()
    assert len(found["sent"]) == 3 and len(found["queued"]) == queued - 3, found
    assert set(found) == {"sent", "queued"} and not leased
    assert sorted(receiver.counts.values()) == [1, 1, 1]  # each message reached it once

    # Logs: one JSON object per line, no scheduler chatter, no address of a contact.
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["message"] == "worker stopped" for r in records)
    assert not [r for r in records if r["logger"].startswith("apscheduler")]
    assert "@example.org" not in err


@pytest.mark.slow
def test_an_idle_worker_says_nothing(tmp_path: Path) -> None:
    env = environment(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "none", lease_seconds=30)
    env.update(PARCOURS_LOG_LEVEL="INFO", PARCOURS_TICK_SECONDS="0.2")
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "designer", "worker"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "worker running" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(4)  # about twenty ticks
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        assert proc.wait(30) == 0, log.read_text()
    err = log.read_text()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].endswith("worker stopped"), err
    # start-up and stop only: no line per tick, no line per scheduler job
    assert len(lines) <= 5 and "pass:" not in err and "apscheduler" not in err, err


# --- waking a worker of another process -------------------------------------------------------


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_notify_wakes_a_worker_of_another_process_at_once(engine_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        {}, database_url=engine_url, data_dir=tmp_path, scenarios_dir=tmp_path / "none",
        tick_seconds=60,
    )  # fmt: skip
    engine, web = make_engine(engine_url), make_engine(engine_url)
    service = Service(engine, settings)
    passes: list[float] = []
    run_once = service.worker.run_once

    def counted() -> object:
        passes.append(time.monotonic())
        return run_once()

    service.worker.run_once = counted  # type: ignore[method-assign, assignment]
    listener = WakeListener(engine, service.wake)
    service.start()
    listener.start()
    try:
        assert listener.listening.wait(10)
        _settle(passes)
        before = len(passes)
        sent = time.monotonic()
        notify_workers(web)  # what the web process does after it commits an event
        deadline = time.monotonic() + 5
        while len(passes) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(passes) > before, "the notification did not wake the worker"
        assert passes[before] - sent < 1.0  # not the 60 s tick
    finally:
        listener.stop()
        service.shutdown()
        engine.dispose()
        web.dispose()


def _settle(passes: list[float]) -> None:
    """Wait until the start-up passes are over (no pass for half a second)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        count = len(passes)
        time.sleep(0.5)
        if count and len(passes) == count:
            return


def test_on_sqlite_a_datagram_wakes_each_registered_worker(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    notify_workers(engine)  # no worker yet: nothing to do, no error
    woken = [threading.Event(), threading.Event()]
    listeners = [WakeListener.for_engine(engine, w.set) for w in woken]
    try:
        for listener in listeners:
            assert listener is not None
            listener.start()
        assert len(list((tmp_path / ".x.db.wake").glob("*.port"))) == 2
        notify_workers(engine)  # what the web process does after it commits an event
        assert all(w.wait(5) for w in woken)
    finally:
        for listener in listeners:
            assert listener is not None
            listener.stop()
    assert not list((tmp_path / ".x.db.wake").glob("*.port"))  # a stopped worker deregisters
    notify_workers(engine)
    assert WakeListener.for_engine(make_engine("sqlite://"), lambda: None) is None  # in memory
    engine.dispose()


# --- behind a reverse proxy -----------------------------------------------------------------


def _app(tmp_path: Path, **changes: object) -> Flask:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    settings = load_settings({}, database_url=url, data_dir=tmp_path, api_key="k", **changes)
    app = create_app(settings, {"TESTING": True})

    @app.get("/_seen")
    def seen() -> dict[str, str | None]:
        return {"scheme": request.scheme, "host": request.host, "addr": request.remote_addr}

    return app


FORWARDED = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "crm.example.com",
}


@pytest.mark.parametrize(
    "hops, seen",
    [
        (0, {"scheme": "http", "host": "localhost", "addr": "10.0.0.1"}),
        (1, {"scheme": "https", "host": "crm.example.com", "addr": "203.0.113.9"}),
    ],
)
def test_proxy_hops_believe_the_forwarded_headers(
    tmp_path: Path, hops: int, seen: dict[str, str]
) -> None:
    app = _app(tmp_path, proxy_hops=hops)
    try:
        got = app.test_client().get(
            "/_seen", headers=FORWARDED, environ_base={"REMOTE_ADDR": "10.0.0.1"}
        )
    finally:
        app.extensions["parcours"].engine.dispose()
    assert got.get_json() == seen


@pytest.mark.parametrize("public_url, secure", [("", False), ("https://crm.example.com", True)])
def test_session_cookie_flags(tmp_path: Path, public_url: str, secure: bool) -> None:
    from engine.store import db

    db.upgrade(f"sqlite:///{tmp_path / 'web.db'}")
    app = _app(tmp_path, public_url=public_url)
    try:
        page = app.test_client().get("/login")  # the CSRF token opens the session
    finally:
        app.extensions["parcours"].engine.dispose()
    (cookie,) = page.headers.getlist("Set-Cookie")
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags
    assert ("secure" in flags) is secure


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [("WEB_WORKERS", "0"), ("WEB_THREADS", "-1"), ("PROXY_HOPS", "-1"), ("LOG_FORMAT", "xml")],
)
def test_server_settings_refuse_nonsense_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"PARCOURS_{name}="):
        load_settings({f"PARCOURS_{name}": value})


def test_web_refuses_zero_threads_naming_the_option(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PARCOURS_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "designer", "web", "--threads", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--threads" in done.stderr and "Traceback" not in done.stderr


def test_the_outbox_piped_into_head_prints_no_traceback(tmp_path: Path) -> None:
    """`parcours outbox | head -1`: the pipe closes early; the command must stay quiet."""
    engine_url = f"sqlite:///{tmp_path / 'o.db'}"
    engine = make_engine(engine_url)
    upgrade(engine)
    with counting_receiver() as receiver:
        workspace = write_workspace(tmp_path / "scenarios", receiver.url, idempotent=False)
        env = environment(engine_url, workspace, lease_seconds=30)
        queue_sends(engine, env, contacts=300, now=NOW)
    engine.dispose()
    shell = f"'{sys.executable}' -m designer outbox --limit 600 | head -1"
    assert shutil.which("head")
    done = subprocess.run(
        ["bash", "-c", shell],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert len(done.stdout.splitlines()) == 1
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
