"""The designer at size, in Debian's Chromium (Playwright): a 200-step journey opened in the
editor, and the journeys list with 500 journeys, each beside its small baseline in the same run.

Two workspaces are served by the real designer (werkzeug, a fresh SQLite database, signed in):
a small one of 5 journeys and a large one of 500 (examples under new ids and generated journeys
of 10 to 50 steps, as bench/lint_size.py writes them), both holding a generated 5-step journey,
the large one a 200-step journey too (a chain of wait, condition and send steps whose conditions
branch ahead). Each page is loaded once first (the server lints and caches the files: reported
as "first load"), then timed, median of --repeat fresh page loads:

  editor open — from navigation start until the editor is ready: every step drawn on the canvas
                (one .drawflow-node per step of the file) and the inspector painted;
  select      — a click on a step in the middle of the canvas until the inspector shows that
                step (its id field holds the step's id);
  list        — /scenarios, from navigation start until the page has loaded (load event) with
                one row per journey;
  server      — the time to the first byte of each page (Navigation Timing, responseStart -
                requestStart): what the server spends before the browser can start.

Checked in the same run: the node and row counts, the inspector's step, no console error.

    python bench/designer_size.py [--steps 200] [--scenarios 500] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import logging

from lint_size import generated, write_folder
from werkzeug.serving import make_server

from designer import create_app
from designer.auth import create_user
from engine.config import load_settings
from engine.store.db import make_engine, upgrade

CHROMIUM = os.environ.get("PARCOURS_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PASSWORD = "correct horse battery"
SMALL_JOURNEY = "steps-5"


@contextmanager
def served(root: Path, name: str, journeys: int, big_steps: int | None) -> Iterator[str]:
    """The designer on a workspace of `journeys` journeys (one of them SMALL_JOURNEY, and one of
    `big_steps` steps when given); its URL."""
    folder = root / name / "scenarios"
    folder.mkdir(parents=True)
    rng = random.Random(15)
    extra = [SMALL_JOURNEY] + ([f"steps-{big_steps}"] if big_steps else [])
    write_folder(folder, journeys - len(extra))
    (folder / f"{SMALL_JOURNEY}.yaml").write_text(generated(SMALL_JOURNEY, 5, rng))
    if big_steps:
        big = f"steps-{big_steps}"
        (folder / f"{big}.yaml").write_text(generated(big, big_steps, rng), encoding="utf-8")
    url = f"sqlite:///{root / name / 'designer.db'}"
    engine = make_engine(url)
    upgrade(engine)
    create_user(engine, "marketer", "marketer", password=PASSWORD)
    engine.dispose()
    settings = load_settings(
        {}, database_url=url, data_dir=root / name, scenarios_dir=folder, api_key="bench-key"
    )
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        app.extensions["parcours"].engine.dispose()


NODES = "document.querySelectorAll('.drawflow-node').length"
EDITOR_READY = f"""n => {NODES} === n && window.ParcoursEditor
    && document.querySelector('[data-testid=inspector]').childElementCount > 0
    ? performance.now() : false"""
LIST_READY = """n => document.readyState === 'complete'
    && document.querySelectorAll('[data-testid=scenario-list] tr[data-testid^=row-]').length === n
    ? performance.now() : false"""
SERVER = """() => { const t = performance.getEntriesByType('navigation')[0];
    return t.responseStart - t.requestStart; }"""


class Session:
    """One signed-in browser context on a site; console errors collected."""

    def __init__(self, browser: Any, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = self.context.new_page()
        self._watch(page)
        page.goto(url + "/login")
        page.fill("input[name=username]", "marketer")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/scenarios", timeout=120_000)
        page.close()

    def _watch(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def timed(
        self, path: str, ready: str, arg: int, then: Callable[[Any], float] | None = None
    ) -> tuple[float, float, float]:
        """(ms to ready from navigation start, server ms, ms of `then`) on a fresh page."""
        page = self.context.new_page()
        self._watch(page)
        try:
            page.goto(self.url + path, wait_until="commit", timeout=120_000)
            done = page.wait_for_function(ready, arg=arg, polling="raf", timeout=120_000)
            ms = float(done.json_value())
            server = float(page.evaluate(SERVER))
            extra = then(page) if then else 0.0
            return ms, server, extra
        finally:
            page.close()


def select_middle(steps: int) -> Callable[[Any], float]:
    target = f"s{steps // 2:03d}"

    def select(page: Any) -> float:
        page.locator(f'[data-testid="node-{target}"] .pc-title').scroll_into_view_if_needed()
        started = time.perf_counter()
        page.click(f'[data-testid="node-{target}"] .pc-title')
        page.wait_for_function(
            "id => { const f = document.querySelector('[data-testid=field-id]');"
            " return f && f.value === id; }",
            arg=target,
            polling="raf",
        )
        return (time.perf_counter() - started) * 1000

    return select


def median(runs: list[tuple[float, float, float]], index: int) -> float:
    return statistics.median(r[index] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--scenarios", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    from playwright.sync_api import sync_playwright

    big = f"steps-{args.steps}"
    failures: list[str] = []
    rows: list[tuple[str, float, float, float, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="parcours-designer-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        root = Path(tmp)
        with (
            served(root, "small", 5, None) as small,
            served(root, "large", args.scenarios, args.steps) as large,
        ):
            s_small, s_large = Session(browser, small), Session(browser, large)
            for label, session, journey, steps in (
                (f"editor, {SMALL_JOURNEY} ({args.scenarios} journeys)", s_large, SMALL_JOURNEY, 5),
                (f"editor, {big} ({args.scenarios} journeys)", s_large, big, args.steps),
            ):
                path = f"/scenarios/{journey}/edit"
                first = session.timed(path, EDITOR_READY, steps)
                runs = [
                    session.timed(path, EDITOR_READY, steps, select_middle(steps))
                    for _ in range(args.repeat)
                ]
                rows.append((label, first[0], median(runs, 0), median(runs, 1), median(runs, 2)))
            for label, session, count in (
                ("journeys list, 5 journeys", s_small, 5),
                (f"journeys list, {args.scenarios} journeys", s_large, args.scenarios),
            ):
                first = session.timed("/scenarios", LIST_READY, count)
                runs = [session.timed("/scenarios", LIST_READY, count) for _ in range(args.repeat)]
                rows.append((label, first[0], median(runs, 0), median(runs, 1), None))
            for session in (s_small, s_large):
                failures += [f"console: {e}" for e in session.errors]
                session.context.close()
        browser.close()
    print(f"median of {args.repeat} fresh page loads, Chromium {CHROMIUM}\n")
    print("| page | first load | ready | server (first byte) | select a step | / baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, (label, cold, ready, server, select) in enumerate(rows):
        base = rows[i - 1][2] if i % 2 else ready
        selected = f"{select:.0f} ms" if select is not None else ""
        print(
            f"| {label} | {cold:.0f} ms | {ready:.0f} ms | {server:.0f} ms | {selected} "
            f"| {ready / base:.2f} |"
        )
    editor, listing = rows[1][2], rows[3][2]
    print(
        f"\ntargets: {big} editor ready ≤ 1 s: {'met' if editor <= 1000 else 'NOT met'}; "
        f"{args.scenarios} journeys list ≤ 1 s: {'met' if listing <= 1000 else 'NOT met'}"
    )
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures[:20]))
        return 1
    print(
        "checks: every step drawn, the inspector on the clicked step, every row, no console error"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
