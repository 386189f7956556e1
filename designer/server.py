"""The production web server: gunicorn, configured from the settings (no configuration file).

Why gunicorn: it is the WSGI server Linux deployments know (systemd, containers), its arbiter
restarts a crashed process, `preload_app` builds the application once before forking, its
gthread workers serve many requests per process, and SIGTERM drains the requests in flight
before exiting (`graceful_timeout`). Waitress would only be needed where gunicorn cannot run
(Windows, which has no fork()).

`parcours up` runs two children of its own: `parcours web` (this server) and `parcours worker`
(the scheduler and the delivery loop), and stops both gracefully on SIGTERM or Ctrl+C.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

from flask import Flask
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from engine.config import Settings

logger = logging.getLogger(__name__)

GRACEFUL_SECONDS = 30  # how long SIGTERM waits for the requests (and the batch) in flight


class _Logs(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own lines go through the process's logging (text or JSON, one format)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True


def web_app(settings: Settings) -> Flask:
    """The application as the web server serves it: an accepted event wakes the workers of
    other processes (NOTIFY on PostgreSQL, a datagram on SQLite: engine.worker.wake), sent by
    a thread of each web process so that the request does not wait for it."""
    from designer import create_app
    from engine.worker.wake import WakeSender

    app = create_app(settings)
    state = app.extensions["parcours"]
    state.wake = WakeSender(state.engine).wake
    return app


class WebServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with Parcours' settings: WEB_WORKERS processes of WEB_THREADS threads each."""

    def __init__(
        self, settings: Settings, host: str, port: int, workers: int, threads: int
    ) -> None:
        self.settings = settings
        self.options: dict[str, Any] = {
            "bind": [f"{host}:{port}"],
            "workers": workers,
            "threads": threads,
            "preload_app": True,  # one import and one check of the workspace, before forking
            "graceful_timeout": GRACEFUL_SECONDS,
            "proc_name": "parcours-web",
            "loglevel": settings.log_level.lower(),
            "errorlog": "-",
            "accesslog": None,  # the reverse proxy logs requests; paths may hold contact ids
            "logger_class": _Logs,
            # The scheme and the client's address come from ProxyFix (PARCOURS_PROXY_HOPS)
            # alone, so that one setting decides which forwarded headers are believed.
            "secure_scheme_headers": {},
            "forwarded_allow_ips": "",
            "control_socket_disable": True,  # (gunicorn 25+) no socket in the home folder
            "post_fork": _after_fork,
            "child_exit": _child_exit,
        }
        super().__init__(prog="parcours web")

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # settings an older gunicorn lacks are left out
                self.cfg.set(key, value)

    def load(self) -> Flask:
        return web_app(self.settings)


def _child_exit(_server: Any, worker: Any) -> None:
    """A web process that ended leaves its live gauges out of the next scrape (multiprocess)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _after_fork(server: Any, _worker: Any) -> None:
    """A forked process opens its own database connections, never the preloading parent's."""
    app = server.app.callable
    if app is not None:
        app.extensions["parcours"].engine.dispose(close=False)


# ------------------------------------------------------------------ parcours up


def child_command(*args: str) -> list[str]:
    """A `parcours` subcommand run by this interpreter (the virtual environment's)."""
    return [sys.executable, "-m", "designer", *args]


def supervise(
    children: Mapping[str, Sequence[str]], env: Mapping[str, str], grace: float = 60.0
) -> int:
    """Run the commands side by side until SIGTERM or SIGINT (Ctrl+C), or until one of them
    stops; then SIGTERM to the others and wait for each. 0 when every child exited 0.

    Each child runs in its own process group, so a Ctrl+C in the terminal reaches only this
    process, which asks each child for its graceful stop (gunicorn's SIGINT is a quick one)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    failed = False
    try:
        for name, command in children.items():
            procs[name] = subprocess.Popen(
                list(command), env=dict(env), process_group=0, preexec_fn=_die_with_parent
            )
        while not stop.wait(0.2):
            ended = [name for name, proc in procs.items() if proc.poll() is not None]
            if ended:
                logger.error("%s stopped (exit %s); stopping the rest", ended[0],
                             procs[ended[0]].returncode)  # fmt: skip
                failed = True
                break
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                logger.error("%s did not stop within %.0f s; killed", name, grace)
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = {name: proc.returncode for name, proc in procs.items()}
    if any(codes.values()):
        logger.error("exit statuses: %s", codes)
    return 1 if failed or any(codes.values()) else 0


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when `up` dies, even by SIGKILL (Linux), so that
    no worker or server outlives the command that started it."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the children stop with `up` only when it stops gracefully


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of `up`'s children: this one, plus what `up` decided (database, key)."""
    env = dict(os.environ)
    if settings.database_url:
        env["PARCOURS_DATABASE_URL"] = settings.database_url
    if settings.api_key:
        env["PARCOURS_API_KEY"] = settings.api_key
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        # The worker's counters reach the web's /metrics through files prometheus_client keeps
        # in one folder for every process; emptied here, before any of them starts.
        folder = (settings.data_dir / "metrics").resolve()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return env
