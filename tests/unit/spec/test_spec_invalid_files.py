"""One invalid scenario per problem code; each file's first line says which codes it must raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.spec.loader import lint_text

DATA = Path(__file__).parent / "data" / "invalid"
FILES = sorted(DATA.glob("*.yaml"))


def expected_codes(path: Path) -> list[str]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# expect:"), f"{path.name} must start with '# expect: code, ...'"
    return [code.strip() for code in first.removeprefix("# expect:").split(",")]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_invalid_file_reports_expected_codes_with_lines(path: Path) -> None:
    scenario, problems = lint_text(path.read_text(encoding="utf-8"), str(path), DATA / "templates")
    for code in expected_codes(path):
        found = [p for p in problems if p.code == code]
        assert found, f"{path.name}: no {code} in {[p.format() for p in problems]}"
        assert all(p.line is not None and p.line > 1 for p in found), found
        assert all(p.file == str(path) for p in found)
    if any(p.severity == "error" for p in problems):
        assert scenario is None


def test_every_code_has_a_file() -> None:
    covered = {code for path in FILES for code in expected_codes(path)}
    assert {
        "yaml.syntax", "yaml.alias", "yaml.tag", "yaml.duplicate_key", "yaml.limit", "yaml.key",
        "schema.unknown_field", "schema.required", "schema.invalid",
        "graph.missing_step", "graph.unreachable", "graph.loop_without_wait",
        "graph.wait_without_exit", "graph.split_without_exit", "graph.self_start",
        "channel.unknown", "template.missing", "template.missing_part", "template.unknown_part",
        "template.syntax", "template.unknown_variable", "template.too_long", "scenario.filename",
    } <= covered  # fmt: skip
