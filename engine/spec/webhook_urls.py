"""Webhook URLs the send-time guard will refuse, found at lint time and told with its reasons.

The guard (channels/netguard.py, channels/pinned_http.py) refuses plain http unless the webhook
channel sets `allow_http`, URLs with credentials, literal non-public addresses in any spelling and
names that are always local, unless the channel's allow list covers them. All of that is known
without DNS, so lint says it with the guard's own words instead of letting the send fail. The
channel settings are read from `channels.yaml` beside the scenarios (the defaults without it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from channels.errors import PermanentChannelError
from channels.netguard import AddressPolicy, refusal_without_dns
from channels.pinned_http import parse_target
from engine.errors import ScenarioInvalid
from engine.spec import model
from engine.spec.problems import Problem
from engine.spec.yamlio import parse_yaml

CHANNELS_FILE = "channels.yaml"
_HTTP_HINT = "use https, or set allow_http for the webhook channel in channels.yaml"


@dataclass(frozen=True)
class WebhookRules:
    """What the webhook channel lets through besides public https URLs."""

    allow: tuple[str, ...] = ()
    allow_http: bool = False

    @classmethod
    def beside(cls, folder: Path) -> WebhookRules:
        """The webhook channel's rules from `folder/channels.yaml`; defaults when it says none."""
        # a broken channels.yaml is reported by its own lint; here it only means "defaults"
        try:
            data, _ = parse_yaml((folder / CHANNELS_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeError, ScenarioInvalid):
            return cls()
        settings = data.get("webhook") if isinstance(data, Mapping) else None
        if not isinstance(settings, Mapping):
            return cls()
        allow = settings.get("allow")
        entries = tuple(str(a) for a in allow) if isinstance(allow, list) else ()
        return cls(entries, settings.get("allow_http") is True)

    def policy(self) -> AddressPolicy:
        try:
            return AddressPolicy(self.allow)
        except ValueError:
            return AddressPolicy()


def check_webhook_urls(steps: Iterable[model.Step], rules: WebhookRules) -> list[Problem]:
    """One error per webhook step whose URL the channel will refuse, with the guard's reason."""
    problems = []
    policy = rules.policy()
    for step in steps:
        if not isinstance(step, model.WebhookStep):
            continue
        try:
            target = parse_target(step.url, allow_http=rules.allow_http, what="webhook")
        except PermanentChannelError as exc:
            refusal = str(exc).removeprefix("webhook: ")
            hint = _HTTP_HINT if refusal.startswith("plain http") else None
        else:
            blocked = refusal_without_dns(target.host, policy)
            if blocked is None:
                continue
            refusal, hint = str(blocked), "use the receiver's public address"
        message = f"The webhook channel will refuse this URL: {refusal}."
        path = ("steps", step.id, "url")
        problems.append(Problem("webhook.refused", message, path, step=step.id, hint=hint))
    return problems
