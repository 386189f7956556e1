"""A large folder is linted by worker processes with the same report as one process gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.spec import lint
from engine.spec.lint import lint_paths

FILES = 70

STARTS = """\
format_version: 1
id: {id}
name: Starts another
objective: other
triggers:
  - manual: true
steps:
  go:
    type: start_scenario
    scenario: {target}
"""


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for n in range(FILES):
        target = "j-0001" if n % 7 else "no-such-journey"
        (folder / f"j-{n:04d}.yaml").write_text(STARTS.format(id=f"j-{n:04d}", target=target))
    (folder / "j-copy.yaml").write_text(STARTS.format(id="j-0003", target="j-0001"))
    (folder / "j-broken.yaml").write_text("id: [unclosed\n")
    return folder


def _report(folder: Path) -> list[tuple[str | None, int | None, str]]:
    return [(Path(p.file).name if p.file else None, p.line, p.code) for p in lint_paths([folder])]


def test_worker_processes_report_what_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path)
    pools: list[int] = []
    real_pool = lint.ProcessPoolExecutor

    def pool(workers: int, **kwargs: object) -> object:
        pools.append(workers)
        return real_pool(workers, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lint, "ProcessPoolExecutor", pool)
    monkeypatch.setattr(lint.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    parallel = _report(folder)
    monkeypatch.setattr(lint, "PARALLEL_FROM", 10**9)
    alone = _report(folder)
    assert pools == [2]  # the first report came from two worker processes, the second not
    assert parallel == alone
    codes = {code for _, _, code in alone}
    assert {"scenario.duplicate_id", "graph.unknown_scenario", "yaml.syntax"} <= codes
    unknown = [(f, line) for f, line, code in alone if code == "graph.unknown_scenario"]
    assert len(unknown) == len(range(0, FILES, 7)) and all(line == 10 for _, line in unknown)
    assert ("j-copy.yaml", 2, "scenario.duplicate_id") in alone
