"""A manual segment imported from a CSV of external ids at scale, as an operator runs it.

Loads 1.1 N contacts set-based into a fresh database (bench.segments' loader, no events), writes
a CSV of N external ids (and 0.1% unknown ones, rejected with their line), then times the
real command in a subprocess, start-up included:

  first   — `parcours segment import bench FILE` into the empty segment (every contact enters,
            each with its history row);
  again   — the same command with a list where 10% of the ids changed (10% leave, 10% enter).

    python bench/segment_import.py [--contacts 1000000] [--db postgresql|sqlite|both]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from bench.segments import load
from bench.steps import fresh_database
from engine.store.db import make_engine, upgrade
from engine.store.models import SegmentChange, SegmentMember

SEGMENT = "format_version: 1\nid: bench\nname: Bench list\nmanual: {}\n"


def write_list(path: Path, contacts: int, shift: int) -> int:
    """Ids c<shift+1>..c<shift+contacts>; one in 1,000 names no contact."""
    rows = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("external_id,note\n")
        for i in range(shift + 1, shift + contacts + 1):
            out.write(f"{'x' if i % 1000 == 0 else 'c'}{i},bench\n")
            rows += 1
    return rows


def run_import(url: str, workspace: Path, csv: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCOURS_")}
    env.update(PARCOURS_DATABASE_URL=url, PARCOURS_SCENARIOS_DIR=str(workspace))
    command = [sys.executable, "-c", "from designer.cli import main; main()"]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "segment", "import", "bench", str(csv), "--rejects", str(csv) + ".rejects"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr)
    return elapsed, done.stdout.strip()


def bench(kind: str, contacts: int) -> None:
    with tempfile.TemporaryDirectory(prefix="parcours-bench-") as tmp:
        url, drop = fresh_database(kind, Path(tmp))
        try:
            upgrade(url)
            load(url, kind, contacts + contacts // 10, 0)  # room for the changed ids
            workspace = Path(tmp) / "scenarios"
            (workspace / "segments").mkdir(parents=True)
            (workspace / "segments" / "bench.yaml").write_text(SEGMENT, encoding="utf-8")
            for label, shift in (("first", 0), ("again", contacts // 10)):
                csv = Path(tmp) / f"{label}.csv"
                rows = write_list(csv, contacts, shift)
                elapsed, said = run_import(url, workspace, csv)
                print(f"{kind:<10} {label:<6} {rows:>9} rows {elapsed:7.1f} s "
                      f"{rows / elapsed:>10,.0f} rows/s  | {said}")  # fmt: skip
            engine = make_engine(url)
            with engine.connect() as conn:
                members = conn.execute(select(func.count()).select_from(SegmentMember)).scalar()
                history = conn.execute(select(func.count()).select_from(SegmentChange)).scalar()
            engine.dispose()
            print(f"{kind:<10} members {members:,}, history rows {history:,}")
        finally:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--db", default="both", choices=("sqlite", "postgresql", "both"))
    args = parser.parse_args()
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    for kind in kinds:
        bench(kind, args.contacts)


if __name__ == "__main__":
    main()
