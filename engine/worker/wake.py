"""Waking a worker that runs in another process when an event arrives.

On PostgreSQL the web process says `NOTIFY parcours_wake` after it commits an event, and each
worker holds one connection that LISTENs and runs its tick at once. On SQLite (one machine by
nature) each worker listens on a UDP port of 127.0.0.1 and writes that port in a file of the
folder ``.<database file>.wake/`` beside the database; the web process sends one datagram to
every port listed. A datagram carries nothing but "look now": a worker that missed it finds
the event at its next tick anyway (PARCOURS_TICK_SECONDS).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

CHANNEL = "parcours_wake"
RECONNECT_SECONDS = 5.0


def wake_folder(engine: Engine) -> Path | None:
    """Where the workers of a SQLite file register their wake ports; None for other databases
    and for an in-memory SQLite (no other process can share it)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    path = Path(database).resolve()
    return path.parent / f".{path.name}.wake"


def notify_workers(engine: Engine) -> None:
    """Wake every worker of this database: NOTIFY on PostgreSQL, a datagram to each registered
    port on SQLite."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
            conn.commit()
        return
    folder = wake_folder(engine)
    if folder is None or not folder.is_dir():
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for entry in folder.glob("*.port"):
            with contextlib.suppress(OSError, ValueError):  # a worker that just stopped
                sender.sendto(b"wake", ("127.0.0.1", int(entry.read_text())))


class WakeSender:
    """Wakes the workers from a thread of its own, so a request that recorded an event never
    waits for the NOTIFY (on PostgreSQL two round trips of a pooled connection, with its ping,
    were half of the API's own).

    `wake()` only sets a flag. The thread sends one wake for every wake() asked before it
    starts sending, so events arriving together cost one notification and the worker is woken
    once for all of them; a wake() asked while a notification is in flight is followed by
    another. On PostgreSQL the thread keeps one autocommit connection (opened again after an
    error). The thread starts on the first wake() of each process: a web server that forks
    after building the application gets one per process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sent = 0  # notifications sent by this process
        self._asked = threading.Event()
        self._lock = threading.Lock()
        self._pid = 0  # the process whose thread runs; another one (a fork) starts its own

    def wake(self) -> None:
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._asked = threading.Event()
                    thread = threading.Thread(target=self._run, name="wake-sender", daemon=True)
                    thread.start()
                    self._pid = os.getpid()
        self._asked.set()

    def _run(self) -> None:
        conn = None
        asked = self._asked
        while True:
            asked.wait()
            asked.clear()  # a wake() from now on is answered by another notification
            try:
                if self.engine.dialect.name != "postgresql":
                    notify_workers(self.engine)
                else:
                    if conn is None:
                        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
                self.sent += 1
            except Exception:
                logger.exception("waking the workers failed; they find the event at their tick",
                                 extra={"action": "wake"})  # fmt: skip
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                    conn = None


class PortWakeListener:
    """SQLite: a thread waiting for datagrams on a port of 127.0.0.1 registered in the
    database's wake folder; each calls `wake`. `stop` removes the registration."""

    def __init__(self, folder: Path, wake: Callable[[], None], timeout: float = 1.0) -> None:
        self.folder = folder
        self.wake = wake
        self.timeout = timeout
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(timeout)
        self.port = int(self._socket.getsockname()[1])
        self._entry = folder / f"{os.getpid()}-{self.port}.port"
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._entry.write_text(str(self.port))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._entry.unlink(missing_ok=True)
        self._thread.join(self.timeout + 1)
        self._socket.close()

    def _run(self) -> None:
        self.listening.set()
        while not self._stop.is_set():
            try:
                self._socket.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop
            try:
                self.wake()
            except Exception:
                logger.exception("waking the worker failed", extra={"action": "wake"})


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
    def for_engine(
        cls, engine: Engine, wake: Callable[[], None]
    ) -> WakeListener | PortWakeListener | None:
        """LISTEN on PostgreSQL, a registered port on a SQLite file, None for in-memory SQLite."""
        if engine.dialect.name == "postgresql":
            return cls(engine, wake)
        folder = wake_folder(engine)
        return PortWakeListener(folder, wake) if folder is not None else None

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
