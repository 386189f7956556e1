"""The REST API's frame: flask-smorest blueprints, the OpenAPI 3.1 document, its docs page, and
errors as RFC 9457 problems.

A resource is a `RestBlueprint` (a flask-smorest Blueprint with a tag) whose views declare their
query arguments, bodies and answers with marshmallow schemas (``@blp.arguments``,
``@blp.response``) and the errors they may answer with ``@problems(404, 409)``. The document at
``/api/openapi.json`` is built from them; ``/api/docs`` shows it with the vendored Redoc.
`Conventions` adds what every operation has: an operationId, the security schemes, the scope
the key needs, and the errors every keyed call can meet (401, 403, 429, 503; 400, 413, 415 and
422 with a body).

Errors: `problem()` is the one answer shape, ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail``, ``instance``, the machine ``code`` and, when fields failed,
``errors: [{"field", "message"}]`` (dotted paths: ``contacts.3``, ``identifiers.email``).
`designer.ApiError` stays what code raises; `handle_error` maps it, marshmallow's validation
messages and Werkzeug's HTTP errors to problems.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

import marshmallow as ma
from apispec import BasePlugin
from flask import Flask, Response, current_app, request
from flask_smorest import Api, Blueprint
from flask_smorest.utils import prepare_response
from marshmallow.error_store import SCHEMA
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_TYPE = "urn:parcours:problem:"  # + code; every code is listed in the README
REDOC = "vendor/redoc/redoc.standalone.js"
# Redoc builds its search index in a worker started from a blob: URL.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
KEYED = [{"ApiKey": []}, {"Bearer": []}]
# The tags of the document, in the order the docs page shows them.
TAGS = {
    "events": "Events in: one or a list of up to 1,000, with idempotency keys.",
    "contacts": "Contact profiles, identifiers and attributes.",
    "identity": "Recognising one person by every identifier; merging contacts.",
    "consents": "Consent changes with their evidence, and suppressed addresses.",
    "privacy": "Everything held on a contact (access, portability) and its erasure.",
    "segments": "Saved audiences, their members and a manual list's changes.",
    "scenarios": "Journeys: manual entry of contacts.",
    "experiments": "A scenario's split steps, their results and the winner declared.",
    "reports": "KPIs from the daily rollups, and the programs.",
    "batches": "The offline channels' daily batches (mail house, call centre).",
    "outbox": "The sends of the ledger: rendered messages, their status and why not sent.",
    "health": "Whether the service is up.",
}


class FieldError(ma.Schema):
    field = ma.fields.String(
        allow_none=True, metadata={"description": "Dotted path of the field; null: the body"}
    )
    message = ma.fields.String(required=True)


class Problem(ma.Schema):
    """An RFC 9457 problem; `code` is the machine code to switch on."""

    type = ma.fields.String(required=True, metadata={"example": PROBLEM_TYPE + "not_found"})
    title = ma.fields.String(required=True, metadata={"example": "Not Found"})
    status = ma.fields.Integer(required=True, metadata={"example": 404})
    detail = ma.fields.String(required=True)
    instance = ma.fields.String(metadata={"description": "The path that was called"})
    code = ma.fields.String(required=True, metadata={"example": "not_found"})
    errors = ma.fields.List(ma.fields.Nested(FieldError))


def problem(
    status: int,
    code: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The one error answer of the API, the provider callbacks and the public JSON routes."""
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    response = current_app.json.response(body)
    response.status_code = status
    response.mimetype = PROBLEM_MIMETYPE
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def field_errors(messages: Any, prefix: str = "") -> list[dict[str, Any]]:
    """marshmallow's nested messages as a flat list of {field, message}, fields dotted."""
    found: list[dict[str, Any]] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            name = prefix if key == SCHEMA else f"{prefix}.{key}".lstrip(".")
            found += field_errors(value, name)
    elif isinstance(messages, list | tuple):
        for message in messages:
            found += field_errors(message, prefix)
    else:
        found.append({"field": prefix or None, "message": str(messages)})
    return found


def validation_problem(messages: Any) -> Response:
    """422 for a body or query that breaks its schema; webargs nests by location first."""
    located = isinstance(messages, Mapping) and set(messages) <= set(JsonParser.__location_map__)
    flat = [
        error
        for location, found in (messages.items() if located else [("json", messages)])
        for error in field_errors(found)
    ]
    first = flat[0] if flat else {"field": None, "message": "invalid"}
    where = f"{first['field']}: " if first["field"] else ""
    return problem(422, "invalid", f"{where}{first['message']}", flat)


def speaks_problems(wants_json: bool = True) -> bool:
    """Whether this request's errors are problems: the API and the provider callbacks always,
    the public routes when the client reads JSON (their pages stay pages)."""
    if request.path == "/api" or request.path.startswith(("/api/", "/hooks/")):
        return True
    return (request.endpoint or "").startswith("public") and wants_json


def _wants_json() -> bool:
    best = request.accept_mimetypes.best
    return request.is_json or best in ("application/json", PROBLEM_MIMETYPE)


def handle_error(exc: Exception) -> Response | None:
    """The problem answering `exc`, or None where the designer's pages answer it their way."""
    from designer import ApiError

    if isinstance(exc, ApiError):
        if not speaks_problems():
            return None
        errors = [{"field": exc.field, "message": exc.message}] if exc.field else None
        return problem(exc.status, exc.code, exc.message, errors, exc.headers)
    if isinstance(exc, HTTPException):
        if not speaks_problems(_wants_json()):
            return None
        data = getattr(exc, "data", None) or {}
        if exc.code == 422 and "messages" in data:  # webargs: the schema refused the input
            return validation_problem(data["messages"])
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        keep = {"allow", "retry-after"}  # 405 says which methods exist, 429 when to retry
        headers = {k: v for k, v in exc.get_headers() if k.lower() in keep}
        return problem(status, code, exc.description or exc.name or "error", None, headers)
    if not speaks_problems():
        return None
    logger.exception("unexpected error on %s %s", request.method, request.path)
    return problem(500, "internal_server_error", "Internal error; the server log has the details.")


class JsonParser(FlaskParser):  # type: ignore[misc]
    """webargs reads a body the API's one way: 415 unless JSON, 400 when malformed."""

    DEFAULT_VALIDATION_STATUS = 422

    def load_json(self, req: Any, schema: ma.Schema) -> Any:
        from designer.jsonbody import json_body

        return json_body()


class RestBlueprint(Blueprint):  # type: ignore[misc]
    """A resource of the API: its operations are tagged `tag` unless a route says otherwise."""

    ARGUMENTS_PARSER = JsonParser()

    def __init__(self, *args: Any, tag: str, **kwargs: Any) -> None:
        if tag not in TAGS:
            raise ValueError(f"unknown API tag {tag!r}; add it to designer.rest.TAGS")
        super().__init__(*args, **kwargs)
        self.tag = tag

    def route(self, rule: str, *, parameters: Any = None, tags: Any = None, **options: Any) -> Any:
        return super().route(rule, parameters=parameters, tags=tags or [self.tag], **options)


def problems(*statuses: int) -> Callable[[Any], Any]:
    """Document the problems an operation may answer besides the common ones."""
    return Blueprint.doc(responses={s: http.HTTPStatus(s).name for s in statuses})


def body(schema: Any, many: int = 0, required: bool = True) -> Callable[[Any], Any]:
    """Document a JSON body the view reads itself (`json_body`) because the engine's cleaners
    check it field by field; `many`: a list of up to that many is taken too."""
    found: Any = schema
    if many:
        found = {"oneOf": [schema, {"type": "array", "items": schema, "maxItems": many}]}
    content = {"application/json": {"schema": found}}
    return Blueprint.doc(requestBody={"required": required, "content": content})


def header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    """A documented request header."""
    return {"in": "header", "name": name, "description": description, "schema": schema}


def _operation_id(endpoint: str) -> str:
    head, *rest = endpoint.rsplit(".", 1)[-1].split("_")
    return head + "".join(word.capitalize() for word in rest)


class Conventions(BasePlugin):  # type: ignore[misc]
    """What every operation of the document has, added as each path is registered."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.operation_ids: dict[str, str] = {}

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        from designer.api_scope import scope_needed

        rule = kwargs.get("rule")
        if rule is None or operations is None:
            return
        view = self.app.view_functions.get(rule.endpoint)
        for method, operation in operations.items():
            operation_id = operation.setdefault("operationId", _operation_id(rule.endpoint))
            other = self.operation_ids.setdefault(operation_id, f"{method} {path}")
            if other != f"{method} {path}":
                raise ValueError(f"operationId {operation_id} names {other} and {method} {path}")
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                for status in (400, 413, 415, 422):
                    responses.setdefault(str(status), http.HTTPStatus(status).name)
            if operation.setdefault("security", KEYED):
                scope = scope_needed(view, method)
                operation["x-scope"] = scope
                needs = f"Needs an API key of scope `{scope}` or above."
                operation["description"] = operation.get("description", "") + "\n\n" + needs
                operation["description"] = operation["description"].strip()
                for status in (401, 403, 429, 503):
                    responses.setdefault(str(status), http.HTTPStatus(status).name)


class RestApi(Api):  # type: ignore[misc]
    """flask-smorest's Api with problems as errors; `designer.create_app` handles every error
    once for the whole application (HTML pages keep theirs), so none is registered here."""

    ERROR_SCHEMA = Problem
    DEFAULT_ERROR_RESPONSE_NAME = None  # each operation lists its own errors

    def _register_error_handlers(self) -> None:
        pass

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
                if status == 429:
                    response["headers"] = {
                        "Retry-After": {
                            "description": "Seconds to wait before the next call",
                            "schema": {"type": "integer"},
                        }
                    }
            prepare_response(response, self.spec, PROBLEM_MIMETYPE)
            self.spec.components.response(status.name, response, lazy=True)

    def register_blueprint(self, blp: Any, *, parameters: Any = None, **options: Any) -> None:
        """As flask-smorest's, but the tags are TAGS, not one per blueprint."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        blp.register_views_in_doc(self, self._app, self.spec, name=name, parameters=parameters)


def _version() -> str:
    try:
        return metadata.version("parcours")
    except metadata.PackageNotFoundError:
        return "0"


def init_app(app: Flask, public_url: str) -> RestApi:
    """The API's document and docs page on `app`; register resources with the returned Api."""
    app.config.update(
        API_TITLE="Parcours",
        API_VERSION=_version(),
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_REDOC_PATH="docs",
        OPENAPI_REDOC_URL="/static/" + REDOC,
        API_SPEC_OPTIONS={
            "info": {
                "description": (
                    "The JSON API of Parcours. Send the key in `X-Api-Key` (or as "
                    "`Authorization: Bearer <key>`). Errors are RFC 9457 problems "
                    "(`application/problem+json`) with a machine `code` and, when fields "
                    "failed, `errors: [{field, message}]`."
                ),
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            "servers": [{"url": public_url.rstrip("/") or "/"}],
            "components": {
                "securitySchemes": {
                    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                    "Bearer": {"type": "http", "scheme": "bearer"},
                }
            },
        },
    )
    rest = RestApi(spec_kwargs={"extra_plugins": [Conventions(app)]})
    rest.init_app(app)
    for name, text in TAGS.items():
        rest.spec.tag({"name": name, "description": text})
    app.after_request(_docs_policy)
    return rest


def _docs_policy(response: Response) -> Response:
    if request.endpoint == "api-docs.openapi_redoc":
        response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
