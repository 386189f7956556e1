"""`parcours up` as a real process for the tests that start it: a free port, the wait until it
answers, and a stop that never leaves it running (SIGTERM, then SIGKILL if it hangs)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

CLI = [sys.executable, "-c", "from designer.cli import main; main()"]
# Importing, migrating and publishing take a second or two on a quiet machine; a loaded one
# (the suite runs on every core) can take tens: the wait ends as soon as it answers.
STARTUP_SECONDS = 90.0
STOP_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    """A running `parcours up`: its address, and once stopped, everything it printed."""

    base: str
    proc: subprocess.Popen[str]
    output: str = field(default="")


def healthy(base: str, proc: subprocess.Popen[str]) -> bool:
    """Whether `/api/health` answers 200 within STARTUP_SECONDS (False at once if it exits)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/api/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then what it printed; SIGKILL if it has not stopped in STOP_SECONDS."""
    if proc.poll() is None:
        proc.terminate()
    try:
        return str(proc.communicate(timeout=STOP_SECONDS)[0] or "")
    except subprocess.TimeoutExpired:
        proc.kill()
        out = str(proc.communicate()[0] or "")
        pytest.fail(f"parcours up did not stop within {STOP_SECONDS:.0f} s of SIGTERM:\n{out}")


def not_started(proc: subprocess.Popen[str], output: str) -> str:
    ended = f"exited {proc.returncode}" if proc.returncode not in (None, -15) else "no answer"
    return f"parcours up did not answer within {STARTUP_SECONDS:.0f} s ({ended}):\n{output}"


@contextmanager
def parcours_up(env: dict[str, str], port: int | None = None) -> Iterator[Up]:
    """`parcours up` with `env` (PARCOURS_PORT set to `port` or a free one), healthy; stopped
    when the block ends, its output then in ``.output``."""
    port = port or free_port()
    proc = subprocess.Popen(
        [*CLI, "up"], env={**env, "PARCOURS_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    up = Up(f"http://127.0.0.1:{port}", proc)
    if not healthy(up.base, proc):
        pytest.fail(not_started(proc, stop(proc)))
    try:
        yield up
    finally:
        up.output = stop(proc)
