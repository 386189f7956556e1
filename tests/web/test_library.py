"""The template library: listing, the editor page, previews with the sending sandbox, saving."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import Parcours
from designer.library import parts_hash
from engine.store.models import AuditEntry

Login = Callable[[str], FlaskClient]
API = {"X-Api-Key": "k"}


def send(client: FlaskClient, method: str, url: str, body: dict[str, Any]) -> Any:
    headers = {"X-CSRF-Token": client.csrf}  # type: ignore[attr-defined]
    return client.open(url, method=method, json=body, headers=headers)


def welcome(workspace: Path) -> dict[str, str]:
    folder = workspace / "templates" / "welcome"
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def audits(state: Parcours) -> list[AuditEntry]:
    with Session(state.engine) as db:
        return list(db.scalars(select(AuditEntry).where(AuditEntry.target_kind == "template")))


def test_viewer_reads_list_and_editor(login: Login) -> None:
    viewer = login("viewer")
    page = viewer.get("/templates").get_data(as_text=True)
    assert 'data-testid="template-welcome"' in page
    assert "Welcome series" in page  # the journey that uses it
    assert 'action="/templates"' not in page  # no creation form below marketer
    editor = viewer.get("/templates/welcome")
    assert editor.status_code == 200
    config = editor.get_data(as_text=True)
    assert "Bienvenue {{ contact.first_name }} !" in config
    assert '"readonly": true' in config and 'data-testid="save-template"' not in config


def test_viewer_cannot_save(login: Login, workspace: Path) -> None:
    before = welcome(workspace)
    viewer = login("viewer")
    body = {"parts": {**before, "subject": "Hacked"}, "hash": parts_hash(before)}
    response = send(viewer, "PUT", "/templates/welcome", body)
    assert response.status_code == 403
    assert welcome(workspace) == before


def test_marketer_saves_one_part(login: Login, workspace: Path, state: Parcours) -> None:
    before = welcome(workspace)
    marketer = login("marketer")
    body = {
        "parts": {**before, "subject": "Salut {{ contact.first_name }}"},
        "hash": parts_hash(before),
    }
    response = send(marketer, "PUT", "/templates/welcome", body)
    assert response.status_code == 200, response.get_json()
    after = welcome(workspace)
    assert after["subject"] == "Salut {{ contact.first_name }}"
    assert after["text"] == before["text"]
    assert response.get_json()["hash"] == parts_hash(after)
    [entry] = audits(state)
    assert (entry.action, entry.target_id, entry.username) == ("save", "welcome", "marketer")
    assert entry.details == {"parts": ["subject", "text"]}


def test_add_and_remove_parts_keep_file_names(login: Login, workspace: Path) -> None:
    folder = workspace / "templates" / "cart-reminder"
    before = {p.stem: p.read_text(encoding="utf-8") for p in folder.iterdir()}
    parts = {"html": "<p>{{ contact.first_name }}</p>", "title": "Panier"}
    body = {"parts": parts, "hash": parts_hash(before)}
    response = send(login("marketer"), "PUT", "/templates/cart-reminder", body)
    assert response.status_code == 200, response.get_json()
    assert sorted(p.name for p in folder.iterdir()) == ["html.html", "title.txt"]
    assert (folder / "html.html").read_text(encoding="utf-8") == parts["html"]


def test_syntax_error_names_part_and_line(login: Login, workspace: Path) -> None:
    before = welcome(workspace)
    broken = "Bonjour,\n\n{{ contact.first_name }"
    body = {"parts": {**before, "subject": "Nouveau", "text": broken}, "hash": parts_hash(before)}
    response = send(login("marketer"), "PUT", "/templates/welcome", body)
    assert response.status_code == 422
    [problem] = [p for p in response.get_json()["problems"] if p["severity"] == "error"]
    assert (problem["part"], problem["line"], problem["code"]) == ("text", 3, "template.syntax")
    assert welcome(workspace) == before  # the valid subject was not written either


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("{{ ''.__class__ }}", "template.unsafe"),
        ("{{ contact['__init__'] }}", "template.unsafe"),
        ("{{ contact.first_name | system }}", "template.syntax"),
        ("{{ contcat.first_name }}", "template.unknown_variable"),
    ],
)
def test_disallowed_constructs_are_refused(
    login: Login, workspace: Path, source: str, code: str
) -> None:
    before = welcome(workspace)
    body = {"parts": {**before, "subject": source}, "hash": parts_hash(before)}
    response = send(login("marketer"), "PUT", "/templates/welcome", body)
    assert response.status_code == 422
    assert [p["code"] for p in response.get_json()["problems"]] == [code]
    assert welcome(workspace) == before


def test_unknown_part_and_oversized_part_are_refused(login: Login, workspace: Path) -> None:
    before = welcome(workspace)
    marketer = login("marketer")
    unknown = send(marketer, "PUT", "/templates/welcome", {"parts": {"script": "x"}, "hash": ""})
    assert unknown.status_code == 422 and "script" in unknown.get_json()["error"]["message"]
    big = {"parts": {"text": "é" * 140_000}, "hash": parts_hash(before)}
    response = send(marketer, "PUT", "/templates/welcome", big)
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["code"] == "template.limit"
    assert welcome(workspace) == before


def test_changed_on_disk_is_a_conflict(login: Login, workspace: Path) -> None:
    before = welcome(workspace)
    (workspace / "templates" / "welcome" / "subject.txt").write_text("Edited in git", "utf-8")
    body = {"parts": {**before, "subject": "Mine"}, "hash": parts_hash(before)}
    response = send(login("marketer"), "PUT", "/templates/welcome", body)
    assert response.status_code == 409
    assert welcome(workspace)["subject"] == "Edited in git"


@pytest.mark.parametrize("name", ["../welcome", "a/b", "..", "%2e%2e", ".hidden", "nope"])
def test_bad_names_are_not_found(login: Login, workspace: Path, name: str) -> None:
    files = sorted(workspace.parent.rglob("*.txt"))
    marketer = login("marketer")
    assert marketer.get(f"/templates/{name}").status_code == 404
    put = send(marketer, "PUT", f"/templates/{name}", {"parts": {"text": "x"}, "hash": ""})
    assert put.status_code == 404
    preview = send(marketer, "POST", f"/templates/{name}/preview", {"parts": {"text": "x"}})
    assert preview.status_code == 404
    assert sorted(workspace.parent.rglob("*.txt")) == files


def test_preview_renders_sample_and_real_contact(login: Login) -> None:
    viewer = login("viewer")
    parts = {"subject": "Bonjour {{ contact.first_name }}", "text": "{{ data.offer_code }}"}
    sample = send(viewer, "POST", "/templates/welcome/preview", {"parts": parts}).get_json()
    assert sample["parts"]["subject"] == "Bonjour Camille"
    assert sample["parts"]["text"] == "BIENVENUE10"  # the data of the journey using it
    assert sample["contact"]["sample"] is True
    api = viewer.application.test_client()
    body = {"email": "zoe@example.com", "attributes": {"first_name": "Zoé"}}
    assert api.put("/api/contacts/c-42", json=body, headers=API).status_code in (200, 201)
    real = send(viewer, "POST", "/templates/welcome/preview", {"parts": parts, "contact": "c-42"})
    assert real.get_json()["parts"]["subject"] == "Bonjour Zoé"
    assert real.get_json()["contact"] == {
        "external_id": "c-42",
        "sample": False,
        "email": "zoe@example.com",
        "phone": None,
    }
    missing = send(viewer, "POST", "/templates/welcome/preview", {"parts": parts, "contact": "x"})
    assert missing.status_code == 404


def test_preview_reports_errors_per_part_with_lines(login: Login) -> None:
    viewer = login("viewer")
    parts = {
        "subject": "OK {{ contact.first_name }}",
        "text": "a\nb\n{{ 10 / 0 }}",
        "html": "<p>\n{% if %}</p>",
    }
    body = {"parts": parts, "event": {"total": 12}}
    answer = send(viewer, "POST", "/templates/welcome/preview", body)
    assert answer.status_code == 200
    out = answer.get_json()
    assert out["parts"] == {"subject": "OK Camille"}
    assert out["errors"]["text"] == {
        "line": 3,
        "message": "division by zero",
        "code": "render.error",
    }
    assert out["errors"]["html"]["line"] == 2
    event = send(
        viewer,
        "POST",
        "/templates/welcome/preview",
        {"parts": {"text": "{{ event.total }} €"}, "event": {"total": 12}},
    )
    assert event.get_json()["parts"]["text"] == "12 €"


def test_preview_counts_sms(login: Login) -> None:
    viewer = login("viewer")
    gsm = send(
        viewer, "POST", "/templates/welcome/preview", {"parts": {"text": "Hi [x] " + "a" * 150}}
    )
    assert gsm.get_json()["sms"] == {
        "outside": [],
        "encoding": "GSM-7",
        "length": 159,
        "segments": 1,
        "per_segment": 160,
    }
    ucs = send(
        viewer, "POST", "/templates/welcome/preview", {"parts": {"text": "Merci 🎉 " + "a" * 70}}
    )
    assert ucs.get_json()["sms"]["encoding"] == "UCS-2"
    assert ucs.get_json()["sms"]["outside"] == ["🎉"]
    assert ucs.get_json()["sms"]["segments"] == 2
    assert (
        "sms"
        not in send(
            viewer, "POST", "/templates/welcome/preview", {"parts": {"subject": "x"}}
        ).get_json()
    )


def test_marketer_creates_a_template(login: Login, workspace: Path, state: Parcours) -> None:
    marketer = login("marketer")
    form = {"name": "spring-sale", "channel": "email", "csrf_token": marketer.csrf}  # type: ignore[attr-defined]
    response = marketer.post("/templates", data=form)
    assert response.status_code == 302 and response.headers["Location"].endswith(
        "/templates/spring-sale"
    )
    folder = workspace / "templates" / "spring-sale"
    assert sorted(p.name for p in folder.iterdir()) == ["html.html", "subject.txt", "text.txt"]
    again = marketer.post("/templates", data=form)
    assert again.status_code == 400 and "already exists" in again.get_data(as_text=True)
    sms = send(marketer, "POST", "/templates", {"name": "promo-sms", "parts": {"text": "Hi"}})
    assert sms.status_code == 201
    assert (workspace / "templates" / "promo-sms" / "text.txt").read_text("utf-8") == "Hi"
    bad = send(marketer, "POST", "/templates", {"name": "../evil", "parts": {"text": "x"}})
    assert bad.status_code == 422 and not (workspace / "evil").exists()
    assert [a.action for a in audits(state)] == ["create", "create"]
    viewer = login("viewer")
    assert (
        send(viewer, "POST", "/templates", {"name": "x1", "parts": {"text": "x"}}).status_code
        == 403
    )


def test_the_new_template_form_names_each_wrong_field(login: Login, workspace: Path) -> None:
    marketer = login("marketer")
    before = sorted(p.name for p in (workspace / "templates").iterdir())
    cases = [
        ({"name": "../evil", "channel": "email"}, "start with a letter or digit"),
        ({"name": "x" * 101, "channel": "email"}, "start with a letter or digit"),
        ({"name": "  ", "channel": "email"}, "start with a letter or digit"),
        ({"name": "fine", "channel": "pigeon"}, "Choose a channel."),
    ]
    for form, message in cases:
        page = marketer.post("/templates", data={**form, "csrf_token": marketer.csrf})  # type: ignore[attr-defined]
        assert page.status_code == 400, form
        assert message in page.get_data(as_text=True), form
    assert sorted(p.name for p in (workspace / "templates").iterdir()) == before
    # JSON names its own parts: the channel is not asked for, a wrong name is at its field.
    answer = send(marketer, "POST", "/templates", {"name": 5, "parts": {"text": "x"}})
    assert answer.status_code == 422 and answer.get_json()["error"]["field"] == "name"


def test_editor_page_has_no_inline_script(login: Login) -> None:
    page = login("marketer").get("/templates/welcome")
    html = page.get_data(as_text=True)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    scripts = [s for s in html.split("<script")[1:]]
    assert all(" src=" in s.split(">")[0] or 'type="application/json"' in s for s in scripts)
    config = html.split('id="template-config">')[1].split("</script>")[0]
    assert json.loads(config)["urls"]["save"] == "/templates/welcome"


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("{{ '%999999999s' % 'a' }}", "render.size"),
        ("{{ 'a'.center(10**9) }}", "render.size"),
        ("{{ '{:>999999999}'.format('a') }}", "render.size"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "render.recursion"),
        (
            "{% macro m(n) %}{{ m(n - 1) }}{{ m(n - 1) }}{% endmacro %}{{ m(40) }}",
            "render.recursion",
        ),
        (
            "{% for i in [1] * 10000 %}{% for j in [1] * 10000 %}{% endfor %}{% endfor %}",
            "render.loops",
        ),
    ],
)
def test_preview_over_the_render_budget_is_a_json_error_at_its_line(
    login: Login, source: str, code: str
) -> None:
    parts = {"subject": "OK", "text": f"Hello\n{source}"}
    answer = send(login("viewer"), "POST", "/templates/welcome/preview", {"parts": parts})
    assert answer.status_code == 200 and answer.is_json
    out = answer.get_json()
    assert out["parts"] == {"subject": "OK"}
    error = out["errors"]["text"]
    assert (error["line"], error["code"]) == (2, code)
    assert [(p["code"], p["line"]) for p in out["problems"]] == [(code, 2)]
