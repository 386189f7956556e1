"""The contact page's identity and privacy parts, on SQLite and PostgreSQL: identifiers, merges
(and the redirect from an absorbed id), the merge in the timeline, tombstones left out of the
list, the erased page, and the admin's export and erasure (roles, CSRF, confirmation, audit)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from designer import create_app
from designer.auth import create_user
from engine.audience.ingest import clean_contact, contact_ids, upsert_contacts
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.store.models import AuditEntry, Contact, ContactIdentifier, ContactMerge, JournalEntry
from tests.web.conftest import PASSWORD, ROLES, csrf_of

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
MERGED_AT = T0 - timedelta(hours=2)


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
    yield found
    state.engine.dispose()


@pytest.fixture
def engine(app: Flask) -> Engine:
    found: Engine = app.extensions["parcours"].engine
    return found


@pytest.fixture
def as_role(app: Flask) -> Callable[[str], FlaskClient]:
    def sign_in(role: str) -> FlaskClient:
        client = app.test_client()
        client.post("/login", data={"username": role, "password": PASSWORD,
                                    "csrf_token": csrf_of(client)})  # fmt: skip
        client.csrf = csrf_of(client)  # type: ignore[attr-defined]
        return client

    return sign_in


def seed_merge(engine: Engine) -> dict[str, int]:
    """`crm-1` (the survivor) absorbed `web-9`, an anonymous visitor; `crm-2` stands apart."""
    rows = [
        {"external_id": "crm-1", "email": "marie@example.com", "phone": "+33612345678"},
        {"external_id": "web-9", "email": "visitor@example.com"},
        {"external_id": "crm-2", "email": "pierre@example.com"},
    ]
    with engine.begin() as conn:
        upsert_contacts(conn, [clean_contact(r) for r in rows], T0 - timedelta(days=3))
        ids = contact_ids(conn, [r["external_id"] for r in rows], T0)
        survivor, absorbed = ids["crm-1"], ids["web-9"]
        conn.execute(update(Contact).where(Contact.id == absorbed).values(merged_into=survivor))
        conn.execute(update(Contact).where(Contact.id == ids["crm-2"]).values(anonymous=True))
        conn.execute(insert(ContactIdentifier), [
            {"contact_id": survivor, "kind": "email", "value": "marie@example.com",
             "source": "api", "created_at": T0 - timedelta(days=3)},
            {"contact_id": survivor, "kind": "loyalty_card", "value": "LC-4417",
             "source": "import", "created_at": T0 - timedelta(days=2)},
            {"contact_id": survivor, "kind": "external_id", "value": "web-9",
             "source": "merge", "created_at": MERGED_AT},
        ])  # fmt: skip
        merge_id = conn.execute(
            insert(ContactMerge).values(survivor_id=survivor, absorbed_id=absorbed, at=MERGED_AT,
                                        actor="alice", source="identify", details={})
            .returning(ContactMerge.id)
        ).scalar_one()  # fmt: skip
        conn.execute(insert(JournalEntry).values(
            at=MERGED_AT, kind="merged", contact_id=survivor, scenario_id=None,
            data={"merge_id": merge_id, "absorbed_id": absorbed,
                  "absorbed_external_id": "web-9", "source": "identify"},
        ))  # fmt: skip
    return ids


def text(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    assert response.status_code == status, (path, response.status_code)
    return response.get_data(as_text=True)


def section(page: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}">(.*?)</section>', page, re.S)
    assert found, f"no section {testid}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1)))


# ---------------------------------------------------------------- identifiers, merges, timeline


def test_contact_page_lists_identifiers_and_merges(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    seed_merge(engine)
    page = text(as_role("viewer"), "/contacts/crm-1")
    identifiers = section(page, "identifiers")
    assert "Loyalty card LC-4417 import May 31, 2025, 11:00 CEST" in identifiers  # Paris time
    assert "Email marie@example.com api" in identifiers
    assert "External id web-9 merge" in identifiers
    merges = section(page, "merges")
    assert "Absorbed web-9" in merges
    assert "Jun 2, 2025, 09:00 CEST · by alice · identified by an event" in merges


def test_the_timeline_shows_the_merge(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    with engine.begin() as conn:  # the absorbed contact's journey, ended by the merge
        conn.execute(insert(JournalEntry).values(
            at=MERGED_AT, kind="exited", contact_id=ids["crm-1"], scenario_id="welcome",
            reason="merged", data={},
        ))  # fmt: skip
    page = text(as_role("viewer"), "/contacts/crm-1")
    feed = section(page, "timeline")
    assert "Left the journey welcome Contact merged into another" in feed
    assert "Merge" in feed
    assert "Merged contact web-9 into this one (identified by an event)" in feed
    french = text(as_role("viewer"), "/contacts/crm-1?lang=fr")
    assert "Contact web-9 fusionné dans celui-ci (identifié par un événement)" in french


def test_an_absorbed_id_leads_to_the_survivor_with_a_notice(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    seed_merge(engine)
    viewer = as_role("viewer")
    response = viewer.get("/contacts/web-9")
    assert response.status_code == 302
    assert response.headers["Location"] == "/contacts/crm-1?merged_from=web-9"
    page = text(viewer, "/contacts/crm-1?merged_from=web-9")
    assert "web-9 was merged into crm-1." in page
    # the notice is only ever said of a true merge, never of an id the address makes up
    assert "was merged into" not in text(viewer, "/contacts/crm-1?merged_from=crm-2")
    assert "was merged into" not in text(viewer, "/contacts/crm-1")
    # an id known only as an identifier (its tombstone row gone) resolves the same way
    with engine.begin() as conn:
        conn.execute(update(ContactIdentifier).where(ContactIdentifier.value == "web-9")
                     .values(value="old-web-7"))  # fmt: skip
    response = viewer.get("/contacts/old-web-7")
    assert response.headers["Location"] == "/contacts/crm-1?merged_from=old-web-7"


def test_an_erased_contact_shows_a_plain_page(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    with engine.begin() as conn:
        conn.execute(update(Contact).where(Contact.id == ids["crm-2"])
                     .values(erased_at=T0 - timedelta(days=1)))  # fmt: skip
    page = text(as_role("viewer"), "/contacts/crm-2", status=410)
    assert "This contact was erased on Jun 1, 2025, 11:00 CEST." in page
    assert "pierre@example.com" not in page and "Pressure barometer" not in page
    text(as_role("viewer"), "/contacts/nobody", status=404)


def test_the_list_leaves_tombstones_out_and_marks_anonymous_contacts(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    seed_merge(engine)
    viewer = as_role("viewer")
    page = text(viewer, "/contacts")
    assert re.findall(r'href="/contacts/([^"]+)"', page) == ["crm-2", "crm-1"]  # no web-9
    assert "Contacts: 2" in page
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    anonymous = [r for r in rows if 'data-testid="anonymous"' in r]
    assert len(anonymous) == 1 and "crm-2" in anonymous[0]
    assert "web-9" not in text(viewer, "/contacts?q=web")  # not found by search either


# ---------------------------------------------------------------- admin: export and erase


def privacy_paths(contact_id: int) -> dict[str, str]:
    return {"export": f"/privacy/contacts/{contact_id}/export",
            "erase": f"/privacy/contacts/{contact_id}/erase"}  # fmt: skip


def audits(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        query = select(AuditEntry).where(AuditEntry.action == action)
        return list(conn.execute(query.order_by(AuditEntry.id)))


def email_of(engine: Engine, contact_id: int) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(select(Contact.email).where(Contact.id == contact_id)).scalar_one()
        return found  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ["viewer", "marketer"])
def test_only_admins_see_and_reach_the_privacy_actions(
    as_role: Callable[[str], FlaskClient], engine: Engine, role: str
) -> None:
    ids = seed_merge(engine)
    client = as_role(role)
    page = text(client, "/contacts/crm-1")
    assert "Export data" not in page and "Erase contact" not in page
    paths = privacy_paths(ids["crm-1"])
    token = {"csrf_token": client.csrf}  # type: ignore[attr-defined]
    assert client.post(paths["export"], data=token).status_code == 403
    assert client.get(paths["erase"]).status_code == 403
    form = {**token, "confirm": "crm-1"}
    assert client.post(paths["erase"], data=form).status_code == 403
    assert email_of(engine, ids["crm-1"]) == "marie@example.com"
    assert "Export data" in text(as_role("admin"), "/contacts/crm-1")


def test_privacy_actions_refuse_a_missing_csrf_token(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    admin = as_role("admin")
    paths = privacy_paths(ids["crm-1"])
    assert admin.post(paths["export"]).status_code == 400
    response = admin.post(paths["erase"], data={"confirm": "crm-1", "csrf_token": "forged"})
    assert response.status_code == 400
    assert email_of(engine, ids["crm-1"]) == "marie@example.com"
    assert audits(engine, "export") == [] and audits(engine, "erase") == []


def test_a_wrong_confirmation_erases_nothing(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    admin = as_role("admin")
    path = privacy_paths(ids["crm-1"])["erase"]
    form = text(admin, path)
    assert "What is kept" in form and "salted hash" in form
    for typed in ("crm-2", "CRM-1", ""):
        response = admin.post(
            path, data={"confirm": typed, "reason": "asked by phone", "csrf_token": admin.csrf}
        )  # type: ignore[attr-defined]
        assert response.status_code == 400, typed
        page = response.get_data(as_text=True)
        assert "Type the external id exactly as shown to confirm." in page
        assert 'value="asked by phone"' in page  # the reason is kept for the next try
    assert email_of(engine, ids["crm-1"]) == "marie@example.com"
    assert audits(engine, "erase") == []


def test_merged_or_unknown_contacts_have_no_privacy_actions(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    admin = as_role("admin")
    for contact_id in (ids["web-9"], 999_999):
        paths = privacy_paths(contact_id)
        assert admin.get(paths["erase"]).status_code == 404
        token = {"csrf_token": admin.csrf}  # type: ignore[attr-defined]
        assert admin.post(paths["export"], data=token).status_code == 404


def test_an_admin_exports_the_contact_as_a_json_file(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    admin = as_role("admin")
    response = admin.post(privacy_paths(ids["crm-1"])["export"], data={"csrf_token": admin.csrf})  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == 'attachment; filename="crm-1.json"'
    data = json.loads(response.get_data(as_text=True))
    flat = json.dumps(data)
    assert "marie@example.com" in flat and "LC-4417" in flat
    entries = audits(engine, "export")
    assert len(entries) == 1  # one entry, whoever writes it
    assert (entries[0].username, entries[0].target_kind, entries[0].target_id) == (
        "admin", "contact", str(ids["crm-1"]))  # fmt: skip


def test_an_admin_erases_a_contact_after_typing_its_id(
    as_role: Callable[[str], FlaskClient], engine: Engine
) -> None:
    ids = seed_merge(engine)
    admin = as_role("admin")
    response = admin.post(privacy_paths(ids["crm-1"])["erase"], data={
        "confirm": "crm-1", "reason": "asked by email", "csrf_token": admin.csrf,  # type: ignore[attr-defined]
    })  # fmt: skip
    assert response.status_code == 302
    assert response.headers["Location"] == "/contacts"
    page = text(admin, "/contacts")
    assert "Contact erased." in page
    assert "crm-1" not in re.findall(r'href="/contacts/([^"]+)"', page)
    with engine.connect() as conn:
        row = conn.execute(select(Contact).where(Contact.id == ids["crm-1"])).one()
    assert row.email is None and row.phone is None and row.erased_at is not None
    entries = audits(engine, "erase")
    assert len(entries) == 1
    assert (entries[0].username, entries[0].target_id) == ("admin", str(ids["crm-1"]))
    assert "This contact was erased on" in text(admin, f"/contacts/erased:{ids['crm-1']}", 410)
    text(admin, "/contacts/crm-1", 404)  # its external id names no one any more
    # already erased: no second erasure
    assert admin.get(privacy_paths(ids["crm-1"])["erase"]).status_code == 404
