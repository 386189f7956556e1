"""Sign-in under a spray: how many attempts one address gets answered before it is slowed, and
how long a sign-in with an unknown name takes against one with a known name.

    python bench/sign_in_spray.py [--names 40] [--repeat 20]

Runs the designer in-process (Flask test client) on a fresh migrated SQLite database. For the
timing, each attempt comes from its own address and the (virtual) clock moves on an hour between
attempts, so no throttling is in play: only the password check is measured.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask.testing import FlaskClient

from designer import create_app
from designer.auth import create_user
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.store import db

PASSWORD = "correct horse battery"


def _token(client: FlaskClient) -> str:
    page = client.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "no CSRF token"
    return found.group(1)


def _attempt(client: FlaskClient, token: str, name: str, address: str) -> int:
    data = {"username": name, "password": "wrong guess", "csrf_token": token}
    return client.post("/login", data=data, environ_base={"REMOTE_ADDR": address}).status_code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'spray.db'}"
        db.upgrade(url)
        settings = load_settings({}, database_url=url, data_dir=Path(tmp), api_key="k")
        app = create_app(settings, {"TESTING": True})
        state = app.extensions["parcours"]
        clock = VirtualClock(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))
        state.clock = clock
        create_user(state.engine, "admin", "admin", password=PASSWORD)
        client = app.test_client()
        token = _token(client)

        statuses = [_attempt(client, token, f"user{i}", "203.0.113.5") for i in range(args.names)]
        answered = next((i for i, s in enumerate(statuses) if s == 429), len(statuses))
        print(f"spray of {args.names} names from one address: {answered} answered, "
              f"{statuses.count(429)} refused with 429")  # fmt: skip

        times: dict[str, list[float]] = {"unknown": [], "known": []}
        for i in range(args.repeat):
            for kind, name in (("unknown", f"nobody{i}"), ("known", "admin")):
                clock.advance(timedelta(hours=1))
                started = time.perf_counter()
                status = _attempt(client, token, name, f"198.51.100.{i % 250}")
                times[kind].append(time.perf_counter() - started)
                assert status == 401, status
        for kind, found in times.items():
            print(f"{kind} name: mean {statistics.mean(found) * 1000:.1f} ms, "
                  f"stdev {statistics.stdev(found) * 1000:.1f} ms over {len(found)}")  # fmt: skip
        state.engine.dispose()


if __name__ == "__main__":
    main()
