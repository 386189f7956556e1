"""The API's resources for a CRM or a shop: contacts (list, search, bulk upsert), events in
bulk, suppressions, scenarios, the outbox; their cursor pages and their OpenAPI description.

The key is PARCOURS_API_KEY (the one key of this version: every key may read and write, so
scopes are checked as the document declares them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine

from designer import create_app
from engine.audience.contact_list import ContactFilter, page_query
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.store import db
from engine.store.models import AuditEntry, Contact, Event, SegmentMember, Send, Suppression
from tests.problems import assert_problem

KEY = "test-api-key"
AUTH = {"X-Api-Key": KEY}
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
SCENARIO = """\
format_version: 1
id: demo
name: Demo
objective: other
triggers:
  - manual: true
steps:
  pause:
    type: wait
    duration: 1d
"""


def _app(url: str, tmp_path: Path) -> Flask:
    folder = tmp_path / "scenarios"
    folder.mkdir(exist_ok=True)
    (folder / "identity.yaml").write_text(
        "format_version: 1\nkinds:\n  loyalty_card: {label: Loyalty card}\n", encoding="utf-8"
    )
    settings = load_settings(
        {}, database_url=url, api_key=KEY, data_dir=tmp_path, scenarios_dir=folder
    )
    app = create_app(settings, {"TESTING": True})
    app.extensions["parcours"].clock = VirtualClock(T0)
    return app


@pytest.fixture
def app(engine_url: str, tmp_path: Path) -> Iterator[Flask]:
    """On SQLite and PostgreSQL."""
    app = _app(engine_url, tmp_path)
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Flask]:
    """On SQLite only, for what does not depend on the database."""
    url = f"sqlite:///{tmp_path / 'parcours.db'}"
    db.upgrade(url)
    app = _app(url, tmp_path)
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def lite_client(lite: Flask) -> FlaskClient:
    return lite.test_client()


def engine_of(app: Flask) -> Engine:
    found: Engine = app.extensions["parcours"].engine
    return found


def bulk(client: FlaskClient, rows: list[Any]) -> Any:
    response = client.post("/api/contacts/bulk", json={"contacts": rows}, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def walk(client: FlaskClient, path: str, key: str, between: Any = None) -> list[dict[str, Any]]:
    """Every row of a list, page by page, following `next`; `between(page)` runs after each."""
    seen: list[dict[str, Any]] = []
    url, pages = path, 0
    while True:
        response = client.get(url, headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
        seen += body[key]
        pages += 1
        assert pages < 100
        if body["next"] is None:
            assert "Link" not in response.headers
            return seen
        link = response.headers["Link"]
        assert link.startswith("</api/") and link.endswith('>; rel="next"')
        url = link[1 : link.index(">")]
        assert f"cursor={body['next']}" in url
        if between is not None:
            between(pages)


# --- contacts: the list -------------------------------------------------------------------------


def test_the_walk_sees_every_contact_once_while_others_are_added(client: FlaskClient) -> None:
    bulk(client, [{"external_id": f"c-{i:03}", "email": f"c{i}@example.org"} for i in range(40)])
    added: list[str] = []

    def meanwhile(page: int) -> None:  # another client writes between our pages
        new = [f"new-{page}-{i}" for i in range(3)]
        added.extend(new)
        bulk(client, [{"external_id": e} for e in new] + [{"external_id": "c-000", "score": page}])

    seen = [c["external_id"] for c in walk(client, "/api/contacts?limit=7", "contacts", meanwhile)]
    assert len(seen) == len(set(seen))  # no contact twice, though c-000 changed on every page
    assert {f"c-{i:03}" for i in range(40)} <= set(seen)
    assert set(seen) <= {f"c-{i:03}" for i in range(40)} | set(added)
    assert added[0] in seen  # rows added during the walk come at the end


def test_search_by_prefix_of_external_id_or_email_any_case(client: FlaskClient) -> None:
    bulk(
        client,
        [
            {"external_id": "Shop-1", "email": "ann@example.org"},
            {"external_id": "shop-2", "email": "bob@example.org"},
            {"external_id": "crm-3", "email": "Shopper@Example.org"},
            {"external_id": "crm-4", "email": "zed@example.org"},
            {"external_id": "100%_a"},
            {"external_id": "100x"},
        ],
    )

    def found(query: str) -> list[str]:
        response = client.get(f"/api/contacts?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [c["external_id"] for c in response.get_json()["contacts"]]

    assert found("q=SHOP") == ["Shop-1", "shop-2", "crm-3"]
    assert found("q=bo") == ["shop-2"]
    assert found("q=100%25_") == ["100%_a"]  # % and _ are text, not wildcards
    assert found("email=ZED@example.org") == ["crm-4"]
    assert found("q=nobody") == []


def test_filters_segment_updated_since_and_attributes(app: Flask, client: FlaskClient) -> None:
    clock = app.extensions["parcours"].clock
    bulk(client, [{"external_id": f"a{i}", "attributes": {"tier": "gold" if i % 2 else "silver",
                   "visits": i, "vip": i == 3}} for i in range(6)])  # fmt: skip
    clock.advance(timedelta(hours=2))
    bulk(client, [{"external_id": "a4", "score": 9}])
    with engine_of(app).begin() as conn:
        ids = dict(conn.execute(select(Contact.external_id, Contact.id)).all())
        conn.execute(
            insert(SegmentMember),
            [{"segment_id": "gold", "contact_id": ids[e], "since": T0} for e in ("a1", "a5")],
        )

    def found(query: str) -> list[str]:
        response = client.get(f"/api/contacts?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [c["external_id"] for c in response.get_json()["contacts"]]

    assert found("segment=gold") == ["a1", "a5"]
    assert found("segment=gold&limit=1&cursor=" + _cursor_after(client, "segment=gold")) == ["a5"]
    assert found("updated_since=" + (T0 + timedelta(hours=1)).isoformat().replace("+", "%2B")) == [
        "a4"
    ]
    assert found("updated_since=2025-06-02T10:00:00") == ["a4"]  # naive: UTC
    assert found("attr.tier=gold") == ["a1", "a3", "a5"]
    assert found("attr.visits=3") == ["a3"]  # the number, from a query string
    assert found("attr.vip=true&attr.tier=gold") == ["a3"]
    assert found("attr.tier=gold&segment=gold&q=a5") == ["a5"]


def _cursor_after(client: FlaskClient, query: str) -> str:
    body = client.get(f"/api/contacts?{query}&limit=1", headers=AUTH).get_json()
    assert body["next"]
    return str(body["next"])


def test_merged_and_erased_contacts_are_not_listed(app: Flask, client: FlaskClient) -> None:
    bulk(client, [{"external_id": e} for e in ("live", "gone", "absorbed")])
    with engine_of(app).begin() as conn:
        ids = dict(conn.execute(select(Contact.external_id, Contact.id)).all())
        conn.execute(Contact.__table__.update().where(Contact.id == ids["gone"]).values(
            erased_at=T0))  # fmt: skip
        conn.execute(Contact.__table__.update().where(Contact.id == ids["absorbed"]).values(
            merged_into=ids["live"]))  # fmt: skip
    listed = client.get("/api/contacts", headers=AUTH).get_json()["contacts"]
    assert [c["external_id"] for c in listed] == ["live"]


def test_bad_list_queries_name_the_field(lite_client: FlaskClient) -> None:
    def refused(query: str, field: str, code: str = "invalid") -> None:
        response = lite_client.get(f"/api/contacts?{query}", headers=AUTH)
        assert_problem(response, 422, code, field)

    refused("limit=0", "limit")
    refused("limit=501", "limit")
    refused("limit=ten", "limit")
    refused("updated_since=yesterday", "updated_since")
    refused("cursor=forged", "cursor", "invalid_cursor")
    refused('attr.a"b=1', 'attr.a"b')
    refused("&".join(f"attr.a{i}=1" for i in range(6)), "attr.")
    # a cursor of another list is refused too: it is signed for its list
    for i in range(2):
        lite_client.post(
            "/api/suppressions",
            json={"channel": "email", "address": f"y{i}@example.org", "reason": "operator"},
            headers=AUTH,
        )
    other = lite_client.get("/api/suppressions?limit=1", headers=AUTH).get_json()["next"]
    refused(f"cursor={other}", "cursor", "invalid_cursor")


@pytest.mark.pg
def test_search_is_index_driven_on_postgresql(pg_admin: Engine, tmp_path: Path) -> None:
    """On 50,000 contacts the plans use the prefix indexes and the segment's key, never a
    sequential scan of contacts."""
    import secrets

    from sqlalchemy.engine import make_url

    from tests.conftest import PG_BASE_URL

    name = f"parcours_test_{secrets.token_hex(6)}"
    with pg_admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(PG_BASE_URL).set(database=name).render_as_string(hide_password=False)
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO contacts (external_id, email, attributes, tags, score, opted_out,"
                " anonymous, created_at, updated_at) SELECT 'Cust-' || g, 'p' || g || "
                "'@example.org', '{}', '[]', 0, false, false, now(), now() "
                "FROM generate_series(1, 50000) g"))  # fmt: skip
            conn.execute(text(
                "INSERT INTO segment_members (segment_id, contact_id, since) "
                "SELECT 'vip', id, now() FROM contacts WHERE id % 100 = 0"))  # fmt: skip
            conn.execute(text("ANALYZE contacts"))
            conn.execute(text("ANALYZE segment_members"))

        def plan(wanted: ContactFilter) -> str:
            with engine.connect() as conn:
                query = page_query(conn, wanted, 0, 101)
                sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
                return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))

        by_prefix = plan(ContactFilter(q="cust-4242"))
        assert "ix_contacts_external_id_lower" in by_prefix, by_prefix
        assert "ix_contacts_email_lower" in by_prefix, by_prefix
        assert "Seq Scan on contacts" not in by_prefix, by_prefix
        by_email = plan(ContactFilter(email="p77@example.org"))
        assert "ix_contacts_email" in by_email and "Seq Scan" not in by_email, by_email
        by_segment = plan(ContactFilter(segment="vip"))
        assert "segment_members" in by_segment and "Seq Scan" not in by_segment, by_segment
        with engine.connect() as conn:
            found = [r.external_id for r in conn.execute(page_query(
                conn, ContactFilter(q="CUST-4242"), 0, 101))]  # fmt: skip
        assert found == ["Cust-4242", *(f"Cust-4242{i}" for i in range(10))]
    finally:
        engine.dispose()
        with pg_admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- contacts: bulk upsert ----------------------------------------------------------------------


def test_bulk_upsert_answers_each_row(app: Flask, client: FlaskClient) -> None:
    client.put("/api/contacts/known", json={"email": "k@example.org", "score": 1}, headers=AUTH)
    held = {"identifiers": {"loyalty_card": "L-9"}}
    assert client.put("/api/contacts/other", json=held, headers=AUTH).status_code == 200
    body = bulk(
        client,
        [
            {"external_id": "new-1", "email": "New@Example.org", "attributes": {"city": "Lyon"}},
            {"external_id": "known", "score": 2},
            {"external_id": "known", "score": 2},  # the same again: nothing to change
            {"external_id": "bad", "email": "not-an-email"},
            "a string",
            {"email": "nobody@example.org"},
            {"external_id": "thief", "identifiers": {"loyalty_card": "L-9"}},
            {"external_id": "known", "email": "k@example.org"},  # as stored: unchanged
        ],
    )
    results = body["results"]
    assert [r["index"] for r in results] == list(range(8))
    assert [r["status"] for r in results] == [
        "created", "updated", "unchanged", "error", "error", "error", "error", "unchanged",
    ]  # fmt: skip
    assert results[3]["error"]["field"] == "contacts.3.email"
    assert "not an email" in results[3]["error"]["message"]
    assert results[4]["error"]["field"] == "contacts.4"
    assert results[5]["error"]["field"] == "contacts.5.external_id"
    assert results[6]["error"]["field"] == "contacts.6.identifiers.loyalty_card"
    assert results[0]["error"] is None and results[0]["external_id"] == "new-1"
    assert body["counts"] == {"created": 1, "updated": 1, "unchanged": 2, "error": 4}
    with engine_of(app).connect() as conn:
        rows = {r.external_id: r for r in conn.execute(select(Contact))}
    assert set(rows) == {"known", "other", "new-1"}  # the bad rows wrote nothing
    assert rows["new-1"].email == "new@example.org" and rows["new-1"].attributes == {"city": "Lyon"}
    assert rows["known"].score == 2


def test_an_unchanged_row_is_not_written(app: Flask, client: FlaskClient) -> None:
    clock = app.extensions["parcours"].clock
    bulk(client, [{"external_id": "x", "attributes": {"a": 1, "b": 2}}])
    clock.advance(timedelta(days=1))
    again = bulk(client, [{"external_id": "x", "attributes": {"a": 1}}])
    assert again["results"][0]["status"] == "unchanged"
    with engine_of(app).connect() as conn:
        stamp = conn.execute(select(Contact.updated_at).where(Contact.external_id == "x"))
        assert stamp.scalar_one() == T0  # not written: no segment refresh either
    clock.advance(timedelta(days=1))
    changed = bulk(client, [{"external_id": "x", "attributes": {"b": 3}}])
    assert changed["results"][0]["status"] == "updated"
    with engine_of(app).connect() as conn:
        row = conn.execute(select(Contact).where(Contact.external_id == "x")).one()
    assert row.attributes == {"a": 1, "b": 3}  # merged key by key, as PUT does
    assert row.updated_at == T0 + timedelta(days=2)


def test_bulk_limits(lite_client: FlaskClient) -> None:
    many = {"contacts": [{"external_id": f"c{i}"} for i in range(1001)]}
    response = lite_client.post("/api/contacts/bulk", json=many, headers=AUTH)
    assert_problem(response, 413, "too_many", "contacts")
    assert lite_client.get("/api/contacts", headers=AUTH).get_json()["contacts"] == []
    response = lite_client.post("/api/contacts/bulk", json={"rows": []}, headers=AUTH)
    assert_problem(response, 422, "invalid", "contacts")
    response = lite_client.post("/api/contacts/bulk", data="x", headers=AUTH)
    assert_problem(response, 415, "unsupported_media_type")
    exactly = {"contacts": [{"external_id": f"c{i}"} for i in range(1000)]}
    response = lite_client.post("/api/contacts/bulk", json=exactly, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["counts"]["created"] == 1000


# --- events in bulk -----------------------------------------------------------------------------


def test_bulk_events_are_idempotent_and_answer_each_row(app: Flask, client: FlaskClient) -> None:
    woken: list[int] = []
    app.extensions["parcours"].wake = lambda: woken.append(1)
    events = [
        {"contact": "ann", "name": "purchase", "idempotency_key": "order-1",
         "properties": {"total": 42}},
        {"contact": "ann", "name": "not valid"},
        {"contact": "bob", "name": "purchase", "idempotency_key": "order-1"},  # same key again
        {"contact": "bob", "name": "view", "idempotency_key": "view-1", "event_key": "other"},
        {"contact": "bob", "name": "view", "idempotency_key": "has space"},
        {"contact": "bob", "name": "view", "event_key": "view-2"},
    ]  # fmt: skip
    response = client.post("/api/events/bulk", json={"events": events}, headers=AUTH)
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert [r["status"] for r in body["results"]] == [
        "recorded", "error", "duplicate", "error", "error", "recorded",
    ]  # fmt: skip
    assert [r["error"]["field"] for r in body["results"] if r["error"]] == [
        "events.1.name", "events.3.event_key", "events.4.idempotency_key",
    ]  # fmt: skip
    assert body["results"][0]["event_key"] == "order-1"
    assert body["counts"] == {"recorded": 2, "duplicate": 1, "error": 3}
    assert woken
    again = client.post("/api/events/bulk", json={"events": events}, headers=AUTH).get_json()
    assert again["counts"] == {"recorded": 0, "duplicate": 3, "error": 3}
    with engine_of(app).connect() as conn:
        keys = sorted(conn.execute(select(Event.event_key)).scalars())
    assert keys == ["order-1", "view-2"]  # posted twice, stored once
    # the single call's Idempotency-Key names the same event
    single = client.post(
        "/api/events",
        json={"contact": "ann", "name": "purchase"},
        headers={**AUTH, "Idempotency-Key": "order-1"},
    )
    assert single.get_json() == {"recorded": 0, "duplicates": 1}


def test_bulk_events_limits(lite_client: FlaskClient) -> None:
    many = {"events": [{"contact": "a", "name": "view"}] * 1001}
    response = lite_client.post("/api/events/bulk", json=many, headers=AUTH)
    assert_problem(response, 413, "too_many", "events")
    response = lite_client.post("/api/events/bulk", json=[], headers=AUTH)
    assert_problem(response, 422, "invalid")


# --- suppressions -------------------------------------------------------------------------------


def test_suppressions_list_get_and_lift(app: Flask, client: FlaskClient) -> None:
    client.put("/api/contacts/ann", json={"email": "ann@example.org"}, headers=AUTH)
    for channel, address, reason, contact in [
        ("email", "ann@example.org", "hard_bounce", "ann"),
        ("sms", "+33612345678", "unsubscribe", None),
        ("*", "old@example.org", "erasure", None),
        ("email", "eve@example.org", "spam_complaint", None),
    ]:
        wanted = {"channel": channel, "address": address, "reason": reason}
        response = client.post(
            "/api/suppressions", json={**wanted, **({"contact": contact} if contact else {})},
            headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 201
    listed = walk(client, "/api/suppressions?limit=3", "suppressions")
    assert [s["address"] for s in listed] == [
        "ann@example.org", "+33612345678", "old@example.org", "eve@example.org",
    ]  # fmt: skip
    assert listed[0]["contact"] == "ann" and listed[1]["contact"] is None

    def found(query: str) -> list[str]:
        response = client.get(f"/api/suppressions?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [s["reason"] for s in response.get_json()["suppressions"]]

    assert found("channel=email") == ["hard_bounce", "spam_complaint"]
    assert found("reason=unsubscribe") == ["unsubscribe"]
    assert found("address=ANN@example.org") == ["hard_bounce"]
    assert found("contact=ann") == ["hard_bounce"]
    assert_problem(client.get("/api/suppressions?address=nope", headers=AUTH), 422, "invalid",
                   "address")  # fmt: skip
    assert_problem(client.get("/api/suppressions?contact=zz", headers=AUTH), 422, "invalid",
                   "contact")  # fmt: skip
    assert_problem(client.get("/api/suppressions?reason=bored", headers=AUTH), 422, "invalid",
                   "reason")  # fmt: skip

    first = listed[0]["id"]
    assert client.get(f"/api/suppressions/{first}", headers=AUTH).get_json() == {
        "suppression": listed[0]
    }
    lifted = client.delete(f"/api/suppressions/{first}", headers=AUTH)
    assert lifted.status_code == 200 and lifted.get_json()["lifted"] is True
    assert_problem(client.get(f"/api/suppressions/{first}", headers=AUTH), 404, "not_found")
    assert_problem(client.delete(f"/api/suppressions/{first}", headers=AUTH), 404, "not_found")
    erasure = listed[2]["id"]
    assert_problem(
        client.delete(f"/api/suppressions/{erasure}", headers=AUTH), 409, "suppression_kept"
    )
    with engine_of(app).connect() as conn:
        left = conn.execute(select(func.count()).select_from(Suppression)).scalar_one()
        audit = conn.execute(select(AuditEntry).where(AuditEntry.action == "lift")).all()
    assert left == 3
    assert [(a.username, a.target_kind, a.target_id) for a in audit] == [
        ("PARCOURS_API_KEY", "suppression", str(first))
    ]
    assert audit[0].details == {"channel": "email", "reason": "hard_bounce"}  # no address


def test_lifting_is_audited_with_the_keys_name(lite: Flask, lite_client: FlaskClient) -> None:
    from engine import api_keys

    with engine_of(lite).begin() as conn:
        shop = {"X-Api-Key": api_keys.create(conn, "shop-sync", "write", by="ops")}
    lite_client.post(
        "/api/suppressions",
        json={"channel": "email", "address": "a@example.org", "reason": "operator"},
        headers=shop,
    )
    assert lite_client.delete("/api/suppressions/1", headers=shop).status_code == 200
    with engine_of(lite).connect() as conn:
        lifted = select(AuditEntry.username).where(AuditEntry.action == "lift")
        assert conn.execute(lifted).scalars().all() == ["shop-sync"]


# --- scenarios ----------------------------------------------------------------------------------


def test_scenarios_publish_pause_resume(lite: Flask, lite_client: FlaskClient) -> None:
    folder = lite.extensions["parcours"].settings.scenarios_dir
    (folder / "demo.yaml").write_text(SCENARIO, encoding="utf-8")
    (folder / "broken.yaml").write_text(
        "format_version: 1\nid: broken\nname: B\nsteps: {}\n", encoding="utf-8"
    )
    client = lite_client
    listed = client.get("/api/scenarios", headers=AUTH).get_json()["scenarios"]
    assert {s["id"]: s["status"] for s in listed} == {"demo": "draft", "broken": "draft"}
    assert next(s for s in listed if s["id"] == "broken")["problems"] > 0

    published = client.post("/api/scenarios/demo/publish", headers=AUTH)
    assert published.get_json() == {
        "scenario": "demo", "version": 1, "created": True, "status": "live"
    }  # fmt: skip
    again = client.post("/api/scenarios/demo/publish", headers=AUTH).get_json()
    assert again["created"] is False and again["version"] == 1
    refused = assert_problem(
        client.post("/api/scenarios/broken/publish", headers=AUTH), 422, "scenario_invalid"
    )
    assert {"objective", "triggers", "steps"} <= {e["field"] for e in refused["errors"]}
    unknown = assert_problem(
        client.post("/api/scenarios/dmeo/publish", headers=AUTH), 404, "not_found"
    )
    assert "did you mean 'demo'" in unknown["detail"]
    assert_problem(
        client.post("/api/scenarios/demo/publish?status=draft", headers=AUTH), 422, "invalid",
        "status",
    )  # fmt: skip

    assert client.post("/api/scenarios/demo/pause", headers=AUTH).get_json() == {
        "scenario": "demo", "status": "paused"
    }  # fmt: skip
    detail = client.get("/api/scenarios/demo", headers=AUTH).get_json()["scenario"]
    assert detail["status"] == "paused" and detail["version"] == 1
    assert detail["published_by"] == "PARCOURS_API_KEY"
    assert [(v["number"], v["current"]) for v in detail["versions"]] == [(1, True)]
    assert client.post("/api/scenarios/demo/resume", headers=AUTH).get_json()["status"] == "live"
    assert_problem(client.post("/api/scenarios/broken/pause", headers=AUTH), 404, "not_found")
    assert_problem(client.get("/api/scenarios/nope", headers=AUTH), 404, "not_found")
    with engine_of(lite).connect() as conn:
        audit = conn.execute(select(AuditEntry.username, AuditEntry.action)).all()
    assert audit == [
        ("PARCOURS_API_KEY", "publish"),
        ("PARCOURS_API_KEY", "pause"),
        ("PARCOURS_API_KEY", "resume"),
    ]


# --- outbox -------------------------------------------------------------------------------------


def test_outbox_pages_and_filters(lite: Flask, lite_client: FlaskClient) -> None:
    bulk(lite_client, [{"external_id": "ann"}])
    with engine_of(lite).begin() as conn:
        ann = conn.execute(select(Contact.id)).scalar_one()
        conn.execute(
            insert(Send),
            [
                {
                    "send_key": f"k{i}", "contact_id": ann, "scenario_id": "s" if i < 4 else "t",
                    "step_id": "mail", "channel": "email" if i % 2 else "sms",
                    "kind": "marketing", "status": "sent" if i < 3 else "queued",
                    "payload": {"parts": {"subject": f"Hello {i}"}},
                    "created_at": T0 + timedelta(hours=i),
                }
                for i in range(6)
            ],
        )  # fmt: skip
    sends = walk(lite_client, "/api/outbox?limit=4", "sends")
    assert [s["send_key"] for s in sends] == [f"k{i}" for i in range(6)]
    assert sends[0]["contact"] == "ann" and sends[0]["parts"] == {"subject": "Hello 0"}
    assert sends[0]["at"] == T0.isoformat()

    def keys(query: str) -> list[str]:
        response = lite_client.get(f"/api/outbox?{query}", headers=AUTH)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [s["send_key"] for s in response.get_json()["sends"]]

    assert keys("scenario=t") == ["k4", "k5"]
    assert keys("channel=email&status=sent") == ["k1"]
    assert keys("since=2025-06-02T12:00:00Z") == ["k3", "k4", "k5"]
    assert_problem(lite_client.get("/api/outbox?status=lost", headers=AUTH), 422, "invalid",
                   "status")  # fmt: skip


# --- keys and the document ----------------------------------------------------------------------

OPERATIONS = {
    ("get", "/api/contacts"): ("listContacts", "read"),
    ("post", "/api/contacts/bulk"): ("bulkContacts", "write"),
    ("post", "/api/events/bulk"): ("postEventsBulk", "write"),
    ("get", "/api/suppressions"): ("listSuppressions", "read"),
    ("get", "/api/suppressions/{suppression_id}"): ("getSuppression", "read"),
    ("delete", "/api/suppressions/{suppression_id}"): ("deleteSuppression", "write"),
    ("get", "/api/scenarios"): ("listScenarios", "read"),
    ("get", "/api/scenarios/{scenario_id}"): ("getScenario", "read"),
    ("post", "/api/scenarios/{scenario_id}/publish"): ("publishScenario", "write"),
    ("post", "/api/scenarios/{scenario_id}/pause"): ("pauseScenario", "write"),
    ("post", "/api/scenarios/{scenario_id}/resume"): ("resumeScenario", "write"),
    ("get", "/api/outbox"): ("listOutbox", "read"),
}


def test_every_resource_is_documented(lite_client: FlaskClient) -> None:
    from openapi_spec_validator import validate

    document = lite_client.get("/api/openapi.json").get_json()
    validate(document)
    for (method, path), (operation_id, scope) in OPERATIONS.items():
        operation = document["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert operation["summary"] and operation["x-scope"] == scope, path
        responses = operation["responses"]
        success = next(s for s in responses if s.startswith("2"))
        assert "application/json" in responses[success]["content"], path
        assert {"401", "403", "429", "503"} <= set(responses), path
        if operation_id.startswith("list") and path != "/api/scenarios":  # cursor pages
            names = {p["name"] for p in operation["parameters"]}
            assert {"limit", "cursor"} <= names, path
            assert "422" in responses
    bulk_op = document["paths"]["/api/contacts/bulk"]["post"]
    assert {"413", "415", "422"} <= set(bulk_op["responses"])
    assert "404" in document["paths"]["/api/scenarios/{scenario_id}/publish"]["post"]["responses"]
    assert "409" in document["paths"]["/api/suppressions/{suppression_id}"]["delete"]["responses"]


def test_every_resource_needs_the_key(lite_client: FlaskClient) -> None:
    for (method, path), _ in OPERATIONS.items():
        url = path.replace("{suppression_id}", "1").replace("{scenario_id}", "demo")
        response = lite_client.open(url, method=method.upper(), headers={"X-Api-Key": "wrong"})
        assert_problem(response, 401, "unauthorized", "X-Api-Key")
