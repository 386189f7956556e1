"""The operator's commands around keys and accounts: `parcours keys`, `parcours users
reset-password`, `parcours push keys`, `parcours --version`, each change audited with the
operator's name; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from sqlalchemy import Engine, select

from channels.webpush import load_vapid_key, public_key_b64, webpush_settings_from_config
from designer import create_app
from designer.cli import cli
from engine.config import load_settings
from engine.store.db import make_engine
from engine.store.models import AuditEntry

Run = Callable[..., Result]
OPERATOR = "ops-anne"  # what getpass.getuser() reads first (LOGNAME)
SECRET = re.compile(r"^pk_[0-9a-f]{8}_\S+$", re.MULTILINE)


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    found = make_engine(engine_url)
    yield found
    found.dispose()


@pytest.fixture
def run(engine_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    for key in list(os.environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOGNAME", OPERATOR)
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=stdin, catch_exceptions=False)

    return invoke


@pytest.fixture
def app(engine_url: str, tmp_path: Path) -> Iterator[Flask]:
    settings = load_settings({}, database_url=engine_url, api_key="", data_dir=tmp_path)
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["parcours"].engine.dispose()


def audit(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEntry).order_by(AuditEntry.id)).all()
    return [(r.username, r.action, r.target_kind, r.target_id) for r in rows]


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"parcours, version {version('parcours')}"


# --- parcours keys -----------------------------------------------------------------------------


def test_create_prints_the_key_once_and_it_opens_the_api(
    run: Run, engine: Engine, app: Flask
) -> None:
    created = run("keys", "create", "crm", "--scope", "write")
    assert created.exit_code == 0, created.output
    (secret,) = SECRET.findall(created.stdout)
    assert "will not be shown again" in created.stderr
    client = app.test_client()
    assert client.put("/api/contacts/c1", json={}, headers={"X-Api-Key": secret}).status_code in (
        200,
        201,
    )
    listed = run("keys", "list")
    assert listed.exit_code == 0
    assert secret not in listed.output and secret.split("_")[2] not in listed.output
    line = next(line for line in listed.output.splitlines() if line.startswith("crm "))
    assert "write" in line and f"pk_{secret.split('_')[1]}_…" in line and OPERATOR in line
    assert "never" not in line.split(OPERATOR, 1)[1]  # last used: just now
    (row,) = json.loads(run("keys", "list", "--json").output)
    assert row["name"] == "crm" and row["scope"] == "write" and row["revoked_at"] is None
    assert row["prefix"] == secret.split("_")[1] and row["last_used_at"] is not None
    assert secret not in run("keys", "list", "--json").output

    revoked = run("keys", "revoke", "crm")
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert client.get("/api/contacts/c1", headers={"X-Api-Key": secret}).status_code == 503
    (row,) = json.loads(run("keys", "list", "--json").output)
    assert row["revoked_by"] == OPERATOR and row["revoked_at"] is not None
    assert audit(engine) == [
        (OPERATOR, "create", "api_key", "crm"),
        (OPERATOR, "revoke", "api_key", "crm"),
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("keys", "revoke", "nope"), 1, "error: no API key named 'nope'"),
        (("keys", "create", "a b"), 1, "error: name 'a b': 1 to 64 letters"),
        (("keys", "create", "x", "--scope", "root"), 2, "'root' is not one of"),
    ],
)
def test_key_commands_refuse_bad_input(
    run: Run, engine: Engine, args: tuple[str, ...], code: int, message: str
) -> None:
    result = run(*args)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert audit(engine) == []


def test_a_name_is_taken_once_even_revoked(run: Run) -> None:
    assert run("keys", "create", "crm").exit_code == 0
    assert run("keys", "revoke", "crm").exit_code == 0
    again = run("keys", "create", "crm")
    assert again.exit_code == 1 and "a key of that name exists" in again.output
    twice = run("keys", "revoke", "crm")
    assert twice.exit_code == 1 and "already revoked" in twice.output


# --- users -------------------------------------------------------------------------------------


def _sign_in(app: Flask, username: str, password: str) -> tuple[Any, Any]:
    """A new client's sign-in: (the client, the answer to the form)."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token
    answer = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token[1]}
    )
    return client, answer


def test_reset_password_gives_a_one_time_password(run: Run, engine: Engine, app: Flask) -> None:
    made = run("users", "create", "bob", "--role", "viewer", "--password-stdin",
               stdin="first password 1\n")  # fmt: skip
    assert made.exit_code == 0, made.output
    before, answer = _sign_in(app, "bob", "first password 1")
    assert answer.status_code == 302
    reset = run("users", "reset-password", "bob")
    assert reset.exit_code == 0, reset.output
    password = reset.output.split("next sign-in): ", 1)[1].split()[0]
    assert before.get("/scenarios").status_code == 302  # the open session ended
    assert _sign_in(app, "bob", "first password 1")[1].status_code == 401
    client, answer = _sign_in(app, "bob", password)
    assert answer.status_code == 302
    # as for the first admin: the next page asks for a password of one's own
    assert client.get("/scenarios").headers["Location"].endswith("/account/password")
    assert password not in repr(audit(engine))
    changes = [(a[0], a[1], a[3]) for a in audit(engine) if a[2] == "user"]
    assert changes == [(OPERATOR, "create", "bob"), (OPERATOR, "reset_password", "bob")]


def test_reset_password_of_an_unknown_user_fails(run: Run, engine: Engine) -> None:
    result = run("users", "reset-password", "ghost")
    assert result.exit_code == 1
    assert "no user named 'ghost'" in result.output and "Traceback" not in result.output
    assert audit(engine) == []


# --- push --------------------------------------------------------------------------------------


def test_push_keys_prints_a_working_pair(run: Run) -> None:
    first = run("push", "keys", "--subject", "mailto:push@shop.example")
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    private = next(line for line in lines if line.startswith("PARCOURS_VAPID_KEY="))
    private = private.split("=", 1)[1]
    public = lines[-1].removeprefix("# ")
    assert public_key_b64(load_vapid_key(private)) == public
    block = [line for line in lines if line.startswith(("push:", "  "))]
    assert block[0] == "push:"
    config = dict(line.strip().split(": ", 1) for line in block[1:])
    settings = webpush_settings_from_config(config, {"PARCOURS_VAPID_KEY": private})
    assert settings.application_server_key == public
    assert settings.vapid_subject == "mailto:push@shop.example"
    assert private not in run("push", "keys").output  # a new pair each time
    bad = run("push", "keys", "--subject", "push@shop.example")
    assert bad.exit_code == 2 and "--subject" in bad.output
