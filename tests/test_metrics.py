"""/metrics: who may read it, counters a real worker pass and delivery move, gauges counted in
the database (SQLite and PostgreSQL), and their plans on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from designer import create_app
from engine.audience.ingest import clean_event, record_events, upsert_contacts
from engine.config import load_settings
from engine.delivery.channel_config import load_channels
from engine.delivery.loop import Dispatcher
from engine.metrics import DatabaseCollector, gauge_queries
from engine.store.db import utcnow
from engine.store.models import Contact, Enrollment, ScenarioRecord, ScenarioVersion, Send
from engine.worker.heartbeats import record_beat
from engine.worker.runner import Worker
from engine.worker.versions import publish_dir
from tests.smtp import Smtp, smtp_server

TOKEN = "metrics-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
SCENARIO = """\
format_version: 1
id: promo
name: Promo
objective: other
kind: transactional
triggers:
  - event: visited
entry:
  reentry: always
steps:
  mail:
    type: send
    channel: email
    content:
      subject: "Offers"
      text: "Hello, our offers are here."
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def make_app(url: str, tmp_path: Path, scenarios: Path | None = None) -> Flask:
    settings = load_settings(
        {}, database_url=url, data_dir=tmp_path, api_key="api-key", metrics_token=TOKEN,
        scenarios_dir=scenarios or tmp_path / "scenarios",
    )  # fmt: skip
    return create_app(settings, {"TESTING": True})


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


@pytest.fixture
def app(engine_url: str, tmp_path: Path) -> Iterator[Flask]:
    made = make_app(engine_url, tmp_path)
    yield made
    made.extensions["parcours"].engine.dispose()


# --- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-Api-Key": "wrong"},
    ],
)
def test_metrics_refuses_without_the_token_or_a_key(app: Flask, headers: dict[str, str]) -> None:
    response = app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "parcours_" not in response.get_data(as_text=True)


def test_metrics_reads_with_the_token_or_an_api_key(app: Flask) -> None:
    client = app.test_client()
    assert value(scrape(client), "parcours_database_up") == 1.0
    by_key = client.get("/metrics", headers={"X-Api-Key": "api-key"})
    assert by_key.status_code == 200
    assert "parcours_enrollments_due " in by_key.get_data(as_text=True)


def test_metrics_read_with_a_named_key_of_scope_read_until_it_is_revoked(app: Flask) -> None:
    from engine import api_keys

    engine = app.extensions["parcours"].engine
    with engine.begin() as conn:
        secret = api_keys.create(conn, "prometheus", "read", by="ops")
    client = app.test_client()
    for headers in ({"X-Api-Key": secret}, {"Authorization": f"Bearer {secret}"}):
        assert client.get("/metrics", headers=headers).status_code == 200
    with engine.begin() as conn:
        api_keys.revoke(conn, "prometheus", by="ops")
    assert client.get("/metrics", headers={"X-Api-Key": secret}).status_code == 401


def test_an_empty_token_opens_nothing(engine_url: str, tmp_path: Path) -> None:
    settings = load_settings({}, database_url=engine_url, data_dir=tmp_path, api_key="")
    app = create_app(settings, {"TESTING": True})
    try:
        client = app.test_client()
        assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
        assert client.get("/metrics", headers={"X-Api-Key": ""}).status_code == 401
    finally:
        app.extensions["parcours"].engine.dispose()


# --- counters from a real pass and a real delivery --------------------------------------------


@pytest.fixture
def smtp() -> Iterator[tuple[Smtp, int]]:
    with smtp_server() as running:
        yield running


def write_workspace(folder: Path, smtp_port: int) -> Path:
    folder.mkdir()
    (folder / "promo.yaml").write_text(SCENARIO)
    (folder / "channels.yaml").write_text(
        f"email:\n  provider: smtp\n  host: 127.0.0.1\n  port: {smtp_port}\n"
        "  security: none\n  from_address: news@shop.example\n"
    )
    return folder


def visit(engine: Engine, contacts: list[str]) -> None:
    now = utcnow()
    with engine.begin() as conn:
        upsert_contacts(
            conn,
            [{"external_id": c, "email": f"{c}@example.org", "attributes": {},
              "timezone": "Europe/Paris", "tags": [], "score": 0, "opted_out": False,
              "locale": None, "phone": None} for c in contacts],
            now,
        )  # fmt: skip
        record_events(
            conn, [clean_event({"contact": c, "name": "visited"}, now) for c in contacts], now
        )


def test_a_worker_pass_and_a_delivery_move_the_counters(
    tmp_path: Path, smtp: tuple[Smtp, int]
) -> None:
    handler, port = smtp
    url = f"sqlite:///{tmp_path / 'p.db'}"
    from engine.store import db

    db.upgrade(url)
    workspace = write_workspace(tmp_path / "scenarios", port)
    app = make_app(url, tmp_path, workspace)
    engine = app.extensions["parcours"].engine
    client = app.test_client()
    with Session(engine) as session, session.begin():
        publish_dir(session, workspace)
    channels = load_channels(workspace)
    settings = app.extensions["parcours"].settings
    worker = Worker(engine, settings, delivering=channels)
    dispatcher = Dispatcher(engine, channels)
    try:
        before = scrape(client)
        visit(engine, ["anne", "bruno"])
        report = worker.run_once()
        assert report.batches == 1 and report.sends == 2
        after = scrape(client)

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("parcours_batches_total") == 1
        assert moved("parcours_enrollments_advanced_total") == 2
        assert moved("parcours_steps_total") == report.steps >= 2
        assert moved("parcours_events_total") == 2
        assert moved("parcours_gate_decisions_total", action="allow", reason="allowed") == 2
        assert moved("parcours_sends_total", channel="email", status="queued") == 2
        assert moved("parcours_batch_seconds_count") == 1
        assert value(after, "parcours_sends_pending", channel="email", status="queued") == 2

        handler.replies["bruno@example.org"] = ["451 4.3.0 try later"]
        delivered = dispatcher.run_once()
        assert (delivered.sent, delivered.retried) == (1, 1)
        later = scrape(client)
        assert (
            value(later, "parcours_sends_total", channel="email", status="sent")
            - value(after, "parcours_sends_total", channel="email", status="sent")
            == 1
        )
        assert (
            value(later, "parcours_delivery_retries_total", channel="email")
            - value(after, "parcours_delivery_retries_total", channel="email")
            == 1
        )
        assert (
            value(later, "parcours_delivery_seconds_count", channel="email")
            - value(after, "parcours_delivery_seconds_count", channel="email")
            == 2
        )
        # bruno's message waits for its retry: still queued in the ledger
        assert value(later, "parcours_sends_pending", channel="email", status="queued") == 1
        assert len(handler.arrived) == 1
    finally:
        dispatcher.close()
        engine.dispose()


# --- gauges from the database --------------------------------------------------------------------


def seed_enrollments(engine: Engine, due_ago: list[float], later: int, ended: int) -> None:
    """Enrollments due `due_ago` seconds ago, `later` due tomorrow, `ended` finished long ago."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(ScenarioRecord).values(id="s", name="S", status="live"))
        version = conn.execute(
            insert(ScenarioVersion)
            .values(scenario_id="s", number=1, content_hash="a" * 64, bundle={})
            .returning(ScenarioVersion.id)
        ).scalar_one()
        contact = conn.execute(
            insert(Contact).values(external_id="c", timezone="UTC").returning(Contact.id)
        ).scalar_one()
        rows: list[dict[str, Any]] = []
        plan = [(now - timedelta(seconds=s), "active") for s in due_ago]
        plan += [(now + timedelta(days=1), "active")] * later
        plan += [(now - timedelta(days=30), "completed")] * ended
        for i, (due_at, status) in enumerate(plan):
            rows.append({"scenario_id": "s", "version_id": version, "contact_id": contact,
                         "status": status, "due_at": due_at, "entry_key": f"k{i}",
                         "entered_at": now - timedelta(days=31)})  # fmt: skip
        conn.execute(insert(Enrollment), rows)
        conn.execute(
            insert(Send),
            [{"send_key": f"q{i}", "contact_id": contact, "scenario_id": "s", "step_id": "m",
              "channel": "sms", "kind": "marketing", "status": status, "created_at": now}
             for i, status in enumerate(["queued", "queued", "ambiguous", "sent", "sent"])],
        )  # fmt: skip


def test_gauges_count_due_enrollments_their_lag_and_the_queues(app: Flask) -> None:
    engine = app.extensions["parcours"].engine
    client = app.test_client()
    empty = scrape(client)
    assert value(empty, "parcours_enrollments_due") == 0
    assert value(empty, "parcours_enrollments_due_lag_seconds") == 0
    seed_enrollments(engine, due_ago=[120, 30, 5], later=4, ended=6)
    record_beat(engine, "host-a:1", utcnow(), utcnow() - timedelta(seconds=42), 7, {})
    samples = scrape(client)
    assert value(samples, "parcours_enrollments_due") == 3
    assert 120 <= value(samples, "parcours_enrollments_due_lag_seconds") < 180
    assert value(samples, "parcours_sends_pending", channel="sms", status="queued") == 2
    assert value(samples, "parcours_sends_pending", channel="sms", status="ambiguous") == 1
    assert ("parcours_sends_pending", (("channel", "sms"), ("status", "sent"))) not in samples
    age = value(samples, "parcours_worker_heartbeat_age_seconds", worker="host-a:1")
    assert 42 <= age < 100
    assert value(samples, "parcours_worker_batches", worker="host-a:1") == 7
    capped = parse_collector(DatabaseCollector(engine, cap=2))
    assert value(capped, "parcours_enrollments_due") == 2  # counted up to the cap


def parse_collector(collector: DatabaseCollector) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_an_unreachable_database_scrapes_as_down(tmp_path: Path) -> None:
    from engine.store.db import make_engine

    engine = make_engine("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        samples = parse_collector(DatabaseCollector(engine))
    finally:
        engine.dispose()
    assert value(samples, "parcours_database_up") == 0
    assert ("parcours_enrollments_due", ()) not in samples


EXPECTED_INDEX = {
    "enrollments_due": "ix_enrollments_due_at_active",
    "oldest_due": "ix_enrollments_due_at_active",
    "events_pending": "pk_event_inbox",
    "segment_due": "ix_segment_due_due_at",
    "contact_changes_pending": "pk_contact_changes",
    "sends_queued": "ix_sends_status",
    "sends_sending": "ix_sends_status",
    "sends_ambiguous": "ix_sends_status",
}


def _generic_plan(conn: Any, name: str, query: Any) -> str:
    """The plan PostgreSQL keeps for `query` once prepared, whatever its parameters' values
    (a statement run often ends up with this one)."""
    from sqlalchemy.dialects import postgresql

    compiled = query.compile(dialect=postgresql.dialect(paramstyle="numeric_dollar"))
    values = [compiled.params[key] for key in compiled.positiontup or []]
    shown = ", ".join(
        str(v) if isinstance(v, int) else f"'{v.isoformat() if hasattr(v, 'isoformat') else v}'"
        for v in values
    )
    conn.exec_driver_sql(f"PREPARE {name} AS {compiled.string}")
    explain = f"EXPLAIN EXECUTE {name}" + (f"({shown})" if values else "")
    return "\n".join(r[0] for r in conn.exec_driver_sql(explain))


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a PostgreSQL plan only
def test_gauge_queries_use_indexes_on_postgresql(pg_admin: Engine, db_url: str) -> None:
    """With sequential scans priced out and the generic plan forced, each statement's plan must
    find an index: one whose predicate the planner cannot match (a bound 'active' against the
    partial index of due enrollments) would still scan the table."""
    from engine.store import db

    db.upgrade(db_url)
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            for name, query in gauge_queries(utcnow()).items():
                plan = _generic_plan(conn, name, query)
                assert "Seq Scan" not in plan, f"{name}:\n{plan}"
                assert EXPECTED_INDEX[name] in plan, f"{name}:\n{plan}"
    finally:
        engine.dispose()
