"""Time and peak memory of each payload of the render-budget corpus, compiled and rendered.

Each payload runs in its own child process, capped at 1 GiB of address space beyond what the
child starts with and killed after --timeout seconds, so a payload that would take 4 GB or
a minute shows as MemoryError or timeout instead of taking the machine.

    python bench/render_budget.py [--root DIR] [--timeout 10]

--root runs the corpus against another checkout's engine (to compare with an older version).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[2])
from tests.unit.spec.test_render_budget import CONTEXT, PAYLOADS
from engine.spec.expressions import compile_template
with open("/proc/self/statm") as f:
    start = int(f.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (start + 2**30, start + 2**30))
source = PAYLOADS[int(sys.argv[3])][1]
began = time.monotonic()
try:
    compile_template("t", {"text": source}).render(CONTEXT)
    outcome = "rendered"
except Exception as exc:
    outcome = getattr(exc, "code", None) or type(exc).__name__
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"seconds": time.monotonic() - began, "peak_mb": peak, "outcome": outcome}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(HERE), help="checkout whose engine to run")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from tests.unit.spec.test_render_budget import PAYLOADS

    longest = ("", 0.0)
    for i, (name, *_) in enumerate(PAYLOADS):
        began = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-c", CHILD, args.root, str(HERE), str(i)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            found = json.loads(done.stdout) if done.returncode == 0 else None
        except subprocess.TimeoutExpired:
            found = {"seconds": time.monotonic() - began, "peak_mb": None, "outcome": "timeout"}
        if found is None:
            found = {"seconds": None, "peak_mb": None, "outcome": f"exit {done.returncode}"}
        seconds = found["seconds"]
        if seconds is not None and seconds > longest[1]:
            longest = (name, seconds)
        shown = "-" if seconds is None else f"{seconds:.3f}"
        print(f"{name:24} {shown:>8} s {found['peak_mb'] or '-':>6} MB  {found['outcome']}")
    print(f"longest: {longest[0]} {longest[1]:.3f} s")


if __name__ == "__main__":
    main()
