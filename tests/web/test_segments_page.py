"""The Segments pages on SQLite and PostgreSQL: the list with counts, trend and problems, a new
segment, the live count and lint of a draft, saves that change only the edited lines, and the
contact page's segments."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from designer import create_app
from designer.auth import create_user
from engine.audience import membership
from engine.audience.ingest import clean_contact, clean_event, record_events, upsert_contacts
from engine.config import load_settings
from engine.policy.consent import record_consent
from engine.runtime.clock import VirtualClock
from engine.spec.segments import lint_segment_folder, load_segments
from engine.store.models import AuditEntry, Contact
from tests.web.conftest import PASSWORD, ROLES, csrf_of

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
# orders in the last 90 days, older orders, newsletter opt-in
PEOPLE = {
    "c1": (3, 0, True),
    "c2": (2, 0, False),
    "c3": (1, 1, True),
    "c4": (0, 0, True),
    "c5": (4, 0, True),
}
BOTH = {"all": [
    {"event": "order_placed", "within": "90d", "count": {"op": "gte", "value": 2}},
    {"segment": "newsletter-subscribers"},
]}  # fmt: skip


def seed(engine: Engine, workspace: Path, now: datetime = T0) -> None:
    """PEOPLE with their orders and consents; newsletter-subscribers built the day before with
    c5 missing (so its count moves by +1), then today with everyone."""
    segments = load_segments(workspace / "segments")
    condition = segments["newsletter-subscribers"].condition
    assert condition is not None
    with engine.begin() as conn:
        rows = [clean_contact({"external_id": c, "email": f"{c}@example.com"}) for c in PEOPLE]
        upsert_contacts(conn, rows, now - timedelta(days=300))
        ids = dict(conn.execute(select(Contact.external_id, Contact.id)).all())
        events = []
        for contact, (recent, old, _subscribed) in PEOPLE.items():
            days = [5 + 10 * i for i in range(recent)] + [200 + 10 * i for i in range(old)]
            events += [
                clean_event({"contact": contact, "name": "order_placed", "properties": {"total": 80},
                             "occurred_at": (now - timedelta(days=d)).isoformat()}, now)
                for d in days
            ]  # fmt: skip
        record_events(conn, events, now)
        day_before = now - timedelta(days=1)
        for contact, (_recent, _old, subscribed) in PEOPLE.items():
            if subscribed and contact != "c5":
                record_consent(conn, ids[contact], "email", "newsletter", "opted_in", "import",
                               day_before - timedelta(days=1))  # fmt: skip
        membership.rebuild(conn, "newsletter-subscribers", condition, day_before)
        record_consent(conn, ids["c5"], "email", "newsletter", "opted_in", "import", day_before)
        membership.rebuild(conn, "newsletter-subscribers", condition, now)


@pytest.fixture
def app(engine_url: str, tmp_path: Path, workspace: Path) -> Iterator[Flask]:
    """The designer on a fresh database of each kind, the clock at T0, one user per role."""
    settings = load_settings(
        {}, database_url=engine_url, data_dir=tmp_path, scenarios_dir=workspace
    )
    found = create_app(settings, {"TESTING": True})
    state = found.extensions["parcours"]
    state.clock = VirtualClock(T0)
    for role in ROLES:
        create_user(state.engine, role, role, password=PASSWORD)
    seed(state.engine, workspace)
    yield found
    state.engine.dispose()


@pytest.fixture
def as_role(app: Flask) -> Callable[[str], FlaskClient]:
    def sign_in(role: str) -> FlaskClient:
        client = app.test_client()
        client.post("/login", data={"username": role, "password": PASSWORD,
                                    "csrf_token": csrf_of(client)})  # fmt: skip
        client.csrf = csrf_of(client)  # type: ignore[attr-defined]
        return client

    return sign_in


def boot(client: FlaskClient, segment_id: str) -> Any:
    page = client.get(f"/segments/{segment_id}")
    assert page.status_code == 200
    found = re.search(
        r'<script type="application/json" id="segment-data">(.*?)</script>',
        page.get_data(as_text=True),
        re.S,
    )
    assert found
    return json.loads(found.group(1))


def post(client: FlaskClient, url: str, body: Any) -> Any:
    return client.post(url, json=body, headers={"X-CSRF-Token": client.csrf})  # type: ignore[attr-defined]


def changed_lines(old: str, new: str) -> list[str]:
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---"))]


# ---------------------------------------------------------------- the list


def test_list_shows_each_segment_with_its_count_trend_kind_and_problems(
    as_role: Callable[[str], FlaskClient], workspace: Path
) -> None:
    (workspace / "segments" / "broken.yaml").write_text(
        "format_version: 1\nid: broken\nname: Broken\nconditon:\n  tag: vip\n"
    )
    page = as_role("viewer").get("/segments").get_data(as_text=True)
    assert 'data-testid="nav-segments"' in page
    row = page.split('data-testid="segment-newsletter-subscribers"')[1].split("</tr>")[0]
    assert "Newsletter subscribers" in row and ">rule<" in row
    assert re.search(r'data-testid="count-newsletter-subscribers"><strong>4<', row)
    assert 'data-testid="delta-newsletter-subscribers"' in row and ">+1<" in row
    assert "<polyline points=" in row  # two days of counts: a sparkline
    vip = page.split('data-testid="segment-vip-list"')[1].split("</tr>")[0]
    assert "manual list" in vip and ">none<" in vip
    broken = page.split('data-testid="segment-broken"')[1].split("</tr>")[0]
    assert "line 4" in broken and "conditon" in broken and "did you mean" in broken.lower()
    assert 'data-testid="new-segment"' not in page  # a viewer has no "New segment"
    french = as_role("viewer").get("/segments?lang=fr").get_data(as_text=True)
    assert "Nouveau segment" not in french and "liste manuelle" in french


def test_a_new_segment_is_validated_like_a_new_journey_and_opens_clean(
    as_role: Callable[[str], FlaskClient], workspace: Path, app: Flask
) -> None:
    marketer = as_role("marketer")
    assert "new-segment" in marketer.get("/segments").get_data(as_text=True)
    form = {"csrf_token": marketer.csrf, "kind": "rule"}  # type: ignore[attr-defined]
    bad = marketer.post("/segments/new", data={**form, "id": "-x", "name": ""})
    text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "Letters, digits" in text and "Give a name" in text
    taken = marketer.post("/segments/new", data={**form, "id": "premium", "name": "Again"})
    assert taken.status_code == 400 and "already exists" in taken.get_data(as_text=True)
    made = marketer.post("/segments/new", data={**form, "id": "loyal-fr", "name": "Loyal: FR"})
    assert made.status_code == 302 and made.headers["Location"].endswith("/segments/loyal-fr")
    listed = marketer.post(
        "/segments/new", data={**form, "kind": "manual", "id": "shop-list", "name": "Shop list"}
    )
    assert listed.status_code == 302
    assert (workspace / "segments" / "shop-list.yaml").read_text().endswith("manual: {}\n")
    linted = lint_segment_folder(workspace / "segments")
    assert {"loyal-fr", "shop-list"} <= set(linted.segments)
    assert [p for p in linted.problems if "loyal-fr" in (p.file or "")] == []
    with app.extensions["parcours"].engine.connect() as conn:
        actions = conn.execute(
            select(AuditEntry.action, AuditEntry.target_kind, AuditEntry.username).where(
                AuditEntry.target_id == "loyal-fr"
            )
        ).all()
    assert [tuple(a) for a in actions] == [("create", "segment", "marketer")]
    viewer = as_role("viewer")
    refused = viewer.post("/segments/new", data={**form, "csrf_token": viewer.csrf,  # type: ignore[attr-defined]
                                                 "id": "v", "name": "V"})  # fmt: skip
    assert refused.status_code == 403 and not (workspace / "segments" / "v.yaml").exists()


# ---------------------------------------------------------------- the live count


def test_the_draft_is_counted_as_it_is_edited_with_a_linked_sample(
    as_role: Callable[[str], FlaskClient],
) -> None:
    viewer = as_role("viewer")  # counting changes nothing: a viewer may see it too
    data = boot(viewer, "repeat-buyers")
    assert data["segments"] == [s for s in data["segments"] if s != "repeat-buyers"]
    assert "newsletter-subscribers" in data["segments"] and "repeat-buyers" not in data["segments"]
    assert "rfm.class" in data["computed"] and "at_risk" in data["computedValues"]["lifecycle"]
    assert data["events"] == ["order_placed"] and "email" in data["attributes"]
    first = post(viewer, data["urls"]["preview"], {"yaml": data["yaml"]}).get_json()
    assert first["count"] == 4 and first["yaml"] == data["yaml"]  # c1, c2, c3 (2 in all), c5
    doc = {**data["doc"], "condition": BOTH}
    found = post(viewer, data["urls"]["preview"], {"yaml": data["yaml"], "doc": doc}).get_json()
    assert found["valid"] and found["problems"] == []
    assert found["count"] == 2 and [c["id"] for c in found["sample"]] == ["c1", "c5"]
    assert found["sample"][0]["url"] == "/contacts/c1"
    assert found["doc"]["condition"] == BOTH
    assert "- segment: newsletter-subscribers" in found["yaml"]
    assert found["yaml"].startswith("# Repeat buyers: two orders or more.\n")  # comment kept
    one = {**data["doc"], "condition": BOTH["all"][0]}
    alone = post(viewer, data["urls"]["preview"], {"yaml": found["yaml"], "doc": one}).get_json()
    assert alone["count"] == 3


def test_a_draft_that_cannot_be_counted_says_why(
    as_role: Callable[[str], FlaskClient],
) -> None:
    marketer = as_role("marketer")
    data = boot(marketer, "repeat-buyers")
    url, base = data["urls"]["preview"], data["yaml"]

    def ask(condition: Any) -> Any:
        return post(marketer, url, {"yaml": base, "doc": {**data["doc"], "condition": condition}})

    unknown = ask({"all": [{"segment": "newsletter"}, {"tag": "vip"}]}).get_json()
    assert unknown["count"] is None and not unknown["valid"]
    assert "Fix the problems" in unknown["reason"]
    [problem] = unknown["problems"]
    assert problem["code"] == "segment.unknown" and problem["line"] == 8
    assert "newsletter-subscribers" in problem["hint"]
    cycle = ask({"segment": "premium"}).get_json()  # premium is built on repeat-buyers
    assert [p["code"] for p in cycle["problems"]] == ["segment.cycle"]
    assert "repeat-buyers → premium → repeat-buyers" in cycle["problems"][0]["message"]
    itself = ask({"segment": "repeat-buyers"}).get_json()
    assert [p["code"] for p in itself["problems"]] == ["segment.cycle"]
    expression = ask({"expr": "contact.score > 3"}).get_json()
    assert expression["valid"] and expression["count"] is None
    assert "cannot be counted in the database" in expression["reason"]
    assert "expressions cannot be computed in SQL" in expression["reason"]
    typo = ask({"attribute": "rfm.clas", "op": "eq", "value": "champions"}).get_json()
    [mistyped] = typo["problems"]
    assert mistyped["line"] == 7 and mistyped["hint"] == "did you mean 'rfm.class'?"


def test_bad_requests_get_a_json_error(as_role: Callable[[str], FlaskClient], app: Flask) -> None:
    marketer = as_role("marketer")
    url = "/segments/premium/preview"
    headers = {"X-CSRF-Token": marketer.csrf, "Content-Type": "application/json"}  # type: ignore[attr-defined]
    not_json = marketer.post(url, data="{yaml", headers=headers)
    assert not_json.status_code == 400 and "error" in not_json.get_json()
    listed = post(marketer, url, ["yaml"])
    assert listed.status_code == 400 and listed.get_json()["error"]["code"] == "bad_request"
    no_text = post(marketer, url, {"yaml": 3})
    assert no_text.get_json()["error"]["field"] == "yaml"
    no_doc = post(marketer, url, {"yaml": "", "doc": [1]})
    assert no_doc.status_code == 400 and no_doc.get_json()["error"]["field"] == "doc"
    missing = post(marketer, "/segments/nope/preview", {"yaml": ""})
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    assert marketer.get("/segments/nope").status_code == 404
    forged = marketer.post(url, json={"yaml": ""})  # no CSRF token
    assert forged.status_code == 400 and forged.get_json()["error"]["code"] == "csrf"
    stranger = app.test_client().post(
        url, json={"yaml": ""}, headers={"Accept": "application/json"}
    )
    assert stranger.status_code in (400, 401)  # no session: no token, no user


# ---------------------------------------------------------------- saving


def test_save_writes_only_the_changed_line_and_refuses_a_stale_file(
    as_role: Callable[[str], FlaskClient], workspace: Path, app: Flask
) -> None:
    marketer = as_role("marketer")
    path = workspace / "segments" / "lapsed-90-days.yaml"
    before = path.read_text()
    data = boot(marketer, "lapsed-90-days")
    doc = data["doc"]
    doc["condition"]["all"][1]["within"] = "120d"
    draft = post(marketer, data["urls"]["preview"], {"yaml": data["yaml"], "doc": doc}).get_json()
    saved = post(marketer, data["urls"]["save"], {"yaml": draft["yaml"], "hash": data["hash"]})
    body = saved.get_json()
    assert saved.status_code == 200 and body["valid"] and body["rebuild"]
    assert "worker updates the membership within a minute" in body["message"]
    after = path.read_text()
    assert changed_lines(before, after) == ["-      within: 90d", "+      within: 120d"]
    assert after.startswith("# Lapsed:")
    again = post(marketer, data["urls"]["save"], {"yaml": before, "hash": data["hash"]})
    assert again.status_code == 409 and "reload" in again.get_json()["error"]["message"]
    assert path.read_text() == after  # the newer file is kept
    renamed = {**doc, "name": "Lapsed customers"}
    text = post(marketer, data["urls"]["preview"], {"yaml": after, "doc": renamed}).get_json()
    plain = post(marketer, data["urls"]["save"], {"yaml": text["yaml"], "hash": body["hash"]})
    assert plain.get_json()["message"] == "Saved." and not plain.get_json()["rebuild"]
    with app.extensions["parcours"].engine.connect() as conn:
        audits = conn.execute(
            select(AuditEntry.action, AuditEntry.details).where(
                AuditEntry.target_kind == "segment", AuditEntry.target_id == "lapsed-90-days"
            )
        ).all()
    assert [a.action for a in audits] == ["save", "save"]
    assert audits[0].details == {"errors": 0, "warnings": 0}
    viewer = as_role("viewer")
    refused = post(viewer, data["urls"]["save"], {"yaml": before, "hash": plain.get_json()["hash"]})
    assert refused.status_code == 403 and path.read_text() == text["yaml"]


def test_unreadable_yaml_is_never_written_and_a_draft_with_errors_is_flagged(
    as_role: Callable[[str], FlaskClient], workspace: Path
) -> None:
    marketer = as_role("marketer")
    path = workspace / "segments" / "prospects.yaml"
    before = path.read_text()
    data = boot(marketer, "prospects")
    broken = post(
        marketer, data["urls"]["save"], {"yaml": "id: [prospects\n", "hash": data["hash"]}
    )
    assert broken.status_code == 422 and "cannot be read" in broken.get_json()["error"]["message"]
    assert path.read_text() == before
    draft = before.replace("event: order_placed", "segment: nobody")
    draft = draft.replace("  count:\n    op: eq\n    value: 0\n", "")
    saved = post(marketer, data["urls"]["save"], {"yaml": draft, "hash": data["hash"]})
    body = saved.get_json()
    assert saved.status_code == 200 and not body["valid"] and not body["rebuild"]
    assert "draft with errors" in body["message"]
    assert [p["code"] for p in body["problems"]] == ["segment.unknown"]
    assert path.read_text() == draft
    garbled = workspace / "segments" / "first-purchase.yaml"
    garbled.write_bytes(b"format_version: 1\nname: \xff\xfe\n")
    page = marketer.get("/segments/first-purchase")
    assert page.status_code == 200 and "UTF-8" in page.get_data(as_text=True)
    kept = post(marketer, "/segments/first-purchase/save", {"yaml": before, "hash": ""})
    assert kept.status_code == 409 and garbled.read_bytes().endswith(b"\xff\xfe\n")


# ---------------------------------------------------------------- other pages


def test_a_manual_segment_shows_its_members_and_how_to_import_them(
    as_role: Callable[[str], FlaskClient], app: Flask
) -> None:
    engine = app.extensions["parcours"].engine
    with engine.begin() as conn:
        picked = select(Contact.id.label("id")).where(Contact.external_id.in_(["c2", "c4"]))
        membership.replace_members(conn, "vip-list", picked, T0, reason="import")
    client = as_role("viewer")
    page = client.get("/segments/vip-list").get_data(as_text=True)
    assert 'data-testid="import-command">parcours segment import vip-list<' in page
    assert "vip-list.csv" in page and 'data-testid="builder"' not in page
    assert 'data-testid="stored-count">2<' in page and 'href="/contacts/c4"' in page
    data = boot(client, "vip-list")
    counted = post(client, data["urls"]["preview"], {"yaml": data["yaml"]}).get_json()
    assert counted["count"] == 2 and [c["id"] for c in counted["sample"]] == ["c2", "c4"]


def test_the_contact_page_lists_the_segments_the_contact_is_in(
    as_role: Callable[[str], FlaskClient],
) -> None:
    client = as_role("viewer")
    page = client.get("/contacts/c5").get_data(as_text=True)
    block = page.split('data-testid="segments"')[1].split("</section>")[0]
    assert '<a href="/segments/newsletter-subscribers">Newsletter subscribers</a>' in block
    assert "since Jun 2, 2025, 11:00 CEST" in block  # entered at the second build, Paris time
    other = client.get("/contacts/c2").get_data(as_text=True)
    assert "In no segment." in other.split('data-testid="segments"')[1].split("</section>")[0]


def test_the_editor_loads_the_shared_condition_builder_before_the_inspector(
    as_role: Callable[[str], FlaskClient],
) -> None:
    page = as_role("viewer").get("/scenarios/win-back/edit").get_data(as_text=True)
    assert page.index("editor/conditions.js") < page.index("editor/inspector.js")
    response = as_role("viewer").get("/static/editor/inspector.js")
    script = response.get_data(as_text=True)
    response.close()
    assert "ParcoursConditions.mixin(Builder.prototype)" in script
