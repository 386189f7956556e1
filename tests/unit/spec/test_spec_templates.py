"""Template checks: channels, folders, parts, variables, syntax; webhook payloads; compilation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.spec.loader import lint_text, load_scenario_text
from engine.spec.problems import Problem
from engine.spec.templates import (
    TemplateLibrary,
    fill_payload,
    payload_strings,
    read_template_dir,
)

HEAD = """\
format_version: 1
id: t
name: Templates
objective: other
triggers: [{manual: true}]
data:
  promo_code: SPRING
steps:
"""
Writer = Callable[[Path, dict[str, dict[str, str]]], None]


def send(channel: str, source: str) -> str:
    return f"  msg:\n    type: send\n    channel: {channel}\n{source}"


def lint(steps: str, root: Path | None = None) -> list[Problem]:
    return lint_text(HEAD + steps, templates_root=root)[1]


def test_read_template_dir(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(tmp_path, {"welcome-1": {"subject": "Hi", "html": "<p>Hi</p>"}})
    (tmp_path / "templates" / "welcome-1" / "notes.md").write_text("ignored", encoding="utf-8")
    assert read_template_dir(tmp_path / "templates", "welcome-1") == {
        "subject": "Hi",
        "html": "<p>Hi</p>",
    }
    assert read_template_dir(tmp_path / "templates", "../welcome-1") == {}
    assert TemplateLibrary(tmp_path / "templates").names() == ["welcome-1"]


def test_unknown_variable_in_a_template_file(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(
        tmp_path, {"promo": {"subject": "Hi", "text": "Line 1\n{{ contct.first_name }}"}}
    )
    steps = send("email", "    template: promo\n")
    problems = lint(steps, tmp_path / "templates")
    (problem,) = problems
    assert (problem.code, problem.field, problem.step) == (
        "template.unknown_variable", "steps.msg.template", "msg",
    )  # fmt: skip
    assert problem.line == (HEAD + steps).splitlines().index("    template: promo") + 1
    assert problem.message.startswith("templates/promo/text.txt line 2:")
    assert "'contct'" in problem.message and problem.hint == "did you mean 'contact'?"


def test_unknown_data_key_inline() -> None:
    problems = lint(send("sms", '    content:\n      text: "{{ data.promo_cod }}"\n'))
    assert [(p.code, p.field, p.hint) for p in problems] == [
        ("template.unknown_variable", "steps.msg.content.text", "did you mean 'promo_code'?")
    ]


def test_syntax_error_with_template_line(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(tmp_path, {"promo": {"subject": "Hi", "html": "<p>\n{% if x %}\n</p>"}})
    (problem,) = lint(send("email", "    template: promo\n"), tmp_path / "templates")
    assert problem.code == "template.syntax"
    assert problem.message.startswith("templates/promo/html.html line 2:")  # the open if


def test_unknown_filter_is_a_syntax_problem() -> None:
    problems = lint(send("sms", '    content:\n      text: "{{ contact.name | shout }}"\n'))
    assert [p.code for p in problems] == ["template.syntax"]
    assert "shout" in problems[0].message


@pytest.mark.parametrize(
    ("channel", "content", "missing"),
    [
        ("sms", "      subject: Hello\n", "'text'"),
        ("email", "      text: Hello\n", "'subject'"),
        ("email", "      subject: Hello\n", "'text' or 'html'"),
        ("push", "      body: Hello\n", "'title'"),
    ],
)
def test_missing_part(channel: str, content: str, missing: str) -> None:
    problems = lint(send(channel, "    content:\n" + content))
    parts = [p for p in problems if p.code == "template.missing_part"]
    assert len(parts) == 1 and f"needs a {missing} part" in parts[0].message
    assert parts[0].field == "steps.msg.content" and parts[0].severity == "error"


def test_missing_part_in_a_template_folder(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(tmp_path, {"promo": {"text": "Hello"}})
    problems = lint(send("email", "    template: promo\n"), tmp_path / "templates")
    assert [(p.code, p.field) for p in problems] == [
        ("template.missing_part", "steps.msg.template")
    ]


def test_unknown_channel() -> None:
    problems = lint(send("emial", "    content:\n      subject: Hi\n      text: Hello\n"))
    assert [(p.code, p.field, p.hint) for p in problems] == [
        ("channel.unknown", "steps.msg.channel", "did you mean 'email'?")
    ]


def test_missing_template_suggests_a_folder(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(tmp_path, {"welcome-1": {"subject": "Hi", "text": "Hello"}})
    problems = lint(send("email", "    template: welcome1\n"), tmp_path / "templates")
    assert [(p.code, p.hint) for p in problems] == [
        ("template.missing", "did you mean 'welcome-1'?")
    ]
    problems = lint(send("email", "    template: ../../etc\n"), tmp_path / "templates")
    assert [p.code for p in problems] == ["template.missing"]


def test_unknown_part_and_long_sms_are_warnings() -> None:
    text = "x" * 1531
    scenario, problems = lint_text(
        HEAD + send("sms", f"    content:\n      text: {text}\n      title: Hi\n")
    )
    assert {(p.code, p.severity, p.field) for p in problems} == {
        ("template.unknown_part", "warning", "steps.msg.content.title"),
        ("template.too_long", "warning", "steps.msg.content.text"),
    }
    assert scenario is not None
    ok = lint(send("sms", f"    content:\n      text: {'x' * 1530}\n"))
    assert ok == []


def test_non_utf8_template_file(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(tmp_path, {"promo": {"subject": "Hi"}})
    (tmp_path / "templates" / "promo" / "text.txt").write_bytes(b"caf\xe9")
    problems = lint(send("email", "    template: promo\n"), tmp_path / "templates")
    assert [p.code for p in problems] == ["template.encoding"]


def test_template_compiled_once_and_shared(tmp_path: Path, templates_writer: Writer) -> None:
    templates_writer(tmp_path, {"promo": {"subject": "Hi {{ contact.first_name }}", "text": "Yo"}})
    steps = send("email", "    template: promo\n    next: again\n") + (
        "  again:\n    type: send\n    channel: email\n    template: promo\n"
    )
    scenario = load_scenario_text(HEAD + steps, templates_root=tmp_path / "templates")
    assert list(scenario.templates) == ["promo"]
    assert (
        scenario.templates["promo"].render({"contact": {"first_name": "Ada"}})["subject"]
        == "Hi Ada"
    )


WEBHOOK = """\
  hook:
    type: webhook
    url: https://crm.example.com/leads
    payload:
      lead: "{{ contact.external_id }}"
      source: parcours
      scores: [1, "{{ contact.score }}"]
      nested: {"a/b": "{{ data.promo_code }}"}
"""


def test_webhook_payload_strings_are_templates() -> None:
    scenario = load_scenario_text(HEAD + WEBHOOK)
    template = scenario.templates["hook:payload"]
    assert set(template.parts) == {"/lead", "/source", "/scores/1", "/nested/a~1b"}
    rendered = template.render(
        {"contact": {"external_id": "c-1", "score": 7}, "data": {"promo_code": "S"}}
    )
    step = scenario.steps["hook"]
    assert fill_payload(step.payload, rendered) == {  # type: ignore[attr-defined]
        "lead": "c-1", "source": "parcours", "scores": [1, "7"], "nested": {"a/b": "S"},
    }  # fmt: skip


def test_webhook_payload_problems_point_at_the_value() -> None:
    problems = lint(WEBHOOK.replace("contact.score", "contact.score +"))
    assert [(p.code, p.field) for p in problems] == [
        ("template.syntax", "steps.hook.payload.scores.1")
    ]
    assert (
        problems[0].line
        == (HEAD + WEBHOOK).splitlines().index('      scores: [1, "{{ contact.score }}"]') + 1
    )


def test_payload_strings_pointers() -> None:
    found = list(payload_strings({"a": ["x", {"b~": "y"}], "n": 1}))
    assert found == [("/a/0", ("a", 0), "x"), ("/a/1/b~0", ("a", 1, "b~"), "y")]
