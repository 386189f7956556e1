"""Mobile push through a provider's HTTP API: one JSON request per device token (or one for all
of them), in the built-in shape or in a template of the provider's own shape.

Answers map like Web Push: 2xx accepted, 404/410 the device is gone (`on_gone(token)`), 429/5xx
retry later, 401/403 the channel's credentials are wrong. Settings are in `channels/PUSH.md`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from channels.base import Channel, ChannelInfo
from channels.config import resolve_secrets
from channels.errors import ChannelConfigError, ChannelError, PermanentChannelError
from channels.message import OutboundMessage, Receipt
from channels.netguard import AddressPolicy
from channels.pinned_http import Transport, parse_target
from channels.push_fanout import Fanout, OnGone, check_answer

SOURCES = ("$token", "$tokens", "$title", "$body", "$url", "$image", "$send_key", "$topic")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class PushHttpSettings:
    """The `push` channel with `provider: push_http`. Every problem is reported at once."""

    url: str = field(metadata=_help("provider endpoint (https)"))
    auth: Literal["none", "bearer", "header"] = field(
        default="bearer", metadata=_help("none, bearer or header")
    )
    token: str = field(default="", repr=False, metadata=_help("auth=bearer; write ${ENV_NAME}"))
    header_name: str = field(default="", metadata=_help("auth=header: e.g. X-Api-Key"))
    header_value: str = field(
        default="", repr=False, metadata=_help("auth=header: the key; write ${ENV_NAME}")
    )
    template: Mapping[str, Any] = field(
        default_factory=dict, metadata=_help("JSON body; strings $token, $title... are replaced")
    )
    idempotency_header: str = field(
        default="Idempotency-Key", metadata=_help("header carrying the send key; empty: none")
    )
    idempotent: bool = field(
        default=False, metadata=_help("the provider dedupes on the send key (collapse id)")
    )
    allow: tuple[str, ...] = field(default=(), metadata=_help("guard exemptions (CIDR, hosts)"))
    allow_http: bool = field(default=False, metadata=_help("accept an http:// url"))
    connect_timeout: float = field(default=5.0, metadata=_help("seconds for connect and TLS"))
    read_timeout: float = field(default=10.0, metadata=_help("seconds for the answer"))
    ca_file: str | None = field(default=None, metadata=_help("CA bundle replacing the system's"))

    def __post_init__(self) -> None:
        problems = []
        try:
            parse_target(self.url, allow_http=self.allow_http, what="url")
        except PermanentChannelError as exc:
            problems.append(str(exc))
        needed = {"none": (), "bearer": ("token",), "header": ("header_name", "header_value")}
        if self.auth not in needed:
            problems.append(f"auth: '{self.auth}' is not none, bearer or header")
        missing = [n for n in needed.get(self.auth, ()) if not getattr(self, n)]
        problems += [f"{n}: required by auth={self.auth}" for n in missing]
        for name in ("header_name", "idempotency_header"):
            if getattr(self, name) and not _HEADER_NAME.fullmatch(getattr(self, name)):
                problems.append(f"{name}: not a valid HTTP header name")
        for name in ("token", "header_value"):
            if any(c in getattr(self, name) for c in "\r\n\0"):
                problems.append(f"{name}: contains a line break or NUL")
        if self.template:
            problems += _template_problems(self.template)
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            problems.append("connect_timeout, read_timeout: must be positive")
        try:
            AddressPolicy(self.allow)
        except ValueError as exc:
            problems.append(f"allow: {exc}")
        if problems:
            raise ChannelConfigError("push_http settings: " + "; ".join(problems))

    @property
    def batch(self) -> bool:
        """One request carries every device token ($tokens in the template)."""
        return "$tokens" in _sources(self.template)

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in an error message."""
        return tuple(s for s in (self.token, self.header_value) if s)


def _sources(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("$") else []
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _sources(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _sources(v)]
    return []


def _template_problems(template: Mapping[str, Any]) -> list[str]:
    problems = []
    used = _sources(template)
    for source in used:
        if source not in SOURCES:
            close = difflib.get_close_matches(source, SOURCES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"template: unknown source {source}{hint}")
    if ("$token" in used) == ("$tokens" in used):
        problems.append("template: use exactly one of $token (one request each) or $tokens")
    if "$title" not in used and "$body" not in used:
        problems.append("template: no field takes $title or $body")
    return problems


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    """The template with its sources replaced; a field whose source is empty is left out."""
    if isinstance(value, str):
        return values.get(value, value) if value.startswith("$") else value
    if isinstance(value, Mapping):
        filled = {k: _fill(v, values) for k, v in value.items()}
        return {k: v for k, v in filled.items() if v not in ("", None)}
    if isinstance(value, list | tuple):
        return [_fill(v, values) for v in value]
    return value


def device_tokens(recipient: Mapping[str, Any]) -> list[str]:
    """`recipient["devices"]`: a list of tokens, or of {"token": ...}; blanks are dropped."""
    found = []
    for item in recipient.get("devices") or []:
        token = item.get("token") if isinstance(item, Mapping) else item
        if isinstance(token, str) and token.strip():
            found.append(token.strip())
    return list(dict.fromkeys(found))


class PushHttpChannel(Channel):
    """Posts each notification to the provider; `on_gone(token)` hears of unknown devices."""

    def __init__(
        self,
        settings: PushHttpSettings,
        *,
        on_gone: OnGone | None = None,
        clock: Callable[[], float] = time.time,
        info: ChannelInfo | None = None,
    ) -> None:
        if info is None:
            from dataclasses import replace

            from channels.registry import channel_info

            info = replace(channel_info("push"), idempotent_provider=settings.idempotent)
        self.info = info
        self.settings = settings
        self.on_gone = on_gone
        self.clock = clock
        self.target = parse_target(settings.url, allow_http=settings.allow_http, what="push_http")
        self.transport = Transport(
            AddressPolicy(settings.allow),
            ssl.create_default_context(cafile=settings.ca_file),
            settings.connect_timeout,
            settings.read_timeout,
        )

    def send(self, message: OutboundMessage) -> Receipt:
        what = f"push {message.send_key}"
        tokens = device_tokens(message.recipient)
        if not tokens:
            raise PermanentChannelError(f"{what}: the contact has no push device")
        groups = [tokens] if self.settings.batch else [[t] for t in tokens]
        fanout = Fanout(what)
        for group in groups:
            key = message.send_key
            if (
                not self.settings.batch
            ):  # one key per device, or a deduping provider drops all but one
                key += ":" + hashlib.sha256(group[0].encode()).hexdigest()[:16]
            try:
                self._post(self.request_body(message, group), key, what)
                fanout.accepted += len(group)
            except ChannelError as exc:
                self._redact(exc)  # a provider may echo the credentials in its error text
                if isinstance(exc, ChannelConfigError):
                    raise
                for token in group:
                    fanout.add_error(token, self.target.origin, exc)
        return fanout.outcome(len(tokens), f"push_http:{message.send_key}", self.on_gone)

    def request_body(self, message: OutboundMessage, tokens: list[str]) -> dict[str, Any]:
        """The JSON object sent for these device tokens."""
        parts = message.parts
        values: dict[str, Any] = {
            "$token": tokens[0],
            "$tokens": tokens,
            "$title": parts.get("title", ""),
            "$body": parts.get("body", ""),
            "$url": parts.get("url", ""),
            "$image": parts.get("image", ""),
            "$send_key": message.send_key,
            "$topic": message.topic or "",
        }
        if self.settings.template:
            body: dict[str, Any] = _fill(self.settings.template, values)
            return body
        shape = {"to": "$token", "title": "$title", "body": "$body", "url": "$url"}
        shape.update(image="$image", reference="$send_key")
        built: dict[str, Any] = _fill(shape, values)
        return built

    def _post(self, body: dict[str, Any], key: str, what: str) -> None:
        s = self.settings
        headers = {"Content-Type": "application/json; charset=utf-8", "Connection": "close"}
        headers["Accept"] = "application/json"
        if s.auth == "bearer":
            headers["Authorization"] = f"Bearer {s.token}"
        elif s.auth == "header":
            headers[s.header_name] = s.header_value
        if s.idempotency_header:
            headers[s.idempotency_header] = key
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        answer = self.transport.post(self.target, data, headers, f"{what}: {self.target.origin}")
        check_answer(answer, f"{what}: {self.target.origin}", self.clock(), auth_is_config=True)

    def _redact(self, exc: ChannelError) -> None:
        text = str(exc)
        for secret in self.settings.secrets():
            text = text.replace(secret, "***")
        exc.args = (text,)


# --- configuration -------------------------------------------------------------------------------


def push_http_channel_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> PushHttpChannel:
    """A PushHttpChannel from channels.yaml settings (see PUSH.md); the engine sets `on_gone`."""
    values = resolve_secrets(config, os.environ if environ is None else environ)
    declared = {f.name for f in fields(PushHttpSettings)}
    problems = []
    for key in sorted(set(values) - declared):
        close = difflib.get_close_matches(key, declared, n=1)
        problems.append(
            f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
        )
    if not values.get("url"):
        problems.append("'url' is required")
    if "template" in values and not isinstance(values["template"], Mapping):
        problems.append("'template' must be a mapping (the JSON body)")
    if problems:
        raise ChannelConfigError("push_http configuration: " + "; ".join(problems))
    if "allow" in values:
        values["allow"] = tuple(str(v) for v in values["allow"] or ())
    try:
        return PushHttpChannel(PushHttpSettings(**values))
    except TypeError as exc:
        raise ChannelConfigError(f"push_http configuration: {exc}") from None
