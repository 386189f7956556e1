"""The canvas editor's routes: page data, YAML ↔ document sync, saving, previews, new scenarios."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from designer import Parcours
from designer.editor import sms_length
from designer.workspace import text_hash
from engine.spec.yamlio import parse_yaml
from engine.store.models import AuditEntry, Contact, Event

Login = Callable[[str], FlaskClient]


def post(client: FlaskClient, url: str, body: Any, csrf: bool = True) -> Any:
    headers = {"X-CSRF-Token": client.csrf} if csrf else {}  # type: ignore[attr-defined]
    return client.post(url, json=body, headers=headers)


def bootstrap(page: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="editor-data">(.*?)</script>', page, re.S
    )
    assert match, "no bootstrap data in the page"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def audits(state: Parcours, action: str) -> list[AuditEntry]:
    with Session(state.engine) as db:
        return list(db.scalars(select(AuditEntry).where(AuditEntry.action == action)))


# ------------------------------------------------------------------ the page


def test_edit_page_carries_the_document_registry_and_seen_names(
    login: Login, state: Parcours
) -> None:
    with Session(state.engine) as db, db.begin():
        contact = Contact(external_id="c1", attributes={"plan": "pro"})
        db.add(contact)
        db.flush()
        db.add(Event(contact_id=contact.id, name="trial_started", occurred_at=state.clock.now()))
    page = login("marketer").get("/scenarios/welcome-series/edit")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "onclick" not in html
    data = bootstrap(html)
    assert data["readonly"] is False
    assert next(iter(data["doc"]["steps"])) == "welcome"  # order kept: the first step starts
    types = {t["type"]: t for t in data["nodeTypes"]}
    assert types["condition"]["edges"] == ["then", "else"]
    assert types["switch"]["nested_edges"] == {"cases": "next"}
    assert types["wait"]["schema"]["properties"]["next"]["x-edge"] is True
    assert "trial_started" in data["events"] and "plan" in data["attributes"]
    assert data["hash"] == text_hash(data["yaml"])
    assert data["urls"]["save"] == "/scenarios/welcome-series/save"
    # the shared condition builder offers computed attributes, segments and consent topics here too
    assert "rfm.class" in data["computed"] and "champions" in data["computedValues"]["rfm.class"]
    assert "premium" in data["segments"] and data["conditionTopics"][0][0] == "*"
    assert isinstance(data["topics"], dict)  # the Sending panel's topics, id → label


def test_viewer_gets_a_read_only_canvas_and_french_labels(login: Login) -> None:
    client = login("viewer")
    data = bootstrap(client.get("/scenarios/welcome-series/edit?lang=fr").get_data(as_text=True))
    assert data["readonly"] is True
    assert {t["type"]: t["label"] for t in data["nodeTypes"]}[
        "wait_event"
    ] == "Attendre un événement"
    assert data["strings"]["saved"] == "Enregistré"


def test_every_field_has_a_label_and_its_help_in_both_languages(login: Login) -> None:
    client = login("viewer")
    english = bootstrap(client.get("/scenarios/welcome-series/edit?lang=en").get_data(as_text=True))
    for node in english["nodeTypes"]:
        for name, prop in node["schema"]["properties"].items():
            if name == "type":
                continue
            items = prop.get("items", {}).get("properties", {})
            for key in [name, *(f"{name}.{inner}" for inner in items)]:
                assert key in node["fields"], (node["type"], key)
                assert node["fields"][key]["label"] != key.rpartition(".")[2], (node["type"], key)
    send = {t["type"]: t for t in english["nodeTypes"]}["send"]["fields"]
    assert send["on_blocked"]["label"] == "When blocked"
    assert send["defer_max"] == {"label": "Longest deferral", "help": "Longest deferral, e.g. 2d."}
    french = bootstrap(client.get("/scenarios/welcome-series/edit?lang=fr").get_data(as_text=True))
    types = {t["type"]: t for t in french["nodeTypes"]}
    assert types["send"]["fields"]["on_blocked"]["label"] == "Si bloqué"
    assert types["wait"]["fields"]["duration"]["label"] == "Durée"
    assert types["wait"]["fields"]["duration"]["help"].startswith("Durée de l'attente")
    assert types["split"]["fields"]["branches.weight"]["label"] == "Poids"
    assert types["switch"]["fields"]["cases.next"]["help"].startswith("Étape suivante")


def test_the_top_bar_links_to_the_journey_and_to_simulation(login: Login) -> None:
    html = login("viewer").get("/scenarios/welcome-series/edit").get_data(as_text=True)
    assert 'href="/scenarios/welcome-series" data-testid="to-journey"' in html
    assert 'href="/scenarios/welcome-series/simulate" data-testid="to-simulate"' in html


@pytest.mark.parametrize("scenario_id", ["..%2Fx", "nope", "..%2F..%2Fetc%2Fpasswd"])
def test_unknown_or_traversing_ids_are_404(login: Login, scenario_id: str) -> None:
    client = login("marketer")
    assert client.get(f"/scenarios/{scenario_id}/edit").status_code == 404
    assert client.get(f"/scenarios/{scenario_id}/yaml").status_code == 404
    response = post(client, f"/scenarios/{scenario_id}/check", {"yaml": "a: 1"})
    assert response.status_code == 404


def test_json_routes_answer_404_in_json(login: Login) -> None:
    response = post(login("marketer"), "/scenarios/nope/save", {"yaml": "a: 1", "hash": "x"})
    assert response.status_code == 404
    assert response.get_json()["error"] == {
        "code": "not_found",
        "message": "No scenario with this id.",
        "field": "id",
    }


def test_download_is_the_raw_file(login: Login, workspace: Path) -> None:
    response = login("viewer").get("/scenarios/welcome-series/yaml")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == (workspace / "welcome-series.yaml").read_text()
    assert "attachment" in response.headers["Content-Disposition"]


# ------------------------------------------------------------------ check and render


def test_check_returns_the_document_or_problems_with_lines(login: Login) -> None:
    client = login("viewer")
    bad = post(client, "/scenarios/welcome-series/check", {"yaml": "id: x\nsteps: [\n"})
    assert bad.status_code == 200
    body = bad.get_json()
    assert body["doc"] is None and body["valid"] is False
    assert body["problems"][0]["line"] is not None
    good = (Path(__file__).parents[2] / "scenarios" / "welcome-series.yaml").read_text()
    body = post(client, "/scenarios/welcome-series/check", {"yaml": good}).get_json()
    assert body["valid"] is True and body["doc"]["id"] == "welcome-series"


def test_render_merges_the_canvas_document_into_the_text(login: Login, workspace: Path) -> None:
    text = (workspace / "welcome-series.yaml").read_text()
    doc, _ = parse_yaml(text)
    doc["steps"]["wait-2d"]["duration"] = "3d"
    doc["steps"]["offer"]["next"] = "ghost"
    body = post(login("viewer"), "/scenarios/welcome-series/render", {"yaml": text, "doc": doc})
    result = body.get_json()
    assert result["yaml"] == text.replace("duration: 2d", "duration: 3d").replace(
        "template: welcome-offer\n    next: done", "template: welcome-offer\n    next: ghost"
    )
    assert any(p["step"] == "offer" for p in result["problems"])
    assert result["valid"] is False


def test_render_with_unparsable_base_text_reports_instead_of_failing(login: Login) -> None:
    response = post(
        login("viewer"), "/scenarios/welcome-series/render", {"yaml": "a: [\n", "doc": {"a": 1}}
    )
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["line"] == 2


def test_json_errors_have_the_one_shape(login: Login) -> None:
    response = post(login("viewer"), "/scenarios/welcome-series/render", {"yaml": 3})
    assert response.status_code == 400
    assert response.get_json() == {
        "error": {"code": "bad_request", "message": "'yaml' must be text.", "field": "yaml"}
    }


# ------------------------------------------------------------------ saving


def test_marketer_saves_and_it_is_audited(login: Login, workspace: Path, state: Parcours) -> None:
    path = workspace / "welcome-series.yaml"
    text = path.read_text()
    new = text.replace("duration: 2d", "duration: 3d")
    body = {"yaml": new, "hash": text_hash(text)}
    response = post(login("marketer"), "/scenarios/welcome-series/save", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert path.read_text() == new
    assert response.get_json()["hash"] == text_hash(new)
    assert response.get_json()["publishable"] is True
    (entry,) = audits(state, "save")
    assert (entry.target_id, entry.details["errors"]) == ("welcome-series", 0)


def test_saving_with_errors_is_a_draft_that_cannot_be_published(
    login: Login, workspace: Path
) -> None:
    path = workspace / "welcome-series.yaml"
    text = path.read_text()
    broken = text.replace("then: tips", "then: nowhere")
    assert broken != text
    response = post(
        login("marketer"),
        "/scenarios/welcome-series/save",
        {"yaml": broken, "hash": text_hash(text)},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["publishable"] is False and "blocked" in body["message"]
    assert path.read_text() == broken


def test_viewer_cannot_save(login: Login, workspace: Path) -> None:
    text = (workspace / "welcome-series.yaml").read_text()
    response = post(
        login("viewer"),
        "/scenarios/welcome-series/save",
        {"yaml": "x: 1\n", "hash": text_hash(text)},
    )
    assert response.status_code == 403
    assert (workspace / "welcome-series.yaml").read_text() == text


def test_save_without_csrf_token_is_refused(login: Login, workspace: Path) -> None:
    text = (workspace / "welcome-series.yaml").read_text()
    body = {"yaml": "x: 1\n", "hash": text_hash(text)}
    response = post(login("marketer"), "/scenarios/welcome-series/save", body, csrf=False)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "csrf"
    assert (workspace / "welcome-series.yaml").read_text() == text


def test_a_file_changed_on_disk_is_a_conflict(login: Login, workspace: Path) -> None:
    path = workspace / "welcome-series.yaml"
    loaded = path.read_text()
    path.write_text(loaded + "# pulled from git\n")
    body = {"yaml": loaded.replace("2d", "4d"), "hash": text_hash(loaded)}
    response = post(login("marketer"), "/scenarios/welcome-series/save", body)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    assert "changed on disk" in response.get_json()["error"]["message"]
    assert path.read_text().endswith("# pulled from git\n")


# ------------------------------------------------------------------ previews


def test_preview_renders_a_template_for_a_real_contact(login: Login, state: Parcours) -> None:
    with Session(state.engine) as db, db.begin():
        db.add(Contact(external_id="ext-7", attributes={"first_name": "Zoé"}))
    body = post(
        login("viewer"),
        "/scenarios/welcome-series/preview",
        {"step": "welcome", "contact": "ext-7"},
    ).get_json()
    assert body["errors"] == []
    assert "Zoé" in body["parts"]["text"]
    assert body["contact"] == {"external_id": "ext-7", "sample": False}


def test_preview_of_an_sms_counts_segments(login: Login) -> None:
    body = post(
        login("viewer"), "/scenarios/welcome-series/preview", {"step": "welcome-code"}
    ).get_json()
    assert body["contact"]["sample"] is True
    assert body["parts"]["text"].startswith("Camille, votre code de bienvenue : BIENVENUE10")
    assert body["sms"]["encoding"] == "GSM-7" and body["sms"]["segments"] == 1


def test_preview_with_a_template_error_is_a_message(login: Login) -> None:
    content = {"text": "Hello {{ contact.first_name | nosuchfilter }}"}
    response = post(
        login("viewer"),
        "/scenarios/welcome-series/preview",
        {"step": "welcome-code", "content": content},
    )
    assert response.status_code == 200
    assert response.get_json()["parts"] == {}
    assert "nosuchfilter" in response.get_json()["errors"][0]


def test_preview_of_an_unknown_contact_or_step_is_404(login: Login) -> None:
    client = login("viewer")
    missing = post(
        client, "/scenarios/welcome-series/preview", {"step": "welcome", "contact": "nobody"}
    )
    assert missing.status_code == 404 and missing.get_json()["error"]["field"] == "contact"
    wait = post(client, "/scenarios/welcome-series/preview", {"step": "wait-2d"})
    assert wait.status_code == 404 and wait.get_json()["error"]["field"] == "step"


@pytest.mark.parametrize(
    ("text", "encoding", "length", "segments"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count twice
        ("ç" * 70, "UCS-2", 70, 1),
        ("ç" * 71, "UCS-2", 71, 2),
        ("ê" * 135, "UCS-2", 135, 3),
        ("🎉" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 units
    ],
)
def test_sms_length(text: str, encoding: str, length: int, segments: int) -> None:
    assert sms_length(text) == {
        "encoding": encoding,
        "length": length,
        "segments": segments,
        "per_segment": (160 if encoding == "GSM-7" else 70)
        if segments <= 1
        else (153 if encoding == "GSM-7" else 67),
    }


# ------------------------------------------------------------------ new scenarios


def test_new_scenario_is_written_audited_and_opens_the_canvas(
    login: Login, workspace: Path, state: Parcours
) -> None:
    client = login("marketer")
    form = {"id": "spring-promo", "name": "Spring: promo", "objective": "basket", "priority": "60"}
    response = client.post("/scenarios/new", data={**form, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert response.status_code == 302
    assert response.headers["Location"] == "/scenarios/spring-promo/edit"
    data, _ = parse_yaml((workspace / "spring-promo.yaml").read_text())
    assert data == {
        "format_version": 1,
        "id": "spring-promo",
        "name": "Spring: promo",
        "objective": "basket",
        "priority": 60,
        "triggers": [{"manual": True}],
        "steps": {},
    }
    assert [e.target_id for e in audits(state, "create")] == ["spring-promo"]
    assert client.get("/scenarios/spring-promo/edit").status_code == 200


@pytest.mark.parametrize("scenario_id", ["welcome-series", "../x", "-bad", "a b", ""])
def test_new_scenario_refuses_a_taken_or_malformed_id(
    login: Login, workspace: Path, scenario_id: str
) -> None:
    client = login("marketer")
    before = sorted(p.name for p in workspace.iterdir())
    form = {"id": scenario_id, "name": "X", "objective": "other", "priority": "50"}
    response = client.post("/scenarios/new", data={**form, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert response.status_code == 400
    assert sorted(p.name for p in workspace.iterdir()) == before
    assert (workspace / "welcome-series.yaml").read_text().startswith("# Welcome series")


def test_viewer_cannot_create_a_scenario(login: Login) -> None:
    client = login("viewer")
    assert client.get("/scenarios/new").status_code == 403
