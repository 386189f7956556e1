"""Templates and expressions never read private or dunder attributes: a lint error, and a refused render."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import ScenarioInvalid
from engine.policy.base import ALLOW, Decision, SendRequest
from engine.runtime.interpreter import Interpreter
from engine.runtime.state import ACTIVE, ContactView, EnrollmentState, History
from engine.spec.expressions import RenderError, compile_template
from engine.spec.loader import lint_document, lint_text, load_bundle
from engine.store.models import ScenarioVersion
from engine.worker.versions import VersionCache, publish_bundle
from tests.unit.spec.conftest import HEAD, problems_of

SEND = """\
steps:
  hello:
    type: send
    channel: sms
    content:
      text: "Hi {{{{ contact.first_name }}}}\\n{text}"
"""


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ contact._private }}", "_private"),
        ("{{ contact['_secret'] }}", "_secret"),
        ("{% for c in contact.__dict__ %}{{ c }}{% endfor %}", "__dict__"),
    ],
)
def test_private_attribute_in_a_template_is_an_error_at_its_line(text: str, name: str) -> None:
    problems = problems_of(SEND.format(text=text))
    (problem,) = [p for p in problems if f"'{name}'" in p.message]
    assert problem.code == "template.private_attribute"
    assert (problem.line, problem.step, problem.field) == (11, "hello", "steps.hello.content.text")
    assert "line 2" in problem.message and f"'{name}'" in problem.message
    assert problem.severity == "error"


def test_private_attribute_in_a_template_folder(tmp_path: Path) -> None:
    folder = tmp_path / "templates" / "promo"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hello", encoding="utf-8")
    (folder / "text.txt").write_text("Hi\n\n{{ contact.__class__ }}\n", encoding="utf-8")
    body = "steps:\n  mail:\n    type: send\n    channel: email\n    template: promo\n"
    problems = lint_document(HEAD + body, "s.yaml", tmp_path / "templates").problems
    (problem,) = [p for p in problems if p.code == "template.private_attribute"]
    assert problem.line == 10 and problem.message.startswith("templates/promo/text.txt line 3:")


def test_private_attribute_in_an_expression_is_an_error_at_its_line() -> None:
    body = (
        "steps:\n  check:\n    type: condition\n    if:\n"
        '      expr: "contact.score > 1 and contact.__class__ is defined"\n'
        "    then: done\n    else: done2\n  done:\n    type: exit\n  done2:\n    type: exit\n"
    )
    problems = problems_of(body)
    (problem,) = [p for p in problems if p.code == "expression.private_attribute"]
    assert (problem.line, problem.step, problem.field) == (10, "check", "steps.check.if.expr")
    assert "'__class__'" in problem.message


def test_private_attribute_render_is_refused_with_a_reason() -> None:
    template = compile_template("t", {"text": "Hi {{ contact._private }}"})
    with pytest.raises(RenderError, match="private attribute '_private'"):
        template.render({"contact": {"_private": "secret"}})
    mro = compile_template("t", {"text": "{{ ''.__class__.__mro__ }}"})
    with pytest.raises(RenderError, match="private attribute '__class__'"):
        mro.render({})


class _Allow:
    def decide(self, request: SendRequest, contact: ContactView, now: datetime) -> Decision:
        return ALLOW


def test_a_published_private_attribute_is_refused_and_journaled_not_sent_empty() -> None:
    # a version published before this check: its template compiled, the lint never saw it
    body = SEND.format(text="ok").replace("  hello:", "  hello:\n    next: after") + (
        "  after:\n    type: update\n    add_tags: [went-on]\n"
    )
    scenario = lint_text(HEAD + body, "s.yaml", template_sources={})[0]
    assert scenario is not None
    sneaky = compile_template("hello:inline", {"text": "{{ contact._private }}"})
    scenario = replace(scenario, templates={"hello:inline": sneaky})
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    state = EnrollmentState(1, "s", 1, 1, ACTIVE, "hello", entered_at=now)
    person = ContactView(id=1, external_id="c1", attributes={"_private": "x"})
    tr = Interpreter(scenario, _Allow()).advance(state, person, History(), now)
    assert tr.sends == []
    (error,) = [r for r in tr.journal if r.kind == "error"]
    assert (error.step_id, error.reason) == ("hello", "render_failed")
    assert "private attribute '_private'" in str(error.data["error"])
    assert "went-on" in person.tags or "went-on" in str(tr)  # the journey goes on


def test_a_private_name_chosen_at_send_time_is_refused_too() -> None:
    # lint sees only constant names; a key read from the event is checked when rendering
    template = compile_template("t", {"text": "{{ contact[event.key] }}"})
    assert template.render({"contact": {"a": "ok"}, "event": {"key": "a"}}) == {"text": "ok"}
    with pytest.raises(RenderError, match="private attribute '_secret'"):
        template.render({"contact": {"_secret": "x"}, "event": {"key": "_secret"}})


def test_a_stored_version_reading_a_private_attribute_loads_and_refuses_to_render(
    session_factory: sessionmaker[Session],
) -> None:
    # published before lint checked private attributes: the worker must still load the version,
    # so that the render is refused and journaled rather than the whole version failing to load
    body = SEND.format(text="{{ contact.first_name }}")
    with session_factory.begin() as session:
        published = publish_bundle(session, {"yaml": HEAD + body, "templates": {}})
        stored = HEAD + SEND.format(text="{{ contact._private }}")
        version = session.get(ScenarioVersion, published.version_id)
        assert version is not None
        version.bundle = {"yaml": stored, "templates": {}}
    with pytest.raises(ScenarioInvalid):
        load_bundle({"yaml": stored, "templates": {}})  # publishing it now is refused
    with session_factory() as session:
        scenario = VersionCache().get(session, published.version_id)
    with pytest.raises(RenderError, match="private attribute '_private'"):
        scenario.templates["hello:inline"].render({"contact": {"_private": "x"}})
