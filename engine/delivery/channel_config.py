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
from engine.delivery.channel_problems import settings_problems
from engine.errors import NotFound, ScenarioInvalid
from engine.spec.problems import Problem, did_you_mean
from engine.spec.yamlio import Positions, at_file_start, parse_yaml, read_source

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


def _parse(
    text: str, filename: str | None
) -> tuple[dict[str, dict[str, Any]], Positions, list[Problem]]:
    """The channels' settings and their positions; ScenarioInvalid when the YAML is unsafe."""
    data, positions = parse_yaml(text, filename)
    problems: list[Problem] = []
    if data is None:
        return {}, positions, []
    if not isinstance(data, Mapping):
        message = "The file maps channel names to settings (email: {provider: smtp, ...})."
        problem = Problem("channels.invalid", message, (), filename, 1, 1)
        return {}, positions, [problem]
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
    return config, positions, [_located(p, positions, filename) for p in problems]


def _located(problem: Problem, positions: Positions, filename: str | None) -> Problem:
    # a problem about a whole channel (unknown, no provider) is shown on its name
    on_key = problem.extra.get("at") == "key" or len(problem.path) == 1
    line, column = positions.locate(problem.path, prefer_key=on_key) or (1, 1)
    return replace(problem, file=filename, line=line, column=column)


def _build_one(settings: Mapping[str, Any], environ: Mapping[str, str]) -> Channel:
    options = {k: v for k, v in settings.items() if k != "provider"}
    return _factory(_providers()[settings["provider"]])(options, environ)


def _built_or_problems(
    config: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str],
    positions: Positions, filename: str | None,
) -> tuple[dict[str, Channel], list[Problem]]:  # fmt: skip
    """Every channel that builds, and one located problem per setting of those that do not."""
    built: dict[str, Channel] = {}
    problems: list[Problem] = []
    for name, settings in config.items():
        if settings["provider"] == "outbox":
            continue
        try:
            built[name] = _build_one(settings, environ)
        except ChannelConfigError as exc:
            found = settings_problems(name, settings, str(exc))
            problems += [_located(p, positions, filename) for p in found]
    return built, problems


def lint_channels_text(text: str, filename: str | None = None) -> list[Problem]:
    """Every problem of a channels file, checked without its secrets, each with its line."""
    try:
        config, positions, problems = _parse(text, filename)
    except ScenarioInvalid as exc:
        return at_file_start(exc.problems)
    return problems + _built_or_problems(config, _Placeholders(), positions, filename)[1]


def lint_channels_file(path: Path) -> list[Problem]:
    """`lint_channels_text` on a file, read as safely as a scenario (size, UTF-8)."""
    try:
        text = read_source(path, "channels file")
    except NotFound:
        return []
    except ScenarioInvalid as exc:
        return exc.problems
    return lint_channels_text(text, str(path))


def _read(scenarios_dir: Path) -> tuple[dict[str, dict[str, Any]], Positions, str]:
    """The parsed channels file (empty without one); ScenarioInvalid with located problems."""
    path = channels_path(scenarios_dir)
    try:
        text = read_source(path, "channels file")
    except NotFound:
        return {}, Positions(), str(path)
    try:
        config, positions, problems = _parse(text, str(path))
    except ScenarioInvalid as exc:
        raise ScenarioInvalid(at_file_start(exc.problems)) from None
    if problems:
        raise ScenarioInvalid(problems)
    return config, positions, str(path)


def load_channels(
    scenarios_dir: Path, environ: Mapping[str, str] | None = None
) -> dict[str, Channel]:
    """The workspace's configured channels (none without a file); a broken file or an unset
    secret raises ScenarioInvalid, each problem with its line."""
    config, positions, filename = _read(scenarios_dir)
    environ = os.environ if environ is None else environ
    built, problems = _built_or_problems(config, environ, positions, filename)
    if problems:
        raise ScenarioInvalid(problems)
    return built


def delivering_channels(scenarios_dir: Path) -> frozenset[str]:
    """The channels a provider delivers (the delivery loop claims their queued sends), read
    without their secrets, so a process that only records sends needs none of them. Raises
    ScenarioInvalid on a broken file."""
    config = _read(scenarios_dir)[0]
    return frozenset(n for n, s in config.items() if s["provider"] != "outbox")


def channel_settings(scenarios_dir: Path) -> dict[str, dict[str, Any]]:
    """Each configured channel's settings as written, secrets still `${ENV_NAME}` references,
    for checks that need none (the health of providers). ScenarioInvalid on a broken file."""
    return _read(scenarios_dir)[0]
