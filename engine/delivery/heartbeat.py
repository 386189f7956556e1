"""A heartbeat: renews a lease from a background thread while the work it covers runs.

A lease short enough to notice a dead worker quickly is shorter than the slowest work it covers
(a provider call can take many seconds); beating from a thread keeps it alive whatever the work
does, and a killed process stops beating with it, so its lease simply runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

logger = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat` every `interval` seconds between `with` entry and exit."""

    def __init__(self, interval: float, beat: Callable[[], None]) -> None:
        self.interval = interval
        self.beat = beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a database blip: the next beat tries again before the lease ends
                logger.exception("heartbeat failed")
