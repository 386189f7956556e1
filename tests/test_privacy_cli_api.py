"""`parcours contact export|erase`, `parcours purge` and the privacy API, as an operator and a
client use them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert, select

from designer import Parcours, create_app
from designer.cli import cli
from engine.cli_common import os_user
from engine.config import load_settings
from engine.runtime.clock import VirtualClock
from engine.store.db import make_engine
from engine.store.models import AuditEntry, Contact, Event, JournalEntry
from tests.problems import assert_problem
from tests.test_privacy import EMAIL, NAME, PHONE, seed_person

KEY = "test-api-key"
AUTH = {"X-Api-Key": KEY}
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
Run = Callable[..., Result]


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    found = make_engine(engine_url)
    with found.begin() as conn:
        seed_person(conn)
    yield found
    found.dispose()


@pytest.fixture
def run(engine_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    for key in list(os.environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(tmp_path / "scenarios"))
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=stdin, catch_exceptions=False)

    return invoke


def _contact(engine: Engine, external_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Contact).where(Contact.external_id == external_id)).first()


def _audit(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(AuditEntry).where(AuditEntry.action == action)).all()


# --- CLI -----------------------------------------------------------------------------------------


def test_export_to_a_file(run: Run, engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "anouchka.json"
    done = run("contact", "export", "crm-42", "-o", str(out))
    assert done.exit_code == 0, done.output
    assert EMAIL not in done.output  # the summary names counts, the file holds the data
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["contact"]["email"] == EMAIL
    assert document["tables"]["sends"][0]["payload"]["to"] == EMAIL
    assert len(_audit(engine, "export")) == 1
    # a merged contact's old external id names the person too
    via_old = run("contact", "export", "web-anon-9")
    assert json.loads(via_old.output)["contact"]["external_id"] == "crm-42"


def test_erase_asks_and_an_abort_leaves_everything(run: Run, engine: Engine) -> None:
    refused = run("contact", "erase", "crm-42", stdin="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert _contact(engine, "crm-42").email == EMAIL
    assert _audit(engine, "erase") == []
    done = run("contact", "erase", "crm-42", stdin="y\n")
    assert done.exit_code == 0, done.output
    assert _contact(engine, "crm-42") is None


def test_erase_with_yes_prints_counts_never_the_data(run: Run, engine: Engine) -> None:
    done = run("contact", "erase", "crm-42", "--yes", "--reason", "ticket 981", "--vacuum")
    assert done.exit_code == 0, done.output
    assert "contact crm-42 erased" in done.output and "contact_identifiers" in done.output
    for secret in (EMAIL, PHONE, NAME):
        assert secret not in done.output
    (entry,) = _audit(engine, "erase")
    assert entry.details["reason"] == "ticket 981" and entry.username == os_user()
    again = run("contact", "erase", "crm-42", "--yes")
    assert again.exit_code == 1 and "no contact with external id 'crm-42'" in again.output


def test_purge_dry_run_then_for_real(
    run: Run, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.begin() as conn:
        contact = conn.execute(select(Contact.id).where(Contact.external_id == "crm-42")).scalar()
        old = T0 - timedelta(days=400)
        conn.execute(insert(Event).values(contact_id=contact, name="old", occurred_at=old,
                                          properties={}, event_key=None))  # fmt: skip
        conn.execute(insert(JournalEntry).values(at=old, kind="step", contact_id=contact))
    assert "no retention set" in run("purge").output
    days = (datetime.now(UTC) - T0).days + 2  # the fixture's rows (at T0) are younger
    monkeypatch.setenv("PARCOURS_RETENTION_EVENTS_DAYS", str(days))
    dry = run("purge", "--dry-run")
    assert dry.exit_code == 0 and f"1 events older than {days} days would be purged" in dry.output
    with engine.connect() as conn:
        assert conn.execute(select(Event.id).where(Event.name == "old")).first() is not None
    done = run("purge")
    assert f"1 events older than {days} days purged" in done.output
    with engine.connect() as conn:
        assert conn.execute(select(Event.id).where(Event.name == "old")).first() is None
    assert len(_audit(engine, "purge")) == 1


# --- API -----------------------------------------------------------------------------------------


@pytest.fixture
def client(engine_url: str, engine: Engine, tmp_path: Path) -> Iterator[FlaskClient]:
    settings = load_settings(
        {}, database_url=engine_url, api_key=KEY, data_dir=tmp_path,
        scenarios_dir=tmp_path / "scenarios",
    )  # fmt: skip
    app: Flask = create_app(settings, {"TESTING": True})
    state: Parcours = app.extensions["parcours"]
    state.clock = VirtualClock(T0)
    yield app.test_client()
    state.engine.dispose()


def _error(response: Any, status: int, code: str, field: str | None = None) -> None:
    assert_problem(response, status, code, field)


def test_api_needs_the_key(client: FlaskClient) -> None:
    _error(client.get("/api/contacts/crm-42/export"), 401, "unauthorized", "X-Api-Key")
    _error(client.delete("/api/contacts/crm-42"), 401, "unauthorized", "X-Api-Key")


def test_api_export_then_erase(client: FlaskClient, engine: Engine) -> None:
    exported = client.get("/api/contacts/crm-42/export", headers=AUTH)
    assert exported.status_code == 200 and exported.is_json
    assert exported.get_json()["contact"]["email"] == EMAIL
    erased = client.delete("/api/contacts/crm-42", headers=AUTH, json={"reason": "art. 17"})
    assert erased.status_code == 200, erased.get_data(as_text=True)
    report = erased.get_json()["erased"]
    assert report["counts"]["contacts"] == 2 and report["reason"] == "art. 17"
    assert EMAIL not in erased.get_data(as_text=True)
    _error(client.get("/api/contacts/crm-42", headers=AUTH), 404, "not_found")
    _error(client.get("/api/contacts/crm-42/export", headers=AUTH), 404, "not_found")
    _error(client.delete("/api/contacts/crm-42", headers=AUTH), 404, "not_found")
    (entry,) = _audit(engine, "erase")
    assert (entry.username, entry.details["reason"]) == (
        "PARCOURS_API_KEY",
        "art. 17",
    )  # the key it came with
    assert len(_audit(engine, "export")) == 1


def test_api_reason_in_the_query_and_checked(client: FlaskClient, engine: Engine) -> None:
    too_long = client.delete("/api/contacts/crm-42?reason=" + "x" * 501, headers=AUTH)
    _error(too_long, 422, "invalid", "reason")
    assert _contact(engine, "crm-42") is not None
    done = client.delete("/api/contacts/crm-42?reason=phone call", headers=AUTH)
    assert done.status_code == 200
    assert _audit(engine, "erase")[0].details["reason"] == "phone call"


def test_api_unknown_contact(client: FlaskClient) -> None:
    _error(client.get("/api/contacts/nobody/export", headers=AUTH), 404, "not_found")
    _error(client.delete("/api/contacts/nobody", headers=AUTH), 404, "not_found")
