"""Callbacks from channel providers under /hooks: SMS delivery reports and inbound replies,
email delivery reports and spam complaints.

No session and no API key: a provider proves each call with an HMAC-SHA256 of the raw body in
the header named by `callback_header`, keyed with `callback_secret` (the channel's settings in
`channels.yaml`). The answer is quick and small, `{"ok": true, "changed": n}`; errors have the
API's shape (`{"error": {"code", "message", "field"}}`). Documented in channels/SMS.md and
channels/README.md.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from channels.base import Channel
from channels.email_smtp import SmtpChannel
from channels.errors import ChannelConfigError
from channels.sms_callbacks import (
    SmsPayloadError,
    lookup,
    parse_delivery_report,
    parse_inbound,
    payload_from_body,
    verify_callback_signature,
)
from channels.sms_http import SmsHttpChannel
from designer import ApiError, error_response, parcours
from designer.jsonbody import parse_json
from engine.delivery.channel_config import channels_path, load_channels
from engine.errors import ScenarioInvalid
from engine.insights.reports import apply_complaint, apply_delivery_report, record_inbound_sms

logger = logging.getLogger(__name__)

hooks = Blueprint("hooks", __name__, url_prefix="/hooks")

_FIELD = re.compile(r"at '([^']+)'")
_CACHE = "parcours_hooks"  # app.extensions key: channel → (file stamp, settings or None)
EMAIL_EVENTS = ("delivered", "bounced", "failed", "complained")
MAX_BATCH = 500


class CallbackSettings(Protocol):
    """What a channel's settings say about its provider's callbacks."""

    @property
    def callback_secret(self) -> str: ...
    @property
    def callback_header(self) -> str: ...


_PROVIDERS: dict[str, tuple[type[Channel], str]] = {
    "sms": (SmsHttpChannel, "No SMS provider (sms_http) is configured."),
    "email": (SmtpChannel, "No email provider (smtp) is configured."),
}


def _callback_settings(name: str) -> CallbackSettings:
    """The `name` channel's settings, re-read when `channels.yaml` changes."""
    kind, missing = _PROVIDERS[name]
    path = channels_path(parcours().settings.scenarios_dir)
    try:
        stat = path.stat()
        stamp: tuple[int, int] = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        stamp = (0, -1)
    known: dict[str, tuple[tuple[int, int], CallbackSettings | None]]
    known = current_app.extensions.setdefault(_CACHE, {})
    cached = known.get(name)
    if cached is None or cached[0] != stamp:
        try:
            channel = load_channels(path.parent).get(name)
        except (ScenarioInvalid, ChannelConfigError) as exc:
            # the file's own problems, with their lines, are what an operator needs; a
            # traceback of the loader would only hide them
            logger.error("%s callbacks are refused until the channels file is fixed: %s", name, exc)
            raise ApiError(
                503,
                "channels_invalid",
                "The channels file has errors; the server log has the details.",
            ) from None
        found = getattr(channel, "settings", None) if isinstance(channel, kind) else None
        cached = known[name] = (stamp, found)
    if cached[1] is None:
        raise ApiError(404, "not_found", missing)
    return cached[1]


def _signed_body(name: str) -> bytes:
    """The raw body, once its signature is checked: 401 before anything is read from it."""
    settings = _callback_settings(name)
    if not settings.callback_secret:
        raise ApiError(
            503,
            "callback_secret_not_set",
            f"{name} callbacks are refused until the {name} channel has a callback_secret.",
        )
    header = settings.callback_header
    body = request.get_data(cache=True)  # 413 past MAX_CONTENT_LENGTH
    given = request.headers.get(header, "")
    if not given or not verify_callback_signature(settings.callback_secret, body, given):
        logger.warning("%s callback refused: missing or wrong %s", name, header)
        raise ApiError(401, "unauthorized", f"Missing or wrong {header} signature.", header)
    return body


def _signed_payload() -> dict[str, Any]:
    """The SMS callback's body as a dict (JSON or form fields), once its signature is checked."""
    body = _signed_body("sms")
    if request.mimetype != "application/x-www-form-urlencoded":
        payload: dict[str, Any] = parse_json(body, dict, "invalid_payload")
        return payload
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


@hooks.post("/email/events")
def email_events() -> Response:
    """Delivery outcomes and spam complaints about sent emails, one object or a list of them."""
    events = _email_events(_signed_body("email"))
    state = parcours()
    now = state.clock.now()
    changed = 0
    with state.engine.begin() as conn:
        for message_id, event, error in events:
            if event == "complained":
                changed += apply_complaint(conn, "email", message_id, now)
            else:
                changed += apply_delivery_report(conn, "email", message_id, event, error, now)
    if changed:
        state.notify()
    elif events:
        logger.info("%d email event(s) changed nothing", len(events))
    return jsonify({"ok": True, "changed": changed})


def _email_events(body: bytes) -> list[tuple[str, str, str | None]]:
    """(message_id, event, error) of each event in the body; every one is checked before any
    is applied, and a 400 names the first bad field ("message_id", or "2.event" in a list)."""
    data = parse_json(body, code="invalid_payload")
    batch = isinstance(data, list)
    items = data if isinstance(data, list) else [data]
    if batch and len(items) > MAX_BATCH:
        raise ApiError(400, "invalid_payload", f"at most {MAX_BATCH} events per call")
    found: list[tuple[str, str, str | None]] = []
    for index, item in enumerate(items):
        where = f"{index}." if batch else ""
        if not isinstance(item, dict):
            raise ApiError(400, "invalid_payload", "an event is a JSON object", where[:-1] or None)
        message_id, event, error = item.get("message_id"), item.get("event"), item.get("error")
        if not isinstance(message_id, str) or not message_id.strip():
            raise ApiError(
                400, "invalid_payload", "message_id: the Message-ID of the email, as text",
                f"{where}message_id",
            )  # fmt: skip
        if event not in EMAIL_EVENTS:
            raise ApiError(
                400, "invalid_payload", f"event: expected one of {', '.join(EMAIL_EVENTS)}",
                f"{where}event",
            )  # fmt: skip
        if error is not None and not isinstance(error, str):
            raise ApiError(400, "invalid_payload", "error: text when given", f"{where}error")
        found.append((message_id.strip(), str(event), error))
    return found
