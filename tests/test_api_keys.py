"""Named API keys: scopes answered 401 / 403, revocation, last use, the bootstrap key from the
environment, and keys hashed at rest. Through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from designer import create_app
from engine import api_keys
from engine.config import load_settings
from engine.errors import NotFound
from engine.runtime.clock import VirtualClock
from engine.store.models import ApiKey, AuditEntry, Base
from tests.problems import problem_error

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
BOOTSTRAP = "env-bootstrap-key"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def make_app(
    engine_url: str, tmp_path: Path, clock: VirtualClock
) -> Iterator[Callable[[str], Flask]]:
    apps: list[Flask] = []

    def build(env_key: str = "") -> Flask:
        settings = load_settings({}, database_url=engine_url, api_key=env_key, data_dir=tmp_path)
        app = create_app(settings, {"TESTING": True})
        app.extensions["parcours"].clock = clock
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["parcours"].engine.dispose()


@pytest.fixture
def app(make_app: Callable[[str], Flask]) -> Flask:
    return make_app("")


@pytest.fixture
def engine(app: Flask) -> Engine:
    found: Engine = app.extensions["parcours"].engine
    return found


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def new_key(engine: Engine, name: str, scope: str, by: str = "tester") -> str:
    with engine.begin() as conn:
        return api_keys.create(conn, name, scope, by)


def revoke(engine: Engine, name: str, by: str = "tester") -> api_keys.KeyInfo:
    with engine.begin() as conn:
        return api_keys.revoke(conn, name, by)


def error_of(response: Any, status: int) -> dict[str, Any]:
    """The problem's {code, message, field} (tests/problems.py checks its shape)."""
    body = response.get_json(force=True) or {}
    fields = [e["field"] for e in body.get("errors", [])]
    return problem_error(response, status, fields[0] if fields else None)


def last_used(engine: Engine, name: str) -> datetime | None:
    with engine.connect() as conn:
        return conn.scalar(select(ApiKey.last_used_at).where(ApiKey.name == name))


# --- scopes ------------------------------------------------------------------------------------


def test_each_scope_reaches_its_routes_and_no_further(client: FlaskClient, engine: Engine) -> None:
    keys = {scope: new_key(engine, f"k-{scope}", scope) for scope in ("read", "write", "admin")}

    def call(scope: str, method: str, path: str) -> Any:
        body = {"email": "c1@example.com"} if method == "put" else None
        return getattr(client, method)(path, json=body, headers={"X-Api-Key": keys[scope]})

    # reading: every scope
    for scope in keys:
        assert call(scope, "get", "/api/contacts/c-1").status_code == 404  # past the key check
    # writing: write and admin; a read key is told which scope it lacks
    error = error_of(call("read", "put", "/api/contacts/c-1"), 403)
    assert error["code"] == "insufficient_scope"
    assert "'write'" in error["message"] and "'read'" in error["message"]
    assert "k-read" in error["message"] and error["field"] == "X-Api-Key"
    assert call("write", "put", "/api/contacts/c-1").status_code in (200, 201)
    # erasure and export: admin only, even the export's GET
    for scope in ("read", "write"):
        error = error_of(call(scope, "get", "/api/contacts/c-1/export"), 403)
        assert "'admin'" in error["message"] and f"'{scope}'" in error["message"]
        error = error_of(call(scope, "delete", "/api/contacts/c-1"), 403)
        assert error["code"] == "insufficient_scope"
    assert call("admin", "get", "/api/contacts/c-1/export").status_code == 200
    assert call("admin", "delete", "/api/contacts/c-1").status_code == 200


def test_bearer_header_is_accepted(client: FlaskClient, engine: Engine) -> None:
    key = new_key(engine, "crm", "read")
    response = client.get("/api/contacts/c-1", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404
    wrong = client.get("/api/contacts/c-1", headers={"Authorization": f"Bearer {key}x"})
    error = error_of(wrong, 401)
    assert error["code"] == "unauthorized" and error["field"] == "Authorization"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: "",
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # same prefix, wrong secret
        lambda k: k.replace("pk_", "pk_0", 1),  # no such prefix
        lambda k: k.upper(),
        lambda k: "pk_12345678_" + "x" * 43,
    ],
)
def test_missing_or_wrong_key_is_401(
    client: FlaskClient, engine: Engine, mangle: Callable[[str], str]
) -> None:
    key = new_key(engine, "crm", "admin")
    error = error_of(client.get("/api/contacts/c-1", headers={"X-Api-Key": mangle(key)}), 401)
    assert error["code"] == "unauthorized" and error["field"] == "X-Api-Key"
    assert key not in str(error)


def test_a_revoked_key_is_401_and_stays_listed(client: FlaskClient, engine: Engine) -> None:
    key = new_key(engine, "shop", "write")
    other = new_key(engine, "crm", "read")
    assert client.get("/api/contacts/c-1", headers={"X-Api-Key": key}).status_code == 404
    info = revoke(engine, "shop", by="alice")
    assert info.revoked_at is not None and info.revoked_by == "alice"
    assert error_of(client.get("/api/contacts/c-1", headers={"X-Api-Key": key}), 401)
    assert client.get("/api/contacts/c-1", headers={"X-Api-Key": other}).status_code == 404
    with engine.connect() as conn:
        listed = {k.name: k for k in api_keys.list_keys(conn)}
    assert listed["shop"].revoked_by == "alice" and listed["crm"].revoked_at is None
    with pytest.raises(api_keys.KeyInvalid, match="already revoked"), engine.begin() as conn:
        api_keys.revoke(conn, "shop", "alice")
    with pytest.raises(NotFound, match="no API key named 'nope'"), engine.begin() as conn:
        api_keys.revoke(conn, "nope", "alice")


def test_the_api_is_closed_only_while_no_key_exists(client: FlaskClient, engine: Engine) -> None:
    error = error_of(client.get("/api/contacts/c-1", headers={"X-Api-Key": "anything"}), 503)
    assert error["code"] == "api_key_not_set" and "parcours keys create" in error["message"]
    health = client.get("/api/health")  # needs no key (no worker runs here: degraded)
    assert health.get_json()["checks"]["database"]["state"] == "ok"
    new_key(engine, "crm", "read")
    assert error_of(client.get("/api/contacts/c-1", headers={"X-Api-Key": "x"}), 401)
    revoke(engine, "crm")  # no usable key left: closed again, and saying how to open it
    assert error_of(client.get("/api/contacts/c-1"), 503)["code"] == "api_key_not_set"


# --- the bootstrap key -------------------------------------------------------------------------


def test_the_environment_key_is_an_admin_key_beside_named_ones(
    make_app: Callable[[str], Flask],
) -> None:
    app = make_app(BOOTSTRAP)
    client = app.test_client()
    engine = app.extensions["parcours"].engine
    # no named key yet: the environment's still opens the API, with every scope
    assert (
        client.get("/api/contacts/c-1/export", headers={"X-Api-Key": BOOTSTRAP}).status_code == 404
    )
    response = client.delete("/api/contacts/c-1", headers={"Authorization": f"Bearer {BOOTSTRAP}"})
    assert response.status_code == 404  # past the key and scope checks: no such contact
    assert error_of(client.get("/api/contacts/c-1", headers={"X-Api-Key": "x"}), 401)
    read = new_key(engine, "crm", "read")
    assert client.get("/api/contacts/c-1", headers={"X-Api-Key": read}).status_code == 404
    assert error_of(client.delete("/api/contacts/c-1", headers={"X-Api-Key": read}), 403)
    assert client.get("/api/contacts/c-1", headers={"X-Api-Key": BOOTSTRAP}).status_code == 404


def test_ensure_bootstrap_creates_one_admin_key_once(engine: Engine, client: FlaskClient) -> None:
    first = api_keys.ensure_bootstrap(engine, by="ops")
    assert first is not None and first.startswith("pk_")
    assert api_keys.ensure_bootstrap(engine, by="ops") is None
    revoke(engine, "bootstrap")
    assert api_keys.ensure_bootstrap(engine, by="ops") is None  # revoked keys count: not again
    with engine.connect() as conn:
        (only,) = api_keys.list_keys(conn)
    assert (only.name, only.scope, only.created_by) == ("bootstrap", "admin", "ops")


# --- last use ----------------------------------------------------------------------------------


def test_last_use_is_written_at_most_once_a_minute(
    client: FlaskClient, engine: Engine, clock: VirtualClock
) -> None:
    key = new_key(engine, "crm", "read")
    assert last_used(engine, "crm") is None
    headers = {"X-Api-Key": key}
    client.get("/api/contacts/c-1", headers=headers)
    assert last_used(engine, "crm") == T0
    clock.advance(timedelta(seconds=59))
    client.get("/api/contacts/c-1", headers=headers)
    assert last_used(engine, "crm") == T0  # not rewritten within the minute
    clock.advance(timedelta(seconds=2))
    client.get("/api/contacts/c-1", headers=headers)
    assert last_used(engine, "crm") == T0 + timedelta(seconds=61)
    clock.advance(timedelta(hours=1))
    client.get("/api/contacts/c-1", headers={"X-Api-Key": key + "x"})  # refused: no use
    assert last_used(engine, "crm") == T0 + timedelta(seconds=61)


# --- at rest -----------------------------------------------------------------------------------


def test_keys_are_hashed_at_rest(engine: Engine) -> None:
    secret = new_key(engine, "crm", "write", by="alice")
    assert secret.startswith("pk_") and len(secret) > 40
    with engine.connect() as conn:
        dump = "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in conn.execute(select(table))
        )
    with Session(engine) as db:
        row = db.scalars(select(ApiKey)).one()
        audit = db.scalars(select(AuditEntry)).all()
    random_part = secret.split("_", 2)[2]
    assert secret not in dump and random_part not in dump
    assert row.hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(f"pk_{row.prefix}_") and len(row.prefix) == 8
    assert [(a.username, a.action, a.target_kind, a.target_id) for a in audit] == [
        ("alice", "create", "api_key", "crm")
    ]
    assert audit[0].details == {"scope": "write", "prefix": row.prefix}


def test_names_and_scopes_are_checked(engine: Engine) -> None:
    new_key(engine, "crm", "read")
    for name, scope, message in [
        ("crm", "read", "name 'crm': a key of that name exists"),
        ("", "read", "name ''"),
        ("has space", "read", "name 'has space'"),
        ("x" * 65, "read", "name 'xxx"),
        ("shop", "root", "scope 'root': one of read, write, admin"),
    ]:
        with pytest.raises(api_keys.KeyInvalid, match=message), engine.begin() as conn:
            api_keys.create(conn, name, scope, "tester")
