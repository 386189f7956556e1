"""The website's "next best offer": called from the visitor's browser, no session, no API key.

The site key (``X-Site-Key`` header or ``key`` parameter) says which site asks; it is visible in
the site's pages, so it is not a secret from visitors: what protects a contact's offers is an
external id that cannot be guessed. CORS answers only the origins listed in `channels.yaml`.
See engine.delivery.onsite and channels/ONSITE_OFFLINE.md.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, current_app, request
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from channels.errors import ChannelConfigError
from designer import ApiError, parcours
from designer.api import json_body
from designer.jsonbody import request_json
from engine.delivery.channel_config import channels_path
from engine.delivery.onsite import OnsiteSettings, next_offer, onsite_settings, record_click
from engine.errors import ScenarioInvalid

logger = logging.getLogger(__name__)

public_onsite = Blueprint("public_onsite", __name__, url_prefix="/onsite")

MAX_ID = 255  # contacts.external_id
CORS_MAX_AGE = "600"


def settings() -> OnsiteSettings:
    """The `onsite` entry of channels.yaml, read again when the file changes."""
    path = channels_path(parcours().settings.scenarios_dir)
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        stamp = (0, -1)
    cached = current_app.extensions.get("parcours_onsite")
    if cached is None or cached[0] != stamp:
        try:
            found = onsite_settings(path.parent)
        except (ScenarioInvalid, ChannelConfigError) as exc:
            logger.error("channels.yaml: the onsite entry is unusable: %s", exc)
            raise ApiError(
                503, "onsite_not_configured", "On-site offers are not configured correctly."
            ) from None
        cached = current_app.extensions["parcours_onsite"] = (stamp, found)
    result: OnsiteSettings = cached[1]
    return result


@public_onsite.before_request
def check_site_key() -> None:
    """Every request but a CORS preflight carries the site key of channels.yaml."""
    if request.method == "OPTIONS":
        return
    expected = settings().site_key
    if not expected:
        raise ApiError(
            503, "onsite_not_configured", "No site key is set for on-site offers (channels.yaml)."
        )
    given = (
        request.headers.get("X-Site-Key") or request.args.get("key") or request.form.get("key")
    ) or ""
    if not given and request.is_json:
        body = request_json()
        given = str(body.get("key") or "") if isinstance(body, dict) else ""
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(401, "unauthorized", "Missing or wrong site key.", "key")


@public_onsite.after_request
def cors(response: Response) -> Response:
    """Let the listed origins read the answer (errors too); others get no CORS header."""
    response.vary.add("Origin")
    origin = request.headers.get("Origin", "")
    try:
        allowed = origin and origin.rstrip("/") in settings().origins
    except ApiError:
        allowed = False
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, X-Site-Key"
            response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
    return response


class OfferQuery(Schema):
    """``?contact=`` of an offer request: the visitor's external id, as the site knows it."""

    class Meta:
        unknown = EXCLUDE  # the site key and cache busters ride along

    contact = fields.String(
        required=True, validate=[validate.Length(max=MAX_ID), validate.Regexp(r".*\S")]
    )


class ClickBody(OfferQuery):
    """A click on an offer shown: the offer's id and the contact's."""

    offer = fields.String(required=True, validate=validate.Length(min=1, max=200))


MESSAGES = {
    "contact": "'contact' is the contact's external id.",
    "offer": "'offer' is the id of the offer shown.",
}


def _load(schema: Schema, source: Any) -> dict[str, Any]:
    """The parsed request, or a 422 at the first wrong field."""
    try:
        loaded: dict[str, Any] = schema.load(source)
    except ValidationError as exc:
        wrong = [f for f in MESSAGES if isinstance(exc.messages, dict) and f in exc.messages]
        if not wrong:
            raise ApiError(422, "invalid", 'Send {"offer": ..., "contact": ...}.') from None
        raise ApiError(422, "invalid", MESSAGES[wrong[0]], wrong[0]) from None
    return loaded


@public_onsite.get("/offer")
def offer() -> dict[str, Any]:
    """``{"offer": {id, title, body, url, image}}`` shown once, or ``{"offer": null}``."""
    contact = _load(OfferQuery(), request.args)["contact"]
    state = parcours()
    now = state.clock.now()
    with state.engine.begin() as conn:
        found = next_offer(conn, contact, now, settings().max_age)
    if found is not None:
        state.notify()  # onsite_shown may move a journey on
    return {"offer": found.as_json() if found is not None else None}


@public_onsite.post("/click")
def click() -> dict[str, Any]:
    """``{"offer", "contact", "key"}`` (JSON or a form) → ``{"url"}``; counted once per offer."""
    asked = _load(ClickBody(), json_body() if request.is_json else request.form)
    contact, send_key = asked["contact"], asked["offer"]
    state = parcours()
    now = state.clock.now()
    with state.engine.begin() as conn:
        done = record_click(conn, contact, send_key, now)
    if done is None:
        raise ApiError(404, "not_found", "No such offer for this contact.", "offer")
    url, recorded = done
    if recorded:
        state.notify()
    return {"url": url}
