"""Every render and expression runs on a budget: payloads that would take gigabytes or minutes
are refused early, with a located error, through lint, render, send and `expr:` alike.

No timings are asserted: the budget bounds how long each payload runs, and the child-process test
proves none of them can allocate a gigabyte."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from engine.audience.ingest import upsert_contacts
from engine.policy.base import ALLOW, Decision, SendRequest
from engine.runtime.interpreter import Interpreter
from engine.runtime.state import ACTIVE, ContactView, EnrollmentState, History
from engine.spec.conditions import Expression
from engine.spec.expressions import RenderError, compile_expression, compile_template
from engine.spec.loader import lint_text
from engine.spec.model import ConditionStep
from engine.store.db import make_engine
from engine.worker.enroll import Candidate, enroll
from engine.worker.versions import VersionCache, publish_bundle
from tests.unit.spec.conftest import HEAD, problems_of

# Thirty macros, each calling the one before twice: 2**30 calls, none of them recursive.
EXPONENTIAL = (
    "".join(
        f"{{% macro m{i}() %}}{{{{ m{i - 1}() }}}}{{{{ m{i - 1}() }}}}{{% endmacro %}}"
        if i
        else "{% macro m0() %}x{% endmacro %}"
        for i in range(30)
    )
    + "{{ m29() }}"
)
LITERAL = "x" * 2000

# (id, template, code of the refusal); every template is one line, so the error is at line 1
PAYLOADS = [
    ("percent-width", "{{ '%999999999s' % 'a' }}", "render.size"),
    ("percent-precision", "{{ '%.999999999f' % 1.5 }}", "render.size"),
    ("percent-star", "{{ '%*s' % (-999999999, 'a') }}", "render.size"),
    ("percent-many", "{{ ('%s' * 50000) % (('a' * 100000,) * 50000) }}", "render.size"),
    ("format-width", "{{ '{:>999999999}'.format('a') }}", "render.size"),
    ("format-precision", "{{ '{:.999999999f}'.format(1.5) }}", "render.size"),
    ("format-nested", "{{ '{0:{1}}'.format('a', 999999999) }}", "render.size"),
    ("format-map", "{{ '{a:>999999999}'.format_map({'a': 1}) }}", "render.size"),
    ("format-fields", "{{ ('{0}' * 30000).format('a' * 100000) }}", "render.size"),
    ("format-filter", "{{ '%999999999s'|format('a') }}", "render.size"),
    ("center", "{{ 'a'.center(10**9) }}", "render.size"),
    ("ljust", "{{ 'a'.ljust(10**9) }}", "render.size"),
    ("rjust", "{{ 'a'.rjust(10**9) }}", "render.size"),
    ("zfill", "{{ '1'.zfill(10**9) }}", "render.size"),
    ("expandtabs", "{{ ('\\t' * 1000).expandtabs(10**6) }}", "render.size"),
    ("translate", "{{ ('x' * 100000).translate({120: 'y' * 100000}) }}", "render.size"),
    ("to-bytes", "{{ (1).to_bytes(10**9, 'big') }}", "render.size"),
    ("repeat-string", "{{ 'a' * 10**9 }}", "render.size"),
    ("repeat-list", "{{ [1] * 10**9 }}", "render.size"),
    ("power", "{{ 10**10**10 }}", "render.size"),
    ("product", "{% set n = 10**60 %}{{ " + " * ".join(["n"] * 60) + " }}", "render.size"),
    ("replace-filter", "{{ ('a' * 100000)|replace('', 'b' * 1000) }}", "render.size"),
    ("replace-method", "{{ ('a' * 100000).replace('a', 'b' * 1000) }}", "render.size"),
    ("join-filter", "{{ (['a' * 100000] * 100000)|join }}", "render.size"),
    ("join-method", "{{ ''.join(['a' * 100000] * 100000) }}", "render.size"),
    ("join-unique", "{{ (['a' * 60000, 'b' * 60000]|unique)|join }}", "render.size"),
    ("sum-lists", "{{ ([[1] * 10000] * 10000)|sum(start=[]) }}", "render.size"),
    ("tilde", "{% set a = 'a' * 100000 %}{{ a ~ a ~ a }}", "render.size"),
    ("plus", "{% set a = 'a' * 100000 %}{{ a + a }}", "render.size"),
    ("output", "{% for i in [1] * 10000 %}{{ 'a' * 10000 }}{% endfor %}", "render.size"),
    (
        "set-block",
        "{% set x %}{% for i in [1] * 10000 %}{{ 'a' * 10000 }}{% endfor %}{% endset %}",
        "render.size",
    ),
    (
        "loop-literal",
        f"{{% macro m() %}}{{% for i in [1] * 10000 %}}{LITERAL}{{% endfor %}}{{% endmacro %}}"
        "{{ m() }}",
        "render.size",
    ),
    (
        "nested-loops",
        "{% for i in [1] * 10000 %}{% for j in [1] * 10000 %}{% endfor %}{% endfor %}",
        "render.loops",
    ),
    ("exponential-macro", EXPONENTIAL, "render.calls"),
    ("recursive-macro", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "render.recursion"),
    (
        "exponential-recursion",
        "{% macro m(n) %}{{ m(n - 1) }}{{ m(n - 1) }}{% endmacro %}{{ m(40) }}",
        "render.recursion",
    ),
    (
        "mutual-recursion",
        "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
        "render.recursion",
    ),
    (
        "recursive-loop",
        "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
        "render.recursion",
    ),
    ("recursive-block", "{% block b %}{{ self.b() }}{% endblock %}", "render.recursion"),
    (
        "slow",
        "{% set l = [1] * 100000 %}{% for i in l[:100] %}{% for j in l[:99] %}{{ l|max }}"
        "{% endfor %}{% endfor %}",
        "render.time",
    ),
]
IDS = [p[0] for p in PAYLOADS]

# Expressions go through the same sandbox: no loops or macros, but every sized operation.
EXPRESSIONS = [
    ("percent", "('%999999999s' % 'a') == ''"),
    ("center", "'a'.center(10**9) == ''"),
    ("format", "'{:>999999999}'.format('a') == ''"),
    ("repeat", "('a' * 10**9)|length > 0"),
    ("join", "(['a' * 100000] * 100000)|join|length > 0"),
    ("format-filter", "('%999999999s'|format('a'))|length > 0"),
]

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONTEXT: dict[str, Any] = {
    "contact": {"first_name": "Ada"},
    "event": {},
    "scenario": {"id": "s", "name": "S"},
    "data": {},
    "now": NOW,
    "links": {},
}


def inline_send(text: str) -> str:
    # JSON strings are YAML strings: the template goes in as it is
    return (
        "steps:\n  hello:\n    type: send\n    channel: sms\n    next: after\n"
        f"    content:\n      text: {json.dumps(text)}\n"
        "  after:\n    type: update\n    add_tags: [went-on]\n"
    )


@pytest.mark.parametrize(("name", "source", "code"), PAYLOADS, ids=IDS)
def test_a_render_stops_at_its_budget_with_a_located_error(
    name: str, source: str, code: str
) -> None:
    template = compile_template("t", {"text": source})  # compiling costs nothing
    with pytest.raises(RenderError) as caught:
        template.render(CONTEXT)
    line = None if name == "output" else 1  # the output cap is checked as the part streams out
    assert (caught.value.code, caught.value.part, caught.value.line) == (code, "text", line)
    where = "template 't' part 'text'" + (" line 1" if line else "")
    assert str(caught.value).startswith(f"{where}: ")


def test_the_error_names_the_line_of_the_part() -> None:
    template = compile_template("promo", {"subject": "Hi", "html": "<p>\n{{ 'a'.center(10**9) }}"})
    with pytest.raises(RenderError) as caught:
        template.render(CONTEXT)
    assert (caught.value.code, caught.value.part, caught.value.line) == ("render.size", "html", 2)
    assert "over 100,000" in str(caught.value)


@pytest.mark.parametrize(("name", "source", "code"), PAYLOADS, ids=IDS)
def test_lint_reports_the_template_as_an_error_at_its_line(
    name: str, source: str, code: str
) -> None:
    problems = problems_of(inline_send(source))
    (problem,) = [p for p in problems if p.code == code]
    assert problem.severity == "error"
    assert (problem.line, problem.step, problem.field) == (12, "hello", "steps.hello.content.text")
    assert problem.message.startswith("template: " if name == "output" else "template line 1: ")
    assert problem.hint


class _Allow:
    def decide(self, request: SendRequest, contact: ContactView, now: datetime) -> Decision:
        return ALLOW


def test_a_send_journals_render_failed_with_the_code_and_sends_nothing() -> None:
    scenario = lint_text(HEAD + inline_send("ok"), "s.yaml", template_sources={})[0]
    assert scenario is not None
    for name, source, code in PAYLOADS:
        # as if stored before lint checked budgets: the worker renders it anyway
        sneaky = compile_template("hello:inline", {"text": source})
        stored = replace(scenario, templates={"hello:inline": sneaky})
        state = EnrollmentState(1, "s", 1, 1, ACTIVE, "hello", entered_at=NOW)
        person = ContactView(id=1, external_id="c1", attributes={"first_name": "Ada"})
        tr = Interpreter(stored, _Allow()).advance(state, person, History(), NOW)
        assert tr.sends == [], name
        (error,) = [r for r in tr.journal if r.kind == "error"]
        assert (error.step_id, error.reason) == ("hello", "render_failed"), name
        assert error.data is not None and error.data["code"] == code, name
        assert name == "output" or "line 1" in str(error.data["error"]), name
        assert person.tags == ["went-on"], name  # the journey goes on


def condition(expr: str) -> str:
    return (
        "steps:\n  check:\n    type: condition\n    if:\n"
        f"      expr: {json.dumps(expr)}\n"
        "    then: yes\n    else: no\n"
        "  yes:\n    type: update\n    add_tags: [yes]\n"
        "  no:\n    type: update\n    add_tags: [no]\n"
    )


@pytest.mark.parametrize(("name", "source"), EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_an_expression_stops_at_its_budget(name: str, source: str) -> None:
    with pytest.raises(RenderError) as caught:
        compile_expression(source)(**CONTEXT)
    assert caught.value.code == "render.size"
    assert str(caught.value).startswith(f"expression '{source}': ")
    problems = problems_of(condition(source))
    (problem,) = [p for p in problems if p.code == "expression.limit"]
    assert (problem.line, problem.step, problem.field) == (10, "check", "steps.check.if.expr")
    assert "over 100,000" in problem.message and problem.severity == "error"


def test_a_condition_over_its_budget_is_journaled_and_takes_else() -> None:
    scenario = lint_text(HEAD + condition("contact.score > 1"), "s.yaml", template_sources={})[0]
    assert scenario is not None
    for name, source in EXPRESSIONS:
        # a stored version from before lint checked budgets
        check = scenario.steps["check"]
        assert isinstance(check, ConditionStep) and isinstance(check.condition, Expression)
        expr = replace(check.condition, compiled=compile_expression(source))
        step = replace(check, condition=expr)
        stored = replace(scenario, steps={**scenario.steps, "check": step})
        state = EnrollmentState(1, "s", 1, 1, ACTIVE, "check", entered_at=NOW)
        person = ContactView(id=1, external_id="c1", attributes={"score": 5})
        tr = Interpreter(stored, _Allow()).advance(state, person, History(), NOW)
        (error,) = [r for r in tr.journal if r.kind == "error"]
        assert (error.step_id, error.reason) == ("check", "condition_failed"), name
        assert error.data is not None and error.data["code"] == "render.size", name
        assert person.tags == ["no"], name


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 'a'|truncate(10**9) }}", "a"),
        ("{{ '%5s|%-3d|%.2f' % ('ab', 7, 1.234) }}", "   ab|7  |1.23"),
        ("{{ '{:>6}|{:^5}'.format('ab', 'c') }}", "    ab|  c  "),
        ("{{ 'ab'.center(6, '*') }}{{ '7'.zfill(3) }}", "**ab**007"),
        ("{{ ['a', 'b']|join(', ') }} {{ 'x' ~ 1 }} {{ [1] + [2] }}", "a, b x1 [1, 2]"),
        ("{% for i in [1] * 100 %}{% for j in [1] * 50 %}.{% endfor %}{% endfor %}", "." * 5000),
        (
            "{% macro li(x) %}<{{ x }}>{% endmacro %}{% for i in [1, 2] * 300 %}{{ li(i) }}{% endfor %}",
            "<1><2>" * 300,
        ),
        (
            "{% for n in [{'k': [{'k': []}]}] recursive %}[{{ loop(n.k) }}]{% endfor %}",
            "[[]]",
        ),
        (
            "{% macro box() %}[{{ caller() }}]{% endmacro %}"
            "{% call box() %}{% call box() %}in{% endcall %}{% endcall %}",
            "[[in]]",
        ),
    ],
)
def test_ordinary_templates_render_as_before(source: str, expected: str) -> None:
    assert compile_template("t", {"text": source}).render(CONTEXT) == {"text": expected}
    assert [p for p in problems_of(inline_send(source)) if p.severity == "error"] == []


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("{{ 'x'|indent(10**9) }}", "template.syntax"),
        ("{{ 'x'|wordwrap(10**9) }}", "template.syntax"),
        ("{{ 'x'|center(10**9) }}", "template.syntax"),
        ("{{ range(10**9)|list }}", "template.unknown_variable"),
    ],
)
def test_what_the_sandbox_does_not_offer_is_refused_by_lint(source: str, code: str) -> None:
    assert code in [p.code for p in problems_of(inline_send(source))]


def test_no_payload_can_allocate_a_gigabyte() -> None:
    # In a child process limited to 1 GiB of address space more than it starts with, compile,
    # lint and render every payload: a MemoryError anywhere fails the run.
    script = textwrap.dedent(
        """
        import resource, sys
        from engine.spec.expressions import RenderError, compile_template, compile_expression
        from engine.spec.loader import lint_text
        from tests.unit.spec.test_render_budget import (
            CONTEXT, EXPRESSIONS, HEAD, PAYLOADS, inline_send, condition,
        )
        with open("/proc/self/statm") as f:
            start = int(f.read().split()[0]) * resource.getpagesize()
        limit = start + 2**30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for name, source, code in PAYLOADS:
            lint_text(HEAD + inline_send(source), "s.yaml", template_sources={})
            try:
                compile_template("t", {"text": source}).render(CONTEXT)
            except RenderError as exc:
                assert exc.code == code, (name, exc.code)
            else:
                sys.exit(f"{name} rendered")
        for name, source in EXPRESSIONS:
            lint_text(HEAD + condition(source), "s.yaml", template_sources={})
            try:
                compile_expression(source)(**CONTEXT)
            except RenderError as exc:
                assert exc.code == "render.size", name
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_an_audience_over_its_budget_enrolls_no_one_and_says_why(engine_url: str) -> None:
    engine = make_engine(engine_url)
    body = 'audience:\n  expr: "contact.score > 1"\n' + condition("contact.score > 1")
    with Session(engine) as session, session.begin():
        version = publish_bundle(session, {"yaml": HEAD + body, "templates": {}}, now=NOW)
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": "c1", "attributes": {"score": 5}}], NOW)
        (contact_id,) = conn.execute(text("SELECT id FROM contacts")).scalars().all()
        scenario = VersionCache().get(conn, version.version_id)
        assert isinstance(scenario.audience, Expression)
        audience = replace(scenario.audience, compiled=compile_expression(EXPRESSIONS[0][1]))
        stored = replace(scenario, audience=audience)
        candidate = Candidate(version.version_id, stored, contact_id, "once", NOW, None, "manual")
        assert enroll(conn, [candidate], NOW) == {"audience_failed": 1}
        reasons = conn.execute(text("SELECT reason FROM journal")).scalars().all()
    engine.dispose()
    assert "audience_failed" in reasons
