"""GET /metrics: every metric in the Prometheus text format (engine.metrics).

Read with ``Authorization: Bearer <PARCOURS_METRICS_TOKEN>`` (what Prometheus sends with
`authorization: {credentials: ...}`) or with any API key (``X-Api-Key`` or bearer; every scope
may read them). Nothing is served by address: behind a reverse proxy on the same machine every
request comes from 127.0.0.1.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from engine.api_keys import verify as verify_key
from engine.metrics import exposition

metrics_view = Blueprint("metrics_view", __name__)


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _allowed() -> bool:
    """The metrics token as a bearer, or any usable API key (every scope reads)."""
    state = current_app.extensions["parcours"]
    settings = state.settings
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else ""
    if _same(bearer, settings.metrics_token):
        return True
    given = request.headers.get("X-Api-Key", "").strip() or bearer
    if not given:
        return False
    if _same(given, settings.api_key):
        return True
    return verify_key(state.engine, given, state.clock.now()) is not None


@metrics_view.get("/metrics")
def metrics() -> Response:
    """The counters of every process and the gauges counted in the database."""
    if not _allowed():
        return Response(
            "Missing or wrong credentials: send Authorization: Bearer <PARCOURS_METRICS_TOKEN> "
            "or an API key in X-Api-Key.\n",
            401,
            mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    body, content_type = exposition(current_app.extensions["parcours"].engine)
    return Response(body, content_type=content_type)
