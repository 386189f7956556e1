"""`parcours lint` on a folder of 1,000 scenario files, timed as a process.

The folder holds copies of the example scenarios of scenarios/ under new ids (their templates
folder copied beside them) and generated scenarios of 10 to 50 steps (chains and branches of
condition, send and wait steps, inline content), plus one deliberately broken file. Timed, each
as a fresh `python` process, best of --repeat:

  lint 1,000      — `parcours lint <folder>` (the figure; target ≤ 5 s);
  lint 1          — `parcours lint <one file>`: the command's start-up, paid once;
  YAML load       — PyYAML's libyaml loader on the same 1,000 files in one process (the floor
                    any linter reading YAML pays, start-up included).

Checked in the same run: the valid folder lints with 0 errors and 0 warnings over every file;
the same folder with the broken file added exits 1 and reports exactly that file with its line.

    python bench/lint_size.py [--files 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "scenarios"
PARCOURS = [str(Path(sys.executable).parent / "parcours")]  # the installed command
BROKEN_NAME = "broken.yaml"
BROKEN_LINE = 18  # the `next` that names no step
BROKEN = """\
format_version: 1
id: broken
name: Broken journey
objective: other
triggers:
  - manual: true
steps:
  first:
    type: wait
    duration: 1d
    next: mail
  mail:
    type: send
    channel: email
    content:
      subject: "Hello"
      text: "Hi"
    next: nowhere
"""


def examples() -> list[tuple[str, str]]:
    """(id, text) of each example scenario of scenarios/."""
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        match = re.search(r"^id: (\S+)$", text, re.MULTILINE)
        if match and "steps:" in text:
            found.append((match.group(1), text))
    return found


def generated(scenario_id: str, steps: int, rng: random.Random) -> str:
    """A valid scenario of `steps` steps: a chain of wait/condition/send with condition branches
    that rejoin the chain further on."""
    lines = [
        "format_version: 1",
        f"id: {scenario_id}",
        f"name: Generated journey {scenario_id}",
        "objective: other",
        "triggers:",
        "  - event: signed_up",
        "steps:",
    ]
    names = [f"s{i:03d}" for i in range(steps)]
    for i, name in enumerate(names):
        after = names[i + 1] if i + 1 < steps else "null"
        kind = ("wait", "condition", "send")[i % 3] if i + 1 < steps else "send"
        lines.append(f"  {name}:")
        if kind == "wait":
            lines += [
                "    type: wait",
                f"    duration: {rng.randint(1, 30)}d",
                f"    next: {after}",
            ]
        elif kind == "condition":
            jump = i + rng.randint(2, 6)
            skip = names[jump] if jump < steps else "null"
            lines += [
                "    type: condition",
                "    if:",
                "      attribute: score",
                "      op: gte",
                f"      value: {rng.randint(0, 100)}",
                f"    then: {after}",
                f"    else: {skip}",
            ]
        else:
            lines += [
                "    type: send",
                "    channel: email",
                "    content:",
                f'      subject: "Step {i} of {scenario_id} for {{{{ contact.first_name }}}}"',
                '      text: "Your score is {{ contact.score }}."',
                f"    next: {after}",
            ]
    return "\n".join(lines) + "\n"


def write_folder(folder: Path, files: int, seed: int = 15) -> list[Path]:
    """Write `files` valid scenario files (examples under new ids, then generated ones)."""
    rng = random.Random(seed)
    shutil.copytree(EXAMPLES / "templates", folder / "templates")
    written = []
    samples = examples()
    derived = min(files // 2, len(samples) * 40)
    for n in range(derived):
        old_id, text = samples[n % len(samples)]
        new_id = f"{old_id}-{n:04d}"
        text = re.sub(rf"^id: {re.escape(old_id)}$", f"id: {new_id}", text, flags=re.MULTILINE)
        written.append(folder / f"{new_id}.yaml")
        written[-1].write_text(text, encoding="utf-8")
    for n in range(files - derived):
        new_id = f"gen-{n:04d}"
        written.append(folder / f"{new_id}.yaml")
        written[-1].write_text(generated(new_id, rng.randint(10, 50), rng), encoding="utf-8")
    return written


Timing = tuple[float, float]  # wall seconds, CPU seconds (user + system) of the process


def run(args: list[str]) -> tuple[Timing, subprocess.CompletedProcess[str]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return (wall, cpu), done


def best(args: list[str], repeat: int) -> tuple[Timing, subprocess.CompletedProcess[str]]:
    runs = [run(args) for _ in range(repeat)]
    return min(t for t, _ in runs), runs[-1][1]


YAML_LOAD = """
import sys, yaml
from pathlib import Path
for p in sorted(Path(sys.argv[1]).glob('*.yaml')):
    yaml.load(p.read_text(encoding='utf-8'), Loader=yaml.CSafeLoader)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="parcours-lint-") as tmp:
        folder = Path(tmp) / "workspace"
        folder.mkdir()
        written = write_folder(folder, args.files)
        lint_all, done = best([*PARCOURS, "lint", str(folder)], args.repeat)
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
        expected = f"0 errors, 0 warnings in {len(written)} files"
        if done.returncode != 0 or summary != expected:
            failures.append(
                f"valid folder: exit {done.returncode}, {summary!r} (want {expected!r})"
            )
        lint_one, done = best([*PARCOURS, "lint", str(written[-1])], args.repeat)
        if done.returncode != 0:
            failures.append(f"one file: exit {done.returncode}")
        yaml_load, done = best([sys.executable, "-c", YAML_LOAD, str(folder)], args.repeat)
        if done.returncode != 0:
            failures.append(f"YAML load: {done.stderr.strip()[-200:]}")
        broken = folder / BROKEN_NAME
        broken.write_text(BROKEN, encoding="utf-8")
        lint_broken, done = run([*PARCOURS, "lint", str(folder)])
        reported = [line for line in done.stdout.splitlines() if str(folder) in line]
        # every line of the report names a file; only the broken one may be named
        want = f"{broken}:{BROKEN_LINE}:"
        if done.returncode != 1 or len(reported) != 1 or not reported[0].startswith(want):
            failures.append(
                f"broken file: exit {done.returncode}, reported {reported} (want {want})"
            )
    n = len(written)
    print(f"{n} valid files (+1 broken), best of {args.repeat}, each a fresh process\n")
    print("| run | wall | CPU | CPU / YAML load |")
    print("|---|---:|---:|---:|")
    for name, (wall, cpu) in (
        (f"`parcours lint` {n} files", lint_all),
        (f"`parcours lint` {n} + 1 broken", lint_broken),
        ("`parcours lint` 1 file (start-up)", lint_one),
        (f"libyaml load of {n} files", yaml_load),
    ):
        print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {cpu / yaml_load[1]:.2f} |")
    marginal = (lint_all[1] - lint_one[1]) / max(n - 1, 1) * 1000
    print(
        f"\nlint CPU per file beyond start-up: {marginal:.2f} ms; target ≤ 5 s wall: "
        f"{'met' if lint_all[0] <= 5 else 'NOT met'}"
    )
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("checks: 0 problems in the valid folder; the broken file reported once with its line")
    return 0


if __name__ == "__main__":
    sys.exit(main())
