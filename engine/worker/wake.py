"""Waking a worker that runs in another process when an event arrives.

On PostgreSQL the web process says `NOTIFY parcours_wake` after it commits an event, and each
worker holds one connection that LISTENs and runs its tick at once. On SQLite there is no such
channel between processes: the worker finds the event at its next tick (PARCOURS_TICK_SECONDS,
one second by default).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

CHANNEL = "parcours_wake"
RECONNECT_SECONDS = 5.0


def notify_workers(engine: Engine) -> None:
    """Wake every worker listening on this database (PostgreSQL; nothing to do on SQLite)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
        conn.commit()


class WakeListener:
    """A thread that LISTENs on its own connection and calls `wake` for each notification.

    A lost connection is opened again after RECONNECT_SECONDS, followed by one wake (an event
    may have come while nobody listened; the tick would find it anyway)."""

    def __init__(self, engine: Engine, wake: Callable[[], None], timeout: float = 1.0) -> None:
        # the engine's URL with its password, for one connection outside its pool
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self.wake = wake
        self.timeout = timeout  # how long `stop` may wait for the thread
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)

    @classmethod
    def for_engine(cls, engine: Engine, wake: Callable[[], None]) -> WakeListener | None:
        """A listener on PostgreSQL; None on SQLite (the tick polls)."""
        return cls(engine, wake) if engine.dialect.name == "postgresql" else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + RECONNECT_SECONDS)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._wake()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.timeout):
                            self._wake()
            except psycopg.Error as exc:
                self.listening.clear()
                logger.warning(
                    "wake listener lost its connection (%s); events wait for the tick until "
                    "it is back", type(exc).__name__, extra={"action": "wake"},
                )  # fmt: skip
                self._stop.wait(RECONNECT_SECONDS)

    def _wake(self) -> None:
        try:
            self.wake()
        except Exception:
            logger.exception("waking the worker failed", extra={"action": "wake"})
