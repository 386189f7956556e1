"""`parcours up` as a real process: sign in, call the API with a scoped key, read /metrics,
SIGTERM.

The worker and the web server are two children of `up`; SIGTERM must stop both gracefully
(exit 0) and leave nothing half-written: each enrollment has either moved on (its send exists,
once) or is still due where it was.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.store.db import SQLITE_BEGIN, make_engine
from engine.store.models import Enrollment, Send
from tests.up_process import STARTUP_SECONDS, free_port, healthy, not_started

SCENARIO = """\
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
      subject: "Merci"
      text: "Commande de {{ event.total }} EUR bien reçue."
    next: later
  later:
    type: wait
    duration: 1h
    next: follow-up
  follow-up:
    type: send
    channel: email
    content:
      subject: "Et ensuite ?"
      text: "Votre avis compte."
"""
CONTACTS = 60


class _Output:
    """Collects a process's output lines on a thread (a full pipe would block the process)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def find(self, pattern: str, timeout: float = STARTUP_SECONDS) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found.group(1)
            time.sleep(0.1)
        pytest.fail(f"{pattern!r} not printed; output:\n{self.text()}")

    def join(self, proc: subprocess.Popen[str]) -> None:
        self._thread.join(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _api(base: str, path: str, key: str, body: object, method: str = "POST") -> int:
    req = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "X-Api-Key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return int(refused.code)


def _new_key(env: dict[str, str], name: str, scope: str) -> str:
    """`parcours keys create` while `up` runs: the key is printed once, on stdout."""
    made = subprocess.run(
        [sys.executable, "-m", "designer", "keys", "create", name, "--scope", scope],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return made.stdout.strip().splitlines()[-1]


def _metric(base: str, key: str, name: str) -> float:
    """The sum of every series of `name` in /metrics (all processes added up)."""
    req = urllib.request.Request(f"{base}/metrics", headers={"X-Api-Key": key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    found = [line for line in text.splitlines()
             if line.startswith(name + "{") or line.startswith(name + " ")]  # fmt: skip
    return sum(float(line.rsplit(" ", 1)[1]) for line in found)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 302 is answered as an HTTPError, headers readable


def _sign_in(base: str, password: str) -> tuple[str, str]:
    """POST the login form with its CSRF token; where it redirects and the cookie it sets."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    with browser.open(f"{base}/login", timeout=10) as resp:
        page = resp.read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token, page
    form = {"username": "admin", "password": password, "csrf_token": token.group(1)}
    data = urllib.parse.urlencode(form).encode()
    with pytest.raises(urllib.error.HTTPError) as redirect:
        browser.open(f"{base}/login", data=data, timeout=10)
    assert redirect.value.code == 302
    headers = redirect.value.headers
    cookie = " ".join(headers.get_all("Set-Cookie") or [])
    redirect.value.close()
    # signed in: the designer's pages now lead to the password to choose, not to the login
    with pytest.raises(urllib.error.HTTPError) as page_redirect:
        browser.open(f"{base}/scenarios", timeout=10)
    page_redirect.value.close()
    return page_redirect.value.headers["Location"], cookie


def _wait_health(base: str, proc: subprocess.Popen[str], out: _Output) -> None:
    if not healthy(base, proc):
        pytest.fail(not_started(proc, out.text()))


@pytest.mark.slow
def test_up_signs_in_serves_the_api_and_stops_on_sigterm_losing_nothing(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "thank-you.yaml").write_text(SCENARIO, encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(
        PARCOURS_DATA_DIR=str(tmp_path / "data"),
        PARCOURS_SCENARIOS_DIR=str(scenarios),
        PARCOURS_PORT=str(port),
        PARCOURS_WEB_THREADS="4",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "designer", "up"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    out = _Output(proc)
    base = f"http://127.0.0.1:{port}"
    try:
        bootstrap = out.find(r"API key[^:]*: (\S+)")
        password = out.find(r"one-time password (\S+)")
        _wait_health(base, proc, out)
        key = _new_key(env, "shop", "write")  # what an integration gets: no more than it needs
        reader = _new_key(env, "prometheus", "read")
        assert key.startswith("pk_") and key != bootstrap

        reached, cookie = _sign_in(base, password)
        assert urllib.parse.urlsplit(reached).path == "/account/password"  # choose your own
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

        for i in range(CONTACTS):
            status = _api(base, f"/api/contacts/c{i}", key, {"email": f"c{i}@example.com"}, "PUT")
            assert status in (200, 201)
        events = [
            {"contact": f"c{i}", "name": "order_placed", "properties": {"total": i}}
            for i in range(CONTACTS)
        ]
        assert _api(base, "/api/events", key, events) == 202
        assert _api(base, "/api/contacts/c0", key, None, "DELETE") == 403  # erasure needs admin
        assert _api(base, "/api/contacts/c0", reader, {"email": "x@example.com"}, "PUT") == 403
        engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'parcours.db'}")
        deadline = time.monotonic() + 20
        with engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
            while not conn.scalar(select(func.count(Send.id))) and time.monotonic() < deadline:
                time.sleep(0.02)
                conn.rollback()
        # The worker's counters reach the web's /metrics (one folder for both processes).
        deadline = time.monotonic() + 20
        while _metric(base, reader, "parcours_sends_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(base, reader, "parcours_sends_total") >= 1
        assert _metric(base, reader, "parcours_events_total") >= 1  # counted by the worker
        proc.send_signal(signal.SIGTERM)  # with the pass perhaps still running
        assert proc.wait(60) == 0, out.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.join(proc)
    output = out.text()
    assert "Traceback" not in output
    assert "worker stopped" in output and "Shutting down: Master" in output

    with engine.connect() as conn:
        enrollments = conn.execute(
            select(Enrollment.id, Enrollment.status, Enrollment.step_id, Enrollment.due_at)
        ).all()
        sends = conn.execute(select(Send.enrollment_id, Send.step_id, Send.send_key)).all()
    engine.dispose()
    assert len(enrollments) == CONTACTS
    sent = {}
    for row in sends:
        assert row.enrollment_id not in sent, "a send exists twice"
        sent[row.enrollment_id] = row.step_id
    for row in enrollments:
        assert row.status == "active" and row.due_at is not None, row
        if row.id in sent:  # moved on: the thank-you is sent, the follow-up is an hour away
            assert (sent[row.id], row.step_id) == ("thanks", "later"), row
        else:  # not reached before SIGTERM: still due at its first step
            assert row.step_id == "thanks", row
    assert sent, "the event led to no send"
