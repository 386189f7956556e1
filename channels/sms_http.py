"""The SMS channel over a provider's HTTP API, plus the provider's callbacks.

`SmsHttpChannel` posts one request per message, in the built-in JSON shape or in a field template
the provider expects, through the address guard (`channels.pinned_http`): the URL is the
operator's, yet a mistyped or hostile one must not reach the loopback interface, the private
network or a metadata service, so an on-premise gateway is reached only through `allow`.
`parse_delivery_report`, `parse_inbound` and `verify_callback_signature` read what the provider
calls back with. Configuration and shapes are documented in SMS.md.
"""

from __future__ import annotations

import base64
import difflib
import email.utils
import json
import os
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from channels.base import Channel, ChannelInfo
from channels.config import coerce_number, resolve_secrets
from channels.errors import (
    ChannelConfigError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.message import OutboundMessage, Receipt
from channels.netguard import AddressPolicy, BlockedAddress, refusal_without_dns
from channels.outbox import BUILTIN_CHANNELS
from channels.pinned_http import Answer, Transport, parse_target
from channels.sms_callbacks import (
    DeliveryReport,
    InboundMapping,
    ReportMapping,
    SmsPayloadError,
    callback_signature,
    lookup,
    parse_delivery_report,
    parse_inbound,
    payload_from_body,
    verify_callback_signature,
)
from channels.sms_text import non_gsm7_characters, sms_length

__all__ = [
    "DeliveryReport",
    "InboundMapping",
    "ReportMapping",
    "SmsHttpChannel",
    "SmsHttpSettings",
    "SmsPayloadError",
    "callback_signature",
    "normalise_phone",
    "parse_delivery_report",
    "parse_inbound",
    "payload_from_body",
    "sms_channel_from_config",
    "verify_callback_signature",
]

E164 = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_SEPARATORS = re.compile(r"[\s.\-()]")
_ALPHA_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_NUMERIC_SENDER = re.compile(r"\+?[1-9]\d{2,14}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TEMPLATE_SOURCES = ("$sender", "$to", "$text", "$reference", "$callback_url")
MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR_TEXT = 300


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SmsHttpSettings:
    """How to reach the provider. Every problem is reported at once (ChannelConfigError)."""

    url: str = field(metadata=_help("provider endpoint, https; an API key may sit in the query"))
    sender: str = field(
        metadata=_help("alphanumeric sender id (1-11 letters, digits, spaces) or a number")
    )
    method: Literal["POST", "PUT", "GET"] = field(
        default="POST", metadata=_help("POST, PUT, or GET (fields go in the query string)")
    )
    auth: Literal["none", "basic", "bearer", "header"] = field(
        default="none", metadata=_help("none, basic, bearer or header")
    )
    username: str = field(default="", metadata=_help("auth=basic: user or account id"))
    password: str = field(
        default="", repr=False, metadata=_help("auth=basic: password; write ${ENV_NAME}")
    )
    token: str = field(
        default="", repr=False, metadata=_help("auth=bearer: token; write ${ENV_NAME}")
    )
    header_name: str = field(default="", metadata=_help("auth=header: e.g. X-Api-Key"))
    header_value: str = field(
        default="", repr=False, metadata=_help("auth=header: the key; write ${ENV_NAME}")
    )
    request_format: Literal["json", "template"] = field(
        default="json", metadata=_help("json (the built-in shape) or template")
    )
    template: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_help("request field → $sender, $to, $text, ... or a constant"),
    )
    template_encoding: Literal["json", "form"] = field(
        default="json", metadata=_help("how a template is sent: json or form")
    )
    callback_url: str = field(default="", metadata=_help("where the provider posts reports"))
    callback_secret: str = field(
        default="", repr=False, metadata=_help("HMAC key of the callbacks; write ${ENV_NAME}")
    )
    callback_header: str = field(
        default="X-Signature", metadata=_help("header carrying the callbacks' signature")
    )
    response_id_path: str = field(
        default="id", metadata=_help("dotted path of the message id in the answer")
    )
    timeout: float = field(default=10.0, metadata=_help("seconds to connect, and per read"))
    max_segments: int = field(default=6, metadata=_help("longer texts are refused"))
    idempotency_header: str = field(
        default="Idempotency-Key", metadata=_help("header carrying the send key; empty: none")
    )
    allow: tuple[str, ...] = field(default=(), metadata=_help("guard exemptions (CIDR, hosts)"))
    allow_http: bool = field(default=False, metadata=_help("accept an http:// url"))

    def __post_init__(self) -> None:
        problems = [*_url_problems(self), *_sender_problems(self.sender)]
        problems += _auth_problems(self)
        if self.method not in ("POST", "PUT", "GET"):
            problems.append(f"method: '{self.method}' is not POST, PUT or GET")
        if self.request_format not in ("json", "template"):
            problems.append(f"request_format: '{self.request_format}' is not json or template")
        if self.request_format == "template":
            problems += _template_problems(self)
        if self.template_encoding not in ("json", "form"):
            problems.append(f"template_encoding: '{self.template_encoding}' is not json or form")
        if not self.timeout > 0:
            problems.append("timeout: must be a positive number of seconds")
        if self.max_segments < 1:
            problems.append("max_segments: must be 1 or more")
        if not self.response_id_path:
            problems.append("response_id_path: empty; use e.g. 'id' or 'messages.0.id'")
        if problems:
            raise ChannelConfigError("SMS settings: " + "; ".join(problems))

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in an error message or a log."""
        basic = f"{self.username}:{self.password}"
        encoded = base64.b64encode(basic.encode()).decode() if self.password else ""
        # an API key may ride in the URL query; long values there are treated as secrets too
        query = urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query)
        keys = tuple(value for _, value in query if len(value) >= 8)
        values = (self.password, self.token, self.header_value, encoded, self.callback_secret)
        return tuple(s for s in values if s) + keys


def _url_problems(s: SmsHttpSettings) -> list[str]:
    """The URL's scheme and form, and the guard's verdict where it needs no DNS (literal
    addresses, `localhost`, metadata names): `parcours lint` reports those before any send."""
    parts = urllib.parse.urlsplit(s.url)
    if parts.username or parts.password:
        return ["url: put credentials in auth, not in the URL"]
    try:
        target = parse_target(s.url, allow_http=s.allow_http, what="url")
        policy = AddressPolicy(s.allow)
    except PermanentChannelError as exc:
        return [str(exc)]
    except ValueError as exc:
        return [f"allow: {exc}"]
    refusal = refusal_without_dns(target.host, policy)
    return [] if refusal is None else [f"url: {refusal} (`allow` in channels.yaml)"]


def _sender_problems(sender: str) -> list[str]:
    if _ALPHA_SENDER.fullmatch(sender) or _NUMERIC_SENDER.fullmatch(sender):
        return []
    return [
        f"sender: '{sender}' is neither an alphanumeric sender id (1 to 11 letters, digits or "
        "spaces, at least one letter) nor a phone number or short code"
    ]


def _auth_problems(s: SmsHttpSettings) -> list[str]:
    needed = {"basic": ("username", "password"), "bearer": ("token",)}
    needed["header"] = ("header_name", "header_value")
    if s.auth != "none" and s.auth not in needed:
        return [f"auth: '{s.auth}' is not none, basic, bearer or header"]
    problems = [
        f"{name}: required by auth={s.auth}"
        for name in needed.get(s.auth, ())
        if not getattr(s, name)
    ]
    if s.callback_secret and not s.callback_header:
        problems.append("callback_header: required by callback_secret")
    for name in ("header_name", "idempotency_header", "callback_header"):
        if getattr(s, name) and not _HEADER_NAME.fullmatch(getattr(s, name)):
            problems.append(f"{name}: not a valid HTTP header name")
    for name in ("username", "password", "token", "header_value"):
        if any(c in getattr(s, name) for c in "\r\n\0"):
            problems.append(f"{name}: contains a line break or NUL")
    return problems


def _template_problems(s: SmsHttpSettings) -> list[str]:
    if not s.template:
        return ["template: request_format=template needs at least one field"]
    problems = []
    for name, source in s.template.items():
        if source.startswith("$") and source not in TEMPLATE_SOURCES:
            close = difflib.get_close_matches(source, TEMPLATE_SOURCES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"template.{name}: unknown source {source}{hint}")
        if source == "$callback_url" and not s.callback_url:
            problems.append(f"template.{name}: $callback_url needs callback_url set")
    for source in ("$to", "$text"):
        if source not in s.template.values():
            problems.append(f"template: no field takes {source}")
    return problems


SMS_INFO: ChannelInfo = next(info for info in BUILTIN_CHANNELS if info.name == "sms")


class SmsHttpChannel(Channel):
    """Sends SMS through the provider's HTTP API. Not idempotent unless the provider dedupes on
    the reference or the idempotency header."""

    def __init__(self, settings: SmsHttpSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.info = replace(SMS_INFO, max_length=settings.max_segments * 153)
        self._clock = clock  # only to turn a Retry-After date into seconds
        self.target = parse_target(settings.url, allow_http=settings.allow_http, what="url")
        self.transport = Transport(
            AddressPolicy(settings.allow),
            ssl.create_default_context(),
            settings.timeout,
            settings.timeout,
            MAX_RESPONSE_BYTES,
        )

    def send(self, message: OutboundMessage) -> Receipt:
        to = normalise_phone(str(message.recipient.get("phone") or ""))
        key = message.send_key
        if not E164.fullmatch(to):
            raise PermanentChannelError(f"send {key}: the phone number is not in E.164 (+33…) form")
        text = message.parts.get("text", "")
        if not text:
            raise PermanentChannelError(f"send {key}: the SMS has no text")
        facts = sms_length(text)
        if facts["segments"] > self.settings.max_segments:
            hint = ""
            if facts["encoding"] == "UCS-2":
                hint = "; UCS-2 because of " + " ".join(non_gsm7_characters(text)[:5])
            raise PermanentChannelError(
                f"send {key}: {facts['segments']} segments ({facts['length']} {facts['encoding']} "
                f"units) is over the limit of {self.settings.max_segments}{hint}"
            )
        answer = self._request(self.request_fields(message, to), key)
        status, headers, body = answer.status, answer.headers, answer.body
        if 200 <= status < 300:
            found = lookup(_json_or_none(body), self.settings.response_id_path)
            # accepted without a readable id: the reference (send_key) still matches the reports
            return Receipt(provider_id=str(found) if found not in (None, "") else key)
        detail = self._redact(_error_text(body))
        where = f"send {key}: provider answered HTTP {status}"
        if status in (408, 429) or status >= 500:
            retry_after = _retry_after(headers.get("retry-after"), headers.get("date"), self._clock)
            raise TransientChannelError(f"{where}: {detail}", retry_after=retry_after)
        if status in (401, 402):  # bad credentials or no credit: no message can pass
            raise ChannelConfigError(f"{where} (check the SMS account and auth): {detail}")
        if 300 <= status < 400:  # followed, it could lead anywhere, inside included
            raise ChannelConfigError(
                f"{where}: redirects are not followed; point url at the final address"
            )
        raise PermanentChannelError(f"{where}: {detail}")

    def request_fields(self, message: OutboundMessage, to: str) -> dict[str, str]:
        """The fields sent for this message, in the configured format."""
        s = self.settings
        values = {
            "$sender": s.sender,
            "$to": to,
            "$text": message.parts["text"],
            "$reference": message.send_key,
            "$callback_url": s.callback_url,
        }
        if s.request_format == "json":
            fields = {"from": s.sender, "to": to, "text": values["$text"]}
            fields["reference"] = message.send_key
            if s.callback_url:
                fields["callback_url"] = s.callback_url
            return fields
        return {name: values.get(source, source) for name, source in s.template.items()}

    def _request(self, fields: dict[str, str], key: str) -> Answer:
        s = self.settings
        target = self.target
        headers = {"Accept": "application/json", "User-Agent": "parcours-sms"}
        headers.update(self._auth_headers())
        headers["Connection"] = "close"
        if s.idempotency_header:
            headers[s.idempotency_header] = key
        body: bytes | None = None
        form = urllib.parse.urlencode(fields)
        if s.method == "GET":
            target = replace(target, path=target.path + ("&" if "?" in target.path else "?") + form)
        elif s.request_format == "template" and s.template_encoding == "form":
            body = form.encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            body = json.dumps(fields, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            return self.transport.request(s.method, target, body, headers, f"send {key}")
        except BlockedAddress as exc:
            # The same URL serves every message: none can pass until the operator fixes it.
            raise ChannelConfigError(f"send {key}: url: {exc} (`allow` in channels.yaml)") from exc

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        if s.auth == "basic":
            pair = base64.b64encode(f"{s.username}:{s.password}".encode()).decode("ascii")
            return {"Authorization": f"Basic {pair}"}
        if s.auth == "bearer":
            return {"Authorization": f"Bearer {s.token}"}
        if s.auth == "header":
            return {s.header_name: s.header_value}
        return {}

    def _redact(self, text: str) -> str:
        for secret in self.settings.secrets():
            text = text.replace(secret, "***")
        return text


def normalise_phone(phone: str) -> str:
    """The number without spaces, dots, dashes or parentheses ("+33 6 12-34-56-78")."""
    return _PHONE_SEPARATORS.sub("", phone)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _error_text(body: bytes) -> str:
    """The provider's own words: a usual JSON error field, else the body, shortened."""
    data = _json_or_none(body)
    for path in (
        "error.message",
        "error",
        "message",
        "error_message",
        "detail",
        "errors.0.message",
        "errors.0.detail",
        "errors.0",
    ):
        found = lookup(data, path)
        if isinstance(found, (str, int, float)) and str(found):
            return str(found)[:MAX_ERROR_TEXT]
    text = body.decode("utf-8", errors="replace").strip()
    return text[:MAX_ERROR_TEXT] or "(empty body)"


def _retry_after(value: str | None, date: str | None, clock: Callable[[], float]) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date (against the Date header)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
        now = email.utils.parsedate_to_datetime(date).timestamp() if date else clock()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - now)


# --- configuration -------------------------------------------------------------------------------


def sms_channel_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> SmsHttpChannel:
    """An SmsHttpChannel from a plain mapping; `${ENV_NAME}` values come from `environ`.

    Every problem is reported at once, each naming its key; secret values are never echoed.
    """
    resolved = resolve_secrets(config, os.environ if environ is None else environ)
    declared = {f.name for f in fields(SmsHttpSettings)}
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in resolved.items():
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            problems.append(
                f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
            )
        elif value is not None:
            try:
                values[key] = _coerce(key, value)
            except ValueError as exc:
                problems.append(str(exc))
    problems += [f"'{key}' is required" for key in ("url", "sender") if key not in values]
    if problems:
        raise ChannelConfigError(f"SMS configuration: {'; '.join(problems)}")
    return SmsHttpChannel(SmsHttpSettings(**values))


def _coerce(key: str, value: Any) -> Any:
    if key in ("timeout", "max_segments"):
        return coerce_number(key, value, float if key == "timeout" else int)
    if key == "allow":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ValueError("'allow' must be a list of CIDR blocks, addresses or host names")
        return tuple(value)
    if key == "allow_http":
        if not isinstance(value, bool):
            raise ValueError("'allow_http' must be true or false")
        return value
    if key == "template":
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise ValueError("'template' must map field names to text")
        return {str(k): v for k, v in value.items()}
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text")
    return value
