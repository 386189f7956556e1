"""Linting many files: directories, duplicate ids, unknown scenarios, the report format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.spec.lint import format_problems, lint_paths, scenario_files
from engine.spec.problems import Problem

Writer = Callable[[Path, dict[str, dict[str, str]]], None]


def scenario(scenario_id: str, steps: str = "  done:\n    type: exit\n") -> str:
    return (
        f"format_version: 1\nid: {scenario_id}\nname: N\nobjective: other\n"
        f"triggers: [{{manual: true}}]\nsteps:\n{steps}"
    )


START = "  go:\n    type: start_scenario\n    scenario: {target}\n"


def test_directory_means_its_yaml_files_only(cart_dir: Path) -> None:
    (cart_dir / "notes.txt").write_text("not a scenario", encoding="utf-8")
    (cart_dir / "templates" / "stray.yaml").write_text("a: [", encoding="utf-8")
    assert scenario_files([cart_dir]) == [cart_dir / "cart-abandonment.yaml"]
    assert lint_paths([cart_dir]) == []


def test_duplicate_ids_and_unknown_scenarios(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(scenario("a", START.format(target="welcom")), encoding="utf-8")
    (tmp_path / "b.yml").write_text(scenario("a"), encoding="utf-8")
    (tmp_path / "welcome.yaml").write_text(scenario("welcome"), encoding="utf-8")
    problems = lint_paths([tmp_path])
    found = {(Path(p.file or "").name, p.code, p.line, p.hint) for p in problems}
    assert ("b.yml", "scenario.duplicate_id", 2, "give each scenario its own id") in found
    assert ("a.yaml", "graph.unknown_scenario", 9, "did you mean 'welcome'?") in found
    assert ("b.yml", "scenario.filename", 2, "rename the file to a.yml") in found


def test_unknown_scenarios_only_checked_for_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(scenario("a", START.format(target="elsewhere")), encoding="utf-8")
    assert lint_paths([path]) == []
    assert [p.code for p in lint_paths([tmp_path])] == ["graph.unknown_scenario"]


def test_missing_and_broken_files(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"id: caf\xe9\n")
    problems = lint_paths([tmp_path / "nope.yaml", tmp_path / "bad.yaml"])
    assert [(Path(p.file or "").name, p.code) for p in problems] == [
        ("bad.yaml", "yaml.encoding"),
        ("nope.yaml", "file.missing"),
    ]


def test_format_problems() -> None:
    problems = [
        Problem("graph.missing_step", "'x' is not a step of this scenario.", ("steps", "a", "next"),
                file="s.yaml", line=12, column=11, step="a", hint="did you mean 'b'?"),
        Problem("scenario.filename", "Name differs.", ("id",), file="t.yaml", line=2, column=5,
                severity="warning"),
    ]  # fmt: skip
    text = format_problems(problems)
    assert text.splitlines() == [
        "s.yaml:12:11: error [graph.missing_step] step 'a' field steps.a.next: "
        "'x' is not a step of this scenario. (did you mean 'b'?)",
        "t.yaml:2:5: warning [scenario.filename] field id: Name differs.",
        "1 error, 1 warning in 2 files",
    ]
    assert format_problems([], files=3) == "0 errors, 0 warnings in 3 files"
    colored = format_problems(problems, color=True)
    assert "\x1b[31merror\x1b[0m [graph.missing_step]" in colored
    assert "\x1b[33mwarning\x1b[0m" in colored
