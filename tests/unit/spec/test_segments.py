"""Segment files: loading, every lint problem on its line, composition, cycles, round trip."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ScenarioInvalid
from engine.spec.conditions import SegmentMembershipUnavailable, SegmentTest
from engine.spec.segments import (
    Segment,
    lint_segment_folder,
    lint_segment_text,
    load_segment_text,
    load_segments,
)
from engine.spec.yamlio import apply_text, dump_roundtrip, load_roundtrip

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "scenarios" / "segments"
HEAD = "format_version: 1\nid: s\nname: S\n"  # a segment 's' in three lines


@dataclass
class Contact:
    external_id: str = "c1"
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    score: int = 0
    tags: Sequence[str] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    consents: Mapping[tuple[str, str], str] = field(default_factory=dict)
    pressure: Mapping[str, str] = field(default_factory=dict)
    segments: Collection[str] | None = None


@dataclass
class Ctx:
    contact: Contact
    now: datetime = datetime(2026, 3, 1, tzinfo=UTC)
    entered_at: datetime | None = None
    event: Any = None

    def events(self, name: str) -> list[Any]:
        return []

    def expression_vars(self) -> dict[str, Any]:
        return {}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def segment(segment_id: str, body: str) -> str:
    return f"format_version: 1\nid: {segment_id}\nname: {segment_id.title()}\n{body}"


def found(problems: Any) -> set[tuple[str, int | None, int | None]]:
    return {(p.code, p.line, p.column) for p in problems}


# ------------------------------------------------------------------ the examples


def test_examples_load_with_their_composition() -> None:
    segments = load_segments(EXAMPLES)
    assert sorted(segments) == [
        "first-purchase",
        "lapsed-90-days",
        "newsletter-subscribers",
        "premium",
        "prospects",
        "repeat-buyers",
        "vip-list",
    ]
    premium = segments["premium"]
    assert isinstance(premium, Segment)
    assert premium.name == "Premium customers"
    assert premium.references == frozenset({"repeat-buyers"})
    assert premium.manual_source is None and premium.condition is not None
    vip = segments["vip-list"]
    assert vip.condition is None and vip.manual_source == "vip-list.csv" and vip.is_manual
    assert segments["prospects"].references == frozenset()


def test_examples_lint_clean() -> None:
    assert lint_segment_folder(EXAMPLES).problems == []


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_round_trip_unchanged(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert dump_roundtrip(load_roundtrip(text)) == text


def test_an_edit_changes_only_its_line() -> None:
    text = (EXAMPLES / "premium.yaml").read_text(encoding="utf-8")
    data = load_segment_text(text, "premium.yaml")
    assert data.description
    edited = apply_text(text, {**_plain(text), "name": "Premium"})
    changed = [
        (a, b) for a, b in zip(text.splitlines(), edited.splitlines(), strict=True) if a != b
    ]
    assert changed == [("name: Premium customers", "name: Premium")]


def _plain(text: str) -> dict[str, Any]:
    from engine.spec.yamlio import parse_yaml

    data, _ = parse_yaml(text)
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------------ evaluation


def test_segment_test_reads_membership() -> None:
    cond = load_segment_text(
        segment("s", "condition:\n  not:\n    segment: premium\n"), "s.yaml"
    ).condition
    assert cond is not None
    assert cond.evaluate(Ctx(Contact(segments={"vip-list"}))) is True
    assert cond.evaluate(Ctx(Contact(segments={"premium"}))) is False
    assert SegmentTest("premium").evaluate(Ctx(Contact(segments=frozenset({"premium"}))))


def test_without_membership_evaluation_fails_clearly() -> None:
    with pytest.raises(SegmentMembershipUnavailable, match="'premium'"):
        SegmentTest("premium").evaluate(Ctx(Contact(segments=None)))


# ------------------------------------------------------------------ one file's problems


@pytest.mark.parametrize(
    ("body", "code", "line", "column", "hint"),
    [
        # unknown key, with did you mean
        ("descripton: x\ncondition: {tag: vip}\n", "schema.unknown_field", 4, 1,
         "did you mean 'description'?"),
        # a condition form misspelled
        ("condition:\n  segmnt: premium\n", "schema.invalid", 5, 11, "did you mean 'segment'?"),
        # a key inside the segment form
        ("condition:\n  segment: premium\n  within: 30d\n", "schema.unknown_field", 6, 3, None),
        # a segment id that is not an id
        ("condition:\n  segment: 'not an id'\n", "schema.invalid", 5, 12, None),
        # a manual segment with a condition
        ("condition: {tag: vip}\nmanual:\n  source: s.csv\n", "segment.definition", 5, 1, None),
        # neither a condition nor a manual list; an empty condition is none
        ("description: x\n", "segment.definition", 1, 1, None),
        ("condition:\n", "segment.definition", 1, 1, None),
        # manual: an unknown key
        ("manual:\n  sorce: s.csv\n", "schema.unknown_field", 5, 3, "did you mean 'source'?"),
        # manual: not a CSV file, or outside the segments folder
        ("manual:\n  source: s.xlsx\n", "schema.invalid", 5, 11, None),
        ("manual:\n  source: ../s.csv\n", "schema.invalid", 5, 11, None),
    ],
)  # fmt: skip
def test_each_problem_on_its_line(
    body: str, code: str, line: int, column: int, hint: str | None
) -> None:
    problems = lint_segment_text(HEAD + body, "s.yaml").problems
    assert (code, line, column) in found(problems), [p.format() for p in problems]
    if hint:
        assert any((p.hint or "").endswith(hint) for p in problems if p.code == code)
    assert all(p.file == "s.yaml" for p in problems)


def test_header_problems() -> None:
    text = "format_version: 2\nid: other\nname: ''\ncondition: {tag: vip}\n"
    problems = lint_segment_text(text, "s.yaml").problems
    assert found(problems) >= {
        ("schema.invalid", 1, 17),
        ("segment.filename", 2, 5),
        ("schema.invalid", 3, 7),
    }
    renamed = next(p for p in problems if p.code == "segment.filename")
    assert renamed.severity == "error" and renamed.hint == "rename the file to other.yaml"


def test_yaml_is_read_safely() -> None:
    problems = lint_segment_text(HEAD + "condition: &c {tag: vip}\n", "s.yaml").problems
    assert found(problems) == {("yaml.alias", 4, 12)}


def test_load_raises_every_error() -> None:
    with pytest.raises(ScenarioInvalid) as caught:
        load_segment_text(HEAD + "condition: {tag: vip}\nnam: x\n", "s.yaml")
    assert [p.code for p in caught.value.problems] == ["schema.unknown_field"]


# ------------------------------------------------------------------ across files


def test_unknown_reference_with_did_you_mean(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "segments",
        {
            "repeat-buyers.yaml": segment("repeat-buyers", "condition: {tag: vip}\n"),
            "premium.yaml": segment(
                "premium", "condition:\n  all:\n    - tag: vip\n    - segment: repeat-buyer\n"
            ),
        },
    )
    problems = lint_segment_folder(folder).problems
    assert [(Path(p.file or "").name, p.code, p.line, p.column, p.hint) for p in problems] == [
        ("premium.yaml", "segment.unknown", 7, 16, "did you mean 'repeat-buyers'?")
    ]
    with pytest.raises(ScenarioInvalid):
        load_segments(folder)


def test_cycles_are_refused_and_named(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "segments",
        {
            "a.yaml": segment("a", "condition:\n  any:\n    - tag: x\n    - segment: b\n"),
            "b.yaml": segment("b", "condition:\n  segment: a\n"),
            "c.yaml": segment("c", "condition:\n  not:\n    segment: c\n"),
        },
    )
    problems = lint_segment_folder(folder).problems
    cycles = {(Path(p.file or "").name, p.line, p.message) for p in problems}
    assert cycles == {
        ("a.yaml", 7, "Segments refer to each other in a cycle: a → b → a."),
        ("c.yaml", 6, "Segments refer to each other in a cycle: c → c."),
    }
    assert {p.code for p in problems} == {"segment.cycle"}


def test_duplicate_ids(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "segments",
        {
            "a.yaml": segment("a", "condition: {tag: x}\n"),
            "b.yaml": segment("a", "condition: {tag: y}\n"),
        },
    )
    codes = {
        (Path(p.file or "").name, p.code, p.line) for p in lint_segment_folder(folder).problems
    }
    assert codes == {("b.yaml", "segment.filename", 2), ("b.yaml", "segment.duplicate_id", 2)}


def test_manual_list_needs_its_csv_with_external_ids(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "segments",
        {
            "vip.yaml": segment("vip", "manual:\n  source: vip.csv\n"),
            "lost.yaml": segment("lost", "manual:\n  source: gone.csv\n"),
            "bad.yaml": segment("bad", "manual:\n  source: bad.csv\n"),
            "later.yaml": segment("later", "manual: {}\n"),
            "vip.csv": "external_id,email\nc1,a@example.com\n",
            "bad.csv": "email\na@example.com\n",
        },
    )
    problems = lint_segment_folder(folder).problems
    assert {(Path(p.file or "").name, p.code, p.line, p.column) for p in problems} == {
        ("lost.yaml", "segment.manual_source", 5, 11),
        ("bad.yaml", "segment.manual_source", 5, 11),
    }
    later = lint_segment_folder(folder).segments["later"]
    assert later.is_manual and later.manual_source is None
