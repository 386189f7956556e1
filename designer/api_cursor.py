"""Cursor pagination of the API's lists: keyset on a row id, the cursor an opaque token.

A page is the rows after the last one of the previous page, in id order, so walking the pages
sees each row once, and rows added meanwhile come at the end. The cursor is the last id, signed
with the installation's secret (itsdangerous) so a client cannot forge or edit one: it only
passes back the `next` of the previous page (also in the ``Link`` header, ``rel="next"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import marshmallow as ma
from flask import Response, after_this_request, request
from itsdangerous import BadSignature, URLSafeSerializer
from marshmallow import fields, validate

from designer import ApiError, parcours

PAGE, MAX_PAGE = 100, 500


class PageQuery(ma.Schema):
    limit = fields.Integer(
        load_default=PAGE,
        validate=validate.Range(1, MAX_PAGE),
        metadata={"description": f"Rows per page, 1 to {MAX_PAGE}"},
    )
    cursor = fields.String(
        load_default=None,
        validate=validate.Length(max=200),
        metadata={"description": "The `next` of the previous page; leave out for the first"},
    )


NEXT = fields.String(
    required=True,
    allow_none=True,
    metadata={"description": "The cursor of the following page; null on the last page"},
)


def _serializer(resource: str) -> URLSafeSerializer:
    return URLSafeSerializer(parcours().secret, salt=f"parcours.api.cursor.{resource}")


def after(resource: str, cursor: str | None) -> int:
    """The id the page starts after (0: the first page); 422 naming `cursor` if it is not a
    cursor this list gave."""
    if not cursor:
        return 0
    try:
        found = _serializer(resource).loads(cursor)
    except BadSignature:
        found = None
    if not isinstance(found, int) or isinstance(found, bool) or found < 0:
        raise ApiError(
            422,
            "invalid_cursor",
            "Not a cursor of this list: pass the `next` of the previous page as is.",
            "cursor",
        )
    return found


def next_cursor(resource: str, rows: Sequence[Any], limit: int) -> str | None:
    """The cursor after `rows` (fetched with ``limit + 1``) if a page follows, and the
    ``Link: <...>; rel="next"`` header of this answer."""
    if len(rows) <= limit:
        return None
    token = str(_serializer(resource).dumps(int(rows[limit - 1].id)))
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    link = f'<{request.path}?{urlencode([*args, ("cursor", token)])}>; rel="next"'

    @after_this_request
    def _link(response: Response) -> Response:
        response.headers["Link"] = link
        return response

    return token
