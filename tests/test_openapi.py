"""The API's OpenAPI 3.1 document, its offline docs page and the problems every error is."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from designer import create_app
from engine.config import load_settings
from engine.store import db
from engine.worker.heartbeats import record_beat
from tests.problems import assert_problem

KEY = "test-api-key"
AUTH = {"X-Api-Key": KEY}
METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'parcours.db'}"
    db.upgrade(url)
    settings = load_settings({}, database_url=url, api_key=KEY, data_dir=tmp_path)
    app = create_app(settings, {"TESTING": True})
    yield app
    app.extensions["parcours"].engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.is_json
    found: dict[str, Any] = response.get_json()
    return found


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method, path, operation


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any breach of the OpenAPI 3.1 schema
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    assert schemes["Bearer"] == {"type": "http", "scheme": "bearer"}
    assert document["servers"] == [{"url": "http://127.0.0.1:8080"}]  # PARCOURS_PUBLIC_URL


def test_every_operation_is_described(document: dict[str, Any]) -> None:
    tags = {t["name"] for t in document["tags"]}
    ids = []
    for method, path, operation in operations(document):
        where = f"{method.upper()} {path}"
        ids.append(operation["operationId"])
        assert operation.get("summary"), f"{where} has no summary"
        assert set(operation["tags"]) <= tags, where
        responses = operation["responses"]
        assert any(s.startswith("2") for s in responses), f"{where} documents no success"
        assert all(
            "$ref" in r or "content" in r or "description" in r for r in responses.values()
        ), where
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(responses), where
        if path != "/api/health":
            assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], where
            assert operation["x-scope"] in ("read", "write", "admin"), where
            assert {"401", "403", "429"} <= set(responses), where
    assert len(ids) == len(set(ids)), "operationIds repeat"


def test_errors_are_documented_as_problems(document: dict[str, Any]) -> None:
    not_found = document["components"]["responses"]["NOT_FOUND"]
    schema = not_found["content"]["application/problem+json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Problem"}
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    retry = document["components"]["responses"]["TOO_MANY_REQUESTS"]
    assert "Retry-After" in retry["headers"]


def test_the_docs_page_works_offline(client: FlaskClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'spec-url="/api/openapi.json"' in html
    assert '<script src="/static/vendor/redoc/redoc.standalone.js">' in html
    assert "http://" not in html and "https://" not in html  # no CDN
    assert "worker-src 'self' blob:" in page.headers["Content-Security-Policy"]
    script = client.get("/static/vendor/redoc/redoc.standalone.js")
    assert script.status_code == 200 and len(script.get_data()) > 500_000
    script.close()


def test_a_validation_error_names_each_field(client: FlaskClient) -> None:
    response = client.post(
        "/api/segments/vip-list/members", json={"add": [1, "ok"], "drop": []}, headers=AUTH
    )
    problem = assert_problem(response, 422, "invalid", "add.0")
    assert {e["field"] for e in problem["errors"]} == {"add.0", "drop"}
    assert problem["instance"] == "/api/segments/vip-list/members"


def test_a_query_error_names_its_parameter(client: FlaskClient) -> None:
    response = client.get("/api/segments/vip-list/members?limit=0", headers=AUTH)
    assert_problem(response, 422, "invalid", "limit")


def test_the_key_can_come_as_a_bearer_token(client: FlaskClient) -> None:
    assert (
        client.get("/api/segments", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    )
    wrong = client.get("/api/segments", headers={"Authorization": "Bearer nope"})
    assert_problem(wrong, 401, "unauthorized", "Authorization")  # the header it came in


# --- every operation with generated data ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[Any]:
    """The running app's document, loaded by schemathesis over WSGI; a workspace with segments
    and one contact, so that some generated calls find what they name."""
    scenarios = tmp_path / "scenarios"
    shutil.copytree(ROOT / "scenarios" / "segments", scenarios / "segments")
    url = f"sqlite:///{tmp_path / 'parcours.db'}"
    db.upgrade(url)
    settings = load_settings(  # no rate limit: every generated call reaches its route
        {}, database_url=url, api_key=KEY, data_dir=tmp_path, scenarios_dir=scenarios, api_rate="0"
    )
    app = create_app(settings, {"TESTING": False})
    app.test_client().put("/api/contacts/c-1", json={"email": "c1@example.com"}, headers=AUTH)
    # A worker beats, as in a running deployment: /api/health answers 200, not its 503.
    now = datetime.now(UTC)
    record_beat(app.extensions["parcours"].engine, "test:1", now, now + timedelta(days=1), 0, {})
    loaded = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE])
    yield loaded
    app.extensions["parcours"].engine.dispose()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_operation_with_generated_data(api_schema: Any) -> None:
    """Each operation called with generated data and a valid key: no 5xx, every status
    documented, every answer of its documented type and schema. Derandomized: reproducible."""
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        try:
            call()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
