"""Hostile input on every route: JSON nested thousands deep, NUL and unpaired surrogates in the
path, the query string, a form or a JSON body. Each is a 400 in the API's error shape, refused
before any database (PostgreSQL refuses NUL in text) and without a traceback in the log."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from channels.sms_callbacks import callback_signature
from designer import create_app
from engine.config import load_settings
from engine.store import db
from tests.web.conftest import REPO

SECRET = "hook-secret-for-bad-input"
SITE_KEY = "site-key-for-bad-input"
CHANNELS = f"""\
sms:
  provider: sms_http
  url: https://sms.example.com/v1/messages
  sender: Boutique
  callback_secret: {SECRET}
email:
  provider: smtp
  host: 127.0.0.1
  from_address: news@shop.example
  callback_secret: {SECRET}
onsite:
  provider: outbox
  site_key: {SITE_KEY}
"""
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"key": ' * 5000 + b"1" + b"}" * 5000
WRITES = {"POST", "PUT", "PATCH"}
KEY = {"X-Api-Key": "k"}


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """The whole application on SQLite and on PostgreSQL, with the example workspace."""
    workspace = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", workspace)
    (workspace / "channels.yaml").write_text(CHANNELS, encoding="utf-8")
    db.upgrade(db_url)
    settings = load_settings(
        {}, database_url=db_url, data_dir=tmp_path, scenarios_dir=workspace, api_key="k"
    )
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _writing_rules() -> list[Rule]:
    """Every route taking a body, read from the application's own URL map."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/probe.db"
        settings = load_settings({}, database_url=url, data_dir=Path(tmp), api_key="k")
        probe = create_app(settings)
        probe.extensions["parcours"].engine.dispose()
    return sorted(
        (r for r in probe.url_map.iter_rules() if r.methods and WRITES & r.methods),
        key=lambda r: r.rule,
    )


RULES = _writing_rules()


def _url(app: Flask, rule: Rule, value: Any = 1) -> str | None:
    """The rule's address with `value` in every part; None when a part cannot hold it (an
    <int:...> part cannot hold text, so a NUL there is a 404 already)."""
    with app.test_request_context():
        try:
            return url_for(rule.endpoint, **dict.fromkeys(rule.arguments, value))
        except ValueError:
            return None


def _method(rule: Rule) -> str:
    return sorted(WRITES & (rule.methods or set()))[0]


def _refusal(response: Any, code: str) -> str | None:
    """What is wrong with `response` as a 400 `code`, if anything: a problem under /api,
    /hooks and the public routes, the designer's {"error": ...} elsewhere."""
    body = response.get_json(silent=True) or {}
    if response.status_code != 400:
        return f"{response.status_code} {response.get_data(as_text=True)[:200]}"
    if response.mimetype == "application/problem+json":
        return None if body.get("code") == code and body.get("status") == 400 else str(body)
    error = body.get("error")
    if not isinstance(error, dict) or set(error) != {"code", "message", "field"}:
        return str(body)
    return None if error["code"] == code else str(error)


def _assert_every_route_refuses(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, code: str, **request: Any
) -> None:
    app = client.application
    wrong = {}
    for rule in RULES:
        url = _url(app, rule)
        assert url is not None
        response = client.open(url, method=_method(rule), headers=KEY, **request)
        problem = _refusal(response, code)
        if problem:
            wrong[f"{_method(rule)} {rule.rule}"] = problem
    assert not wrong, wrong
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_every_json_route_is_walked() -> None:
    rules = {r.rule for r in RULES}
    for expected in ("/push/subscribe", "/push/unsubscribe", "/hooks/sms/status",
                     "/hooks/sms/inbound", "/hooks/email/events", "/api/events",
                     "/onsite/click", "/api/contacts/<external_id>"):  # fmt: skip
        assert expected in rules


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["list", "object"])
def test_json_thousands_deep_is_400_on_every_route(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    _assert_every_route_refuses(
        client, caplog, "too_deep", data=body, content_type="application/json"
    )


@pytest.mark.parametrize(
    "body", [b'{"key": "a\\u0000b"}', b'{"a\\u0000b": 1}', b'{"key": ["\\ud800"]}'],
    ids=["value", "key", "surrogate"],
)  # fmt: skip
def test_nul_in_a_json_body_is_400_on_every_route(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    _assert_every_route_refuses(
        client, caplog, "invalid_json", data=body, content_type="application/json"
    )


def test_nul_in_a_form_is_400_on_every_route(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    _assert_every_route_refuses(client, caplog, "invalid_characters", data={"name": "a\x00b"})


def test_nul_in_the_query_or_path_is_400_on_every_route(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    _assert_every_route_refuses(client, caplog, "invalid_characters", query_string="c=a%00b")
    wrong = {}
    for rule in RULES:
        url = _url(client.application, rule, "a\x00b") if rule.arguments else None
        if url is not None:
            problem = _refusal(client.open(url, method=_method(rule), headers=KEY),
                               "invalid_characters")  # fmt: skip
            if problem:
                wrong[rule.rule] = problem
    assert not wrong, wrong


@pytest.mark.parametrize(
    "url",
    ["/api/contacts/a%00b", "/api/contacts/a%00b/consents", "/onsite/offer?contact=a%00b",
     "/api/contacts/c1?x=%ED%A0%80%00"],
)  # fmt: skip
def test_nul_in_a_read_never_reaches_the_database(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    response = client.get(url, headers={**KEY, "X-Site-Key": SITE_KEY})
    assert _refusal(response, "invalid_characters") is None
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/hooks/sms/status", "/hooks/sms/inbound", "/hooks/email/events"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream"])
def test_a_signed_callback_thousands_deep_is_400_whatever_its_content_type(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, path: str, content_type: str
) -> None:
    signature = {"X-Signature": callback_signature(SECRET, DEEP_OBJECT)}
    response = client.post(path, data=DEEP_OBJECT, content_type=content_type, headers=signature)
    assert _refusal(response, "too_deep") is None
    nul = b'{"id": "a\\u0000b", "status": "delivered", "from": "+33612345678", "text": "x"}'
    signature = {"X-Signature": callback_signature(SECRET, nul)}
    response = client.post(path, data=nul, content_type=content_type, headers=signature)
    assert _refusal(response, "invalid_payload") is None
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_well_formed_body_still_reaches_the_route(client: FlaskClient) -> None:
    event = {"contact": "c-1", "name": "visited", "properties": {"deep": [[["fine"]]]}}
    response = client.post("/api/events", json=event, headers={"X-Api-Key": "k"})
    assert response.status_code == 202, response.get_data(as_text=True)
    form = client.post("/login", data={"username": "nobody", "password": "x"})
    assert form.status_code in (200, 400, 403)  # the sign-in page answers; no edge refusal
    assert "invalid_characters" not in form.get_data(as_text=True)
