"""`parcours worker` as a long-running process: until SIGTERM or SIGINT, then a graceful stop.

The signal only sets a flag; the main thread then asks the service to stop, which lets the
worker pass write its batch in progress (and claim no other) and the delivery pass record the
message being delivered (the rest of its batch is released, still queued). Nothing in flight is
lost and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from engine.worker.scheduler import Service
from engine.worker.wake import WakeListener

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_worker(service: Service, stop: threading.Event | None = None) -> None:
    """Run the service's jobs (and, on PostgreSQL, its wake listener) until a stop signal."""
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            logger.info("%s: stopping once the work in progress is written",
                        signal.Signals(signum).name, extra={"action": "shutdown"})  # fmt: skip
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    listener = WakeListener.for_engine(service.worker.engine, service.wake)
    try:
        service.start()
        if listener is not None:
            listener.start()
        while not stop.wait(1.0):
            pass
    finally:
        service.stop_soon()  # first: the listener may take a second to let go
        if listener is not None:
            listener.stop()
        service.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.info("worker stopped", extra={"action": "shutdown"})
