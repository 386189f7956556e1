"""Which provider delivers each channel: `channels.yaml` beside the scenarios.

The file is committed; secrets are `${ENV_NAME}` references read from the environment when the
worker starts. A channel not listed goes to the outbox, so nothing needs configuring to run.

    email:
      provider: smtp
      host: smtp.example.com
      port: 587
      security: starttls
      username: parcours
      password: ${SMTP_PASSWORD}
      from_address: news@example.com
    sms:
      provider: sms_http
      url: https://sms.example.com/v1/messages
      auth: bearer
      token: ${SMS_TOKEN}
      sender: Boutique

Providers: the built-ins below, and any package that declares an entry point in the group
`parcours.providers` (name → a function `(settings mapping, environ) -> Channel`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from channels import Channel, channel_names
from channels.errors import ChannelConfigError
from engine.errors import ScenarioInvalid
from engine.spec.problems import Problem, did_you_mean
from engine.spec.yamlio import parse_yaml

CHANNELS_FILE = "channels.yaml"
ENTRY_POINT_GROUP = "parcours.providers"
BUILTIN_PROVIDERS = {
    "smtp": "channels.email_smtp:smtp_channel_from_config",
    "sms_http": "channels.sms_http:sms_channel_from_config",
    "webhook": "channels.webhook:webhook_channel_from_config",
    "webpush": "channels.webpush:webpush_channel_from_config",
    "push_http": "channels.push_http:push_http_channel_from_config",
    "outbox": "",
}

Factory = Callable[[Mapping[str, Any], Mapping[str, str]], Channel]


def channels_path(scenarios_dir: Path) -> Path:
    return scenarios_dir / CHANNELS_FILE


def _providers() -> dict[str, str | Factory]:
    found: dict[str, str | Factory] = dict(BUILTIN_PROVIDERS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.load())
    return found


def _factory(spec: str | Factory) -> Factory:
    if callable(spec):
        return spec
    module, _, name = spec.partition(":")
    made: Factory = getattr(importlib.import_module(module), name)
    return made


class _Placeholders(dict[str, str]):
    """An environment where every variable is set, to check a file without its secrets."""

    def __missing__(self, key: str) -> str:
        return "placeholder"

    def __contains__(self, key: object) -> bool:
        return True

    def get(self, key: str, default: Any = None) -> str:  # type: ignore[override]
        return "placeholder"


def _parse(text: str, filename: str | None) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    data, positions = parse_yaml(text, filename)
    problems: list[Problem] = []
    if data is None:
        return {}, []
    if not isinstance(data, Mapping):
        return {}, [Problem("channels.invalid", "The file maps channel names to settings.")]
    known = channel_names()
    providers = _providers()
    config: dict[str, dict[str, Any]] = {}
    for name, settings in data.items():
        where: tuple[str | int, ...] = (str(name),)
        if name not in known:
            hint = did_you_mean(str(name), known) or f"known channels: {', '.join(known)}"
            problems.append(Problem("channels.unknown", f"No channel '{name}'.", where, hint=hint))
            continue
        if not isinstance(settings, Mapping) or not isinstance(settings.get("provider"), str):
            message = "Give the channel's settings with a `provider` (e.g. smtp, sms_http)."
            problems.append(Problem("channels.provider", message, where))
            continue
        provider = settings["provider"]
        if provider not in providers:
            hint = did_you_mean(provider, providers) or f"providers: {', '.join(providers)}"
            message = f"No provider '{provider}'."
            problems.append(Problem("channels.provider", message, (*where, "provider"), hint=hint))
            continue
        config[str(name)] = dict(settings)
    located = []
    for p in problems:
        line, column = positions.locate(p.path, prefer_key=p.code == "channels.unknown") or (
            None,
            None,
        )
        located.append(replace(p, file=filename, line=line, column=column))
    return config, located


def build_channels(
    config: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
) -> dict[str, Channel]:
    """The configured channels (outbox ones left out); ChannelConfigError names the channel."""
    providers = _providers()
    built: dict[str, Channel] = {}
    for name, settings in config.items():
        provider = settings["provider"]
        if provider == "outbox":
            continue
        options = {k: v for k, v in settings.items() if k != "provider"}
        try:
            built[name] = _factory(providers[provider])(options, environ)
        except ChannelConfigError as exc:
            raise ChannelConfigError(f"{CHANNELS_FILE}, channel {name}: {exc}") from None
    return built


def lint_channels_text(text: str, filename: str | None = None) -> list[Problem]:
    """Every problem of a channels file, checked without its secrets."""
    try:
        config, problems = _parse(text, filename)
    except ScenarioInvalid as exc:
        return exc.problems
    for name, settings in config.items():
        try:
            build_channels({name: settings}, _Placeholders())
        except ChannelConfigError as exc:
            problems.append(Problem("channels.settings", str(exc), (name,), filename))
    return problems


def _read(scenarios_dir: Path) -> dict[str, dict[str, Any]]:
    path = channels_path(scenarios_dir)
    if not path.exists():
        return {}
    config, problems = _parse(path.read_text(encoding="utf-8"), str(path))
    if problems:
        raise ScenarioInvalid(problems)
    return config


def load_channels(
    scenarios_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, Channel]:
    """The workspace's configured channels (none without a file); raises on a broken file."""
    return build_channels(_read(scenarios_dir), os.environ if environ is None else environ)


def delivering_channels(scenarios_dir: Path) -> frozenset[str]:
    """The channels a provider delivers (the delivery loop claims their queued sends), read
    without their secrets, so a process that only records sends needs none of them. Raises
    ScenarioInvalid on a broken file."""
    return frozenset(n for n, s in _read(scenarios_dir).items() if s["provider"] != "outbox")
