"""Reading JSON from a request, the one way every route does it, and the checks at the edge.

A body is read once per request, at most MAX_CONTENT_LENGTH bytes (413 beyond), as UTF-8, and
refused with a 400 in the API's error shape when it is not JSON, nests deeper than
MAX_JSON_DEPTH, holds a NUL or an unpaired surrogate (text PostgreSQL refuses, which would
otherwise surface as a 500 after validation), a NaN or an infinity, or is not the type the route
takes. `refuse_invalid_input` runs before every route: NUL and unpaired surrogates in the path,
the query string or a form are refused, and a JSON body is parsed and checked there, so no route
and no database ever sees them.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from flask import g, request
from werkzeug.exceptions import RequestEntityTooLarge

from designer import ApiError
from engine.audience.contacts import MAX_JSON_DEPTH, RowInvalid, check_json

INVALID_TEXT = re.compile("[\x00\ud800-\udfff]")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_CACHE = "parcours_json"
_NAMES = {dict: "object", list: "list"}


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _too_deep() -> ApiError:
    return ApiError(400, "too_deep", f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels.")


def _checked(body: Any, code: str = "invalid_json") -> Any:
    """`body`, once free of what no JSON column or text column can store."""
    try:
        check_json(body, "")
    except RowInvalid as exc:
        if "nested" in exc.message:
            raise _too_deep() from None
        raise ApiError(400, code, exc.message, exc.field or None) from None
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        message = r"The JSON holds an unpaired surrogate (\ud800-\udfff), which is not text."
        raise ApiError(400, code, message) from None
    return body


def _decoded(data: bytes, code: str) -> Any:
    """The JSON value of `data`; ApiError `code` when it is not JSON, too_deep when too deep."""
    if not data.strip():
        raise ApiError(400, code, "The body is empty; send a JSON document.")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:  # the decoder's stack ran out: far deeper than the limit
        raise _too_deep() from None
    except UnicodeDecodeError:
        raise ApiError(400, code, "The body is not UTF-8 text.") from None
    except ValueError as exc:
        raise ApiError(400, code, f"The body is not valid JSON: {exc}") from None


def _typed(body: Any, expect: type | None, code: str) -> Any:
    if expect is not None and not isinstance(body, expect):
        raise ApiError(400, code, f"Send a JSON {_NAMES.get(expect, expect.__name__)}.")
    return body


def parse_json(data: bytes, expect: type | None = None, code: str = "invalid_json") -> Any:
    """The checked JSON value of raw bytes (a signed callback's body); `expect` is the type the
    top-level value must have, `code` the error code of a body that is not JSON."""
    return _typed(_checked(_decoded(data, code), code), expect, code)


def request_json(
    expect: type | None = None, code: str = "invalid_json", optional: bool = False
) -> Any:
    """The request's checked JSON body, whatever its content type; parsed once per request.
    `optional`: an empty body is None rather than a 400."""
    if optional and not _body().strip():
        return None
    if _CACHE not in g:
        setattr(g, _CACHE, parse_json(_body(), code=code))
    return _typed(g.get(_CACHE), expect, code)


def json_body() -> Any:
    """The request's JSON body: 415 if it is not JSON, 400 if malformed or nested too deep."""
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send JSON with the header Content-Type: application/json.",
        )
    return request_json()


def _body() -> bytes:
    try:
        return request.get_data(cache=True)
    except RequestEntityTooLarge:
        if not request.is_json:
            raise  # a form's page says it its usual way
        raise ApiError(413, "too_large", "The body is over the size limit.") from None


def _refuse_text(value: str, field: str | None, where: str) -> None:
    if INVALID_TEXT.search(value):
        message = f"The {where} holds a NUL or an unpaired surrogate, which is not text."
        raise ApiError(400, "invalid_characters", message, field)


def refuse_invalid_input() -> None:
    """Before every route: the path, query string, form fields and JSON body hold only text."""
    _refuse_text(request.path, None, "address")
    for key, value in request.args.items(multi=True):
        _refuse_text(key + value, key, "query string")
    if request.mimetype != "multipart/form-data":
        _body()  # kept, so a route can still read the raw body after the form is parsed
    if request.mimetype in FORM_TYPES:
        for key, value in request.form.items(multi=True):
            _refuse_text(key + value, key, "form")
    elif request.is_json and _body().strip():
        try:
            body = _decoded(_body(), "invalid_json")
        except ApiError as exc:
            if exc.code == "too_deep":
                raise
            return  # not JSON at all: the route answers that with its own code
        setattr(g, _CACHE, _checked(body))
