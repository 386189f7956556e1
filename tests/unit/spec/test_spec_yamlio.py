"""Safe YAML: plain data, positions, limits, and the comment-keeping round trip."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ScenarioInvalid
from engine.spec.lint import NOT_SCENARIOS
from engine.spec.yamlio import (
    MAX_DEPTH,
    decode_source,
    dump_roundtrip,
    load_roundtrip,
    parse_yaml,
    set_in,
)

ROOT = Path(__file__).resolve().parents[3]


def problems_of(text: str) -> list[tuple[str, int | None]]:
    with pytest.raises(ScenarioInvalid) as info:
        parse_yaml(text, "s.yaml")
    return [(p.code, p.line) for p in info.value.problems]


def test_plain_data_and_yaml_1_2_scalars() -> None:
    data, _ = parse_yaml("a: yes\nb: 09:00\nc: 2024-05-01\nd: 0x10\ne: ~\nf: 1.5\ng: [on, 'x']\n")
    assert data == {"a": "yes", "b": "09:00", "c": "2024-05-01", "d": 16, "e": None, "f": 1.5,
                    "g": ["on", "x"]}  # fmt: skip
    assert type(data) is dict and type(data["g"]) is list and type(data["a"]) is str


def test_positions_of_keys_and_values(cart_yaml: str) -> None:
    _, positions = parse_yaml(cart_yaml)
    assert positions.locate(("steps", "wait-1h", "duration")) == (25, 15)
    assert positions.locate(("steps", "wait-1h"), prefer_key=True) == (23, 3)
    assert positions.locate(("triggers", 0, "where", 0, "value")) == (13, 16)
    # a missing field is placed on its nearest existing ancestor's key
    assert positions.locate(("steps", "wait-1h", "missing", 3)) == (23, 3)
    assert positions.locate(()) == (2, 1)


def test_billion_laughs_is_refused_at_the_first_anchor() -> None:
    text = 'a: &a ["lol", "lol"]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c]\n'
    assert problems_of(text) == [("yaml.alias", 1)]


def test_alias_is_refused() -> None:
    assert problems_of("a: 1\nb: *nowhere\n") == [("yaml.alias", 2)]
    assert problems_of("a: &x 1\nb: *x\n") == [("yaml.alias", 1)]


def test_python_tag_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"a: !!python/object/apply:os.system ['touch {marker}']\n"
    assert problems_of(text) == [("yaml.tag", 1)]
    assert not marker.exists()


def test_custom_tags_are_refused_core_tags_accepted() -> None:
    assert problems_of("a: 1\nb: !secret x\n") == [("yaml.tag", 2)]
    assert parse_yaml("a: !!str 5\nb: !!int '7'\n")[0] == {"a": "5", "b": 7}


@pytest.mark.parametrize("text", ["a: !!bool maybe\n", "a: !!int x\n", "a: !!float abc\n"])
def test_core_tag_on_a_wrong_value(text: str) -> None:
    assert problems_of(text) == [("yaml.tag", 1)]


def test_depth_10000_is_a_limit_not_a_crash() -> None:
    codes = problems_of("a: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert codes == [("yaml.limit", 1)]
    parse_yaml("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n")


def test_too_many_nodes() -> None:
    assert problems_of("a: [" + ", ".join(["1"] * 10_001) + "]\n") == [("yaml.limit", 1)]


def test_300_kib_input_is_refused() -> None:
    assert problems_of("a: '" + "x" * (300 * 1024) + "'\n") == [("yaml.limit", None)]


def test_duplicate_keys_report_both_lines() -> None:
    with pytest.raises(ScenarioInvalid) as info:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n")
    (problem,) = info.value.problems
    assert (problem.code, problem.line, problem.path) == ("yaml.duplicate_key", 4, ("b", "c"))
    assert "line 3" in problem.message and problem.extra["lines"] == [3, 4]


def test_nul_byte_and_control_characters() -> None:
    assert problems_of("a: 1\nb: x\x00y\n") == [("yaml.encoding", 2)]
    assert problems_of("a: \x07\n") == [("yaml.encoding", 1)]
    assert problems_of("a: \udcff\n") == [("yaml.encoding", 1)]


def test_non_utf8_bytes_and_bom() -> None:
    with pytest.raises(ScenarioInvalid) as info:
        decode_source(b"a: 1\nb: caf\xe9\n", "s.yaml")
    assert [(p.code, p.line) for p in info.value.problems] == [("yaml.encoding", 2)]
    assert parse_yaml(decode_source(b"\xef\xbb\xbfa: 1\n"))[0] == {"a": 1}
    assert parse_yaml("\ufeffa: 1\n")[0] == {"a": 1}


def test_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ScenarioInvalid) as info:
        parse_yaml("a: 1\nb: c: d\n", "s.yaml")
    (problem,) = info.value.problems
    assert (problem.code, problem.line, problem.column, problem.file) == (
        "yaml.syntax",
        2,
        5,
        "s.yaml",
    )


def test_complex_keys_and_second_documents() -> None:
    assert problems_of("? [a]\n: 1\n") == [("yaml.key", 1)]
    assert problems_of("a: 1\n---\nb: 2\n") == [("yaml.syntax", 2)]


def test_empty_document_is_none() -> None:
    assert parse_yaml("# nothing\n")[0] is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"ab:-[]{}&*!|>'\"#?,\n \t\\%@`~0.\x00\x85", "!!bool ", "!!int ", "<<"])
    ).map("".join)
)
def test_no_input_raises_anything_but_scenario_invalid(text: str) -> None:
    try:
        parse_yaml(text)
    except ScenarioInvalid as exc:
        assert exc.problems


# ------------------------------------------------------------------ round trip

HAND_WRITTEN = """\
# A file with the usual hand-written shapes.
---
# after the marker
format_version: 1
id: hand-written   # trailing comment
name: "Quoted name"
description: 'single quoted'

objective: other
triggers:
  - event: signed_up
    where: [{property: plan, op: in, value: [pro, team]}]
  # a comment between items
  - schedule: "0 9 * * mon"
    timezone: Europe/Paris
data:
  long: a long line that is longer than eighty characters and should never be wrapped by the dumper at all
  flag: true
steps:
  first:
    type: send
    channel: sms
    content:
      text: |
        Hello {{ contact.first_name }},
        two lines.
    next:
  # the end
  done:
    type: exit
"""


EXAMPLES = [
    "cart",
    "hand-written",
    *sorted(str(p) for p in (ROOT / "scenarios").glob("*.y*ml") if p.name not in NOT_SCENARIOS),
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_roundtrip_is_identity(example: str, cart_yaml: str) -> None:
    texts = {"cart": cart_yaml, "hand-written": HAND_WRITTEN}
    text = texts.get(example) or Path(example).read_text(encoding="utf-8")
    assert dump_roundtrip(load_roundtrip(text)) == text


def test_set_in_changes_exactly_one_line(cart_yaml: str) -> None:
    doc = load_roundtrip(cart_yaml)
    set_in(doc, ("steps", "wait-1h", "duration"), "2h")
    diff = [
        line
        for line in difflib.unified_diff(
            cart_yaml.splitlines(), dump_roundtrip(doc).splitlines(), n=0
        )
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff == ["-    duration: 1h", "+    duration: 2h"]


def test_set_in_keeps_quotes_and_comments() -> None:
    text = "a: 'x'  # keep me\nb:\n  - \"y\"\n"
    doc = load_roundtrip(text)
    set_in(doc, ("a",), "z")
    set_in(doc, ("b", 0), "w")
    assert dump_roundtrip(doc) == "a: 'z'  # keep me\nb:\n  - \"w\"\n"
    with pytest.raises(KeyError):
        set_in(doc, ("nope", "deeper"), 1)


def test_load_roundtrip_applies_the_same_limits() -> None:
    with pytest.raises(ScenarioInvalid):
        load_roundtrip("a: &a 1\nb: *a\n")
    with pytest.raises(ScenarioInvalid):
        load_roundtrip("- a list\n")
