"""A wake that comes while a worker pass runs is followed by another pass, never skipped."""

from __future__ import annotations

import threading
from pathlib import Path

from engine.config import load_settings
from engine.store import db
from engine.worker.runner import PassReport
from engine.worker.scheduler import Service


class _Passes:
    """Stands for the worker's run_once: counts passes; the first waits until told to end."""

    def __init__(self) -> None:
        self.count = 0
        self.started = threading.Event()
        self.finish = threading.Event()

    def __call__(self) -> PassReport:
        self.count += 1
        if self.count == 1:
            self.started.set()
            assert self.finish.wait(10)
        return PassReport()


def _service(tmp_path: Path) -> tuple[Service, _Passes]:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    service = Service(db.make_engine(url), load_settings(database_url=url, data_dir=tmp_path))
    passes = _Passes()
    service.worker.run_once = passes  # type: ignore[method-assign]
    return service, passes


def test_a_wake_during_a_pass_runs_one_more(tmp_path: Path) -> None:
    service, passes = _service(tmp_path)
    running = threading.Thread(target=service.tick)
    running.start()
    assert passes.started.wait(10)
    service.wake()  # an event arrived while the pass runs
    service.tick()  # the scheduler's second instance finds the pass running and leaves it be
    passes.finish.set()
    running.join(10)
    assert passes.count == 2


def test_without_a_wake_one_pass(tmp_path: Path) -> None:
    service, passes = _service(tmp_path)
    passes.finish.set()
    service.tick()
    assert passes.count == 1
