"""Callbacks from channel providers under /hooks: SMS delivery reports and inbound replies.

No session and no API key: a provider proves each call with an HMAC-SHA256 of the raw body in
the header named by `callback_header`, keyed with `callback_secret` (the sms channel's settings
in `channels.yaml`). The answer is quick and small, `{"ok": true, "changed": n}`; errors have
the API's shape (`{"error": {"code", "message", "field"}}`). Documented in channels/SMS.md.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from channels.errors import ChannelConfigError
from channels.sms_callbacks import (
    SmsPayloadError,
    lookup,
    parse_delivery_report,
    parse_inbound,
    payload_from_body,
    verify_callback_signature,
)
from channels.sms_http import SmsHttpChannel, SmsHttpSettings
from designer import ApiError, error_response, parcours
from engine.channel_config import channels_path, load_channels
from engine.errors import ScenarioInvalid
from engine.reports import apply_delivery_report, record_inbound_sms

logger = logging.getLogger(__name__)

hooks = Blueprint("hooks", __name__, url_prefix="/hooks")

_FIELD = re.compile(r"at '([^']+)'")
_CACHE = "parcours_hooks_sms"  # app.extensions key: (file stamp, settings or None)


def _sms_settings() -> SmsHttpSettings:
    """The sms channel's settings, re-read when `channels.yaml` changes."""
    path = channels_path(parcours().settings.scenarios_dir)
    try:
        stat = path.stat()
        stamp: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        stamp = (0, -1)
    cached: tuple[tuple[int, int], SmsHttpSettings | None] | None = current_app.extensions.get(
        _CACHE
    )
    if cached is None or cached[0] != stamp:
        try:
            channel = load_channels(path.parent).get("sms")
        except (ScenarioInvalid, ChannelConfigError):
            logger.exception("the channels file cannot be loaded; SMS callbacks are refused")
            raise ApiError(
                503,
                "channels_invalid",
                "The channels file has errors; the server log has the details.",
            ) from None
        found = channel.settings if isinstance(channel, SmsHttpChannel) else None
        cached = (stamp, found)
        current_app.extensions[_CACHE] = cached
    if cached[1] is None:
        raise ApiError(404, "not_found", "No SMS provider (sms_http) is configured.")
    return cached[1]


def _signed_payload() -> dict[str, Any]:
    """The body, once its signature is checked: 401 before anything is read from it."""
    settings = _sms_settings()
    if not settings.callback_secret:
        raise ApiError(
            503,
            "callback_secret_not_set",
            "SMS callbacks are refused until the sms channel has a callback_secret.",
        )
    header = settings.callback_header
    body = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    given = request.headers.get(header, "")
    if not given or not verify_callback_signature(settings.callback_secret, body, given):
        logger.warning("SMS callback refused: missing or wrong %s", header)
        raise ApiError(401, "unauthorized", f"Missing or wrong {header} signature.", header)
    try:
        return payload_from_body(body, request.content_type or "")
    except SmsPayloadError as exc:
        raise ApiError(400, "invalid_payload", str(exc)) from None


def _invalid(exc: SmsPayloadError) -> ApiError:
    found = _FIELD.search(str(exc))
    return ApiError(400, "invalid_payload", str(exc), found.group(1) if found else None)


@hooks.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response, int]:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
    return error_response(status, code, exc.description or exc.name or "error")


@hooks.post("/sms/status")
def sms_status() -> Response:
    """A delivery report: moves the send forward (once) and records its outcome event."""
    payload = _signed_payload()
    try:
        report = parse_delivery_report(payload)
    except SmsPayloadError as exc:
        raise _invalid(exc) from None
    state = parcours()
    now = state.clock.now()
    with state.engine.begin() as conn:
        changed = apply_delivery_report(
            conn, "sms", report.provider_id, report.status, report.error, now
        )
    if changed:
        state.notify()
    else:
        logger.info("SMS report (%s) changed nothing", report.status)
    return jsonify({"ok": True, "changed": int(changed)})


@hooks.post("/sms/inbound")
def sms_inbound() -> Response:
    """An SMS sent back: recorded as `sms_replied`; a STOP reply opts the contact out."""
    payload = _signed_payload()
    try:
        phone, text = parse_inbound(payload)
    except SmsPayloadError as exc:
        raise _invalid(exc) from None
    found = lookup(payload, "id")
    message_id = str(found) if isinstance(found, (str, int)) and str(found) else None
    state = parcours()
    now = state.clock.now()
    with state.engine.begin() as conn:
        reply = record_inbound_sms(conn, phone, text, now, message_id=message_id)
    if reply.recorded:
        state.notify()
    return jsonify({"ok": True, "changed": reply.recorded, "opted_out": reply.opted_out})
