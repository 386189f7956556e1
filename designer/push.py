"""Web Push for sites: browsers subscribe and unsubscribe, fetch the application server key and
the service worker. No session and no API key: the site key (public, embedded in the site's
pages) and the CORS allow list say which sites may call; a contact signature, when configured,
says which contact a browser may subscribe for.

Settings are the `push` channel's in channels.yaml (provider: webpush); see channels/PUSH.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, make_response, request

from channels.errors import ChannelConfigError, ChannelError
from channels.pinned_http import parse_target
from channels.webpush import Subscription, WebPushSettings, webpush_settings_from_config
from designer import ApiError, Parcours, error_response
from designer.jsonbody import request_json
from engine.audience.ingest import contact_ids
from engine.delivery.channel_config import CHANNELS_FILE, channels_path
from engine.delivery.push import subscribe, unsubscribe
from engine.errors import ScenarioInvalid
from engine.spec.yamlio import parse_yaml

logger = logging.getLogger(__name__)

public_push = Blueprint("public_push", __name__)

SERVICE_WORKER = Path(__file__).parent / "static" / "push-sw.js"
MAX_CONTACT = 255


def _state() -> Parcours:
    found: Parcours = current_app.extensions["parcours"]
    return found


def push_settings() -> WebPushSettings | None:
    """The web push settings of channels.yaml (re-read when the file changes); None when the
    push channel is not configured with `provider: webpush`."""
    path = channels_path(_state().settings.scenarios_dir)
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        return None
    cached = current_app.extensions.get("parcours_push")
    if cached is not None and cached[0] == stamp:
        found: WebPushSettings | None = cached[1]
        return found
    data, _ = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    config = data.get("push") if isinstance(data, dict) else None
    settings = None
    if isinstance(config, dict) and config.get("provider") == "webpush":
        settings = webpush_settings_from_config(config, os.environ)
    current_app.extensions["parcours_push"] = (stamp, settings)
    return settings


def _settings() -> WebPushSettings:
    try:
        found = push_settings()
    except (ChannelConfigError, ScenarioInvalid) as exc:
        logger.error("web push settings in %s: %s", CHANNELS_FILE, exc)
        raise ApiError(
            503, "push_misconfigured", "Web push is misconfigured on this server."
        ) from None
    if found is None:
        raise ApiError(404, "push_not_configured", "Web push is not configured on this server.")
    return found


def _allowed_origin(settings: WebPushSettings) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin.rstrip("/") in settings.origins else None


@public_push.after_request
def _cors(response: Response) -> Response:
    try:
        settings = push_settings() if request.headers.get("Origin") else None
    except (ChannelConfigError, ScenarioInvalid):
        settings = None
    origin = _allowed_origin(settings) if settings is not None else None
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        response.headers["Access-Control-Max-Age"] = "3600"
    response.vary.add("Origin")
    return response


def _body(settings: WebPushSettings) -> dict[str, Any]:
    """The JSON body of a subscribe/unsubscribe call, its origin and site key checked."""
    if request.headers.get("Origin") is not None and _allowed_origin(settings) is None:
        raise ApiError(403, "origin_refused", "This site's origin is not in push.origins.")
    data: dict[str, Any] = request_json(dict)
    key = data.get("key")
    if (
        not settings.site_key
        or not isinstance(key, str)
        or not hmac.compare_digest(key.encode(), settings.site_key.encode())
    ):
        raise ApiError(401, "bad_site_key", "Missing or wrong site key.", "key")
    return data


def contact_signature(secret: str, contact: str) -> str:
    """What a site's server computes for a contact when `contact_secret` is set: hex HMAC-SHA256."""
    return hmac.new(secret.encode(), contact.encode(), hashlib.sha256).hexdigest()


def _contact(settings: WebPushSettings, data: dict[str, Any]) -> str:
    contact = data.get("contact")
    if not isinstance(contact, str) or not contact.strip() or len(contact) > MAX_CONTACT:
        raise ApiError(400, "invalid_contact", "Give the contact's id (text).", "contact")
    if settings.contact_secret:
        sent = data.get("signature")
        expected = contact_signature(settings.contact_secret, contact)
        if not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
            raise ApiError(403, "bad_signature", "Missing or wrong contact signature.", "signature")
    return contact


def _subscription(settings: WebPushSettings, data: dict[str, Any]) -> Subscription:
    try:
        subscription = Subscription.from_json(data.get("subscription"))
    except ValueError as exc:
        field = str(exc).partition(":")[0]
        raise ApiError(400, "invalid_subscription", str(exc), field) from None
    field = "subscription.endpoint"
    try:
        target = parse_target(subscription.endpoint, allow_http=False, what="endpoint")
        settings.policy().resolve(target.host, target.port)
    except ChannelError as exc:
        raise ApiError(400, "endpoint_refused", str(exc), field) from None
    return subscription


@public_push.route("/push/subscribe", methods=["POST", "OPTIONS"])
def subscribe_browser() -> Any:
    """Store a browser's subscription for a contact (created if unknown)."""
    settings = _settings()
    if request.method == "OPTIONS":
        return Response(status=204)
    data = _body(settings)
    contact = _contact(settings, data)
    subscription = _subscription(settings, data)
    state = _state()
    now = state.clock.now()
    with state.engine.begin() as conn:
        contact_id = contact_ids(conn, [contact], now)[contact]
        created = subscribe(
            conn, contact_id, subscription.endpoint, subscription.p256dh, subscription.auth, now,
            user_agent=request.headers.get("User-Agent"),
        )  # fmt: skip
    logger.info(
        "push subscription %s for contact %s", "added" if created else "renewed", contact_id
    )
    return jsonify({"subscribed": True, "created": created}), 201 if created else 200


@public_push.route("/push/unsubscribe", methods=["POST", "OPTIONS"])
def unsubscribe_browser() -> Any:
    """Forget a browser's subscription, by its endpoint."""
    settings = _settings()
    if request.method == "OPTIONS":
        return Response(status=204)
    data = _body(settings)
    endpoint = data.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ApiError(400, "invalid_endpoint", "Give the subscription's endpoint.", "endpoint")
    with _state().engine.begin() as conn:
        removed = unsubscribe(conn, endpoint)
    return jsonify({"unsubscribed": removed})


@public_push.get("/push/vapid-public-key")
def vapid_public_key() -> Any:
    """The application server key for `pushManager.subscribe` (base64url)."""
    return jsonify({"public_key": _settings().application_server_key})


@public_push.get("/push/sw.js")
def service_worker() -> Response:
    """The service worker that shows notifications; sites import it from their own sw.js."""
    response = make_response(SERVICE_WORKER.read_bytes())
    response.headers["Content-Type"] = "application/javascript; charset=utf-8"
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@public_push.errorhandler(ApiError)
def _on_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc.status, exc.code, exc.message, exc.field)
