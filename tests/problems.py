"""The API's error shape, checked one way by every test: an RFC 9457 problem."""

from __future__ import annotations

from typing import Any

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "code", "errors"}


def assert_problem(
    response: Any, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """`response` is an ``application/problem+json`` answer with `status` and machine `code`;
    with `field`, one of its `errors` names that field. Returns the problem."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == "application/problem+json", response.mimetype
    assert "Traceback" not in text
    body: dict[str, Any] = response.get_json(force=True)
    assert set(body) <= PROBLEM_KEYS and {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == status
    assert body["type"] == f"urn:parcours:problem:{body['code']}"
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["code"] == code, body
    fields = [e["field"] for e in body.get("errors", [])]
    if field is None:
        assert not fields or None in fields or status == 422, body
    else:
        assert field in fields, body
    return body


def problem_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """`response` is a problem with `status` whose failing field is exactly `field` (None: no
    field); returns {code, message, field} for tests that read an error that way."""
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    body = response.get_json(force=True)
    assert_problem(response, status, body["code"], field)
    fields = [e["field"] for e in body.get("errors", [])]
    assert (fields[0] if fields else None) == field, body
    return {"code": body["code"], "message": body["detail"], "field": field}


def legacy(response: Any) -> dict[str, Any]:
    """A problem as {code, message, field} (its first failing field), checked to be one."""
    body = response.get_json(force=True)
    assert_problem(
        response,
        response.status_code,
        body["code"],
        None if not body.get("errors") else body["errors"][0]["field"],
    )
    fields = [e["field"] for e in body.get("errors", [])]
    return {"code": body["code"], "message": body["detail"], "field": fields[0] if fields else None}


def field_of(response: Any) -> str | None:
    """The first failing field a problem names."""
    return legacy(response)["field"]
