"""Webhook URLs the send-time address guard would refuse are lint errors with its own reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.spec.lint import lint_paths
from tests.unit.spec.conftest import HEAD, problems_of

WEBHOOK = "steps:\n  hook:\n    type: webhook\n    url: {url}\n"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("'https://[::ffff:127.0.0.1]/'", "loopback address"),
        ("https://0x7f.1/", "loopback address"),
        ("https://2130706433/x", "loopback address"),
        ("https://0177.0.0.1/", "loopback address"),
        ("https://127.0.0.1:8443/hooks", "loopback address"),
        ("'https://[::1]/'", "loopback address"),
        ("https://169.254.169.254/latest/meta-data", "link-local (cloud metadata) address"),
        ("https://10.1.2.3/", "private address"),
        ("https://localhost/", "reserved name address"),
        ("https://crm.localhost/", "reserved name address"),
        ("https://LOCALHOST./", "reserved name address"),
        ("https://metadata.google.internal/", "reserved name address"),
        ("http://crm.example.com/hooks", "plain http refused, https only (see allow_http)"),
        ("https://user:pw@crm.example.com/", "URL carries credentials"),
    ],
)
def test_webhook_urls_the_guard_refuses_are_errors_with_its_reason(
    tmp_path: Path, url: str, reason: str
) -> None:
    (tmp_path / "s.yaml").write_text(HEAD + WEBHOOK.format(url=url), encoding="utf-8")
    problems = lint_paths([tmp_path / "s.yaml"])
    assert [(p.code, p.line, p.step, p.field) for p in problems] == [
        ("webhook.refused", 9, "hook", "steps.hook.url")
    ]
    assert reason in problems[0].message and "Not a valid URL" not in problems[0].message


@pytest.mark.parametrize(
    "url",
    ["https://crm.example.com/hooks/hot-leads", "https://8.8.8.8/", "https://[2606:4700::1]/"],
)
def test_public_https_webhook_urls_are_clean(tmp_path: Path, url: str) -> None:
    (tmp_path / "s.yaml").write_text(HEAD + WEBHOOK.format(url=url), encoding="utf-8")
    assert lint_paths([tmp_path / "s.yaml"]) == []


def test_webhook_urls_follow_the_channel_settings_beside_the_scenarios(tmp_path: Path) -> None:
    (tmp_path / "channels.yaml").write_text(
        "webhook:\n  provider: webhook\n  secret: s\n  allow_http: true\n"
        "  allow: [127.0.0.1, hooks.internal]\n",
        encoding="utf-8",
    )
    body = WEBHOOK.format(url="http://127.0.0.1:8000/x") + (
        "    next: two\n  two:\n    type: webhook\n    url: http://hooks.internal/\n"
        "    next: three\n  three:\n    type: webhook\n    url: http://localhost/\n"
    )
    (tmp_path / "s.yaml").write_text(HEAD + body, encoding="utf-8")
    problems = [p for p in lint_paths([tmp_path]) if p.file and p.file.endswith("s.yaml")]
    assert [(p.code, p.step) for p in problems] == [("webhook.refused", "three")]


def test_malformed_webhook_urls_are_still_refused() -> None:
    for url in ("ftp://crm.example.com/", "https://", "not a url"):
        problems = problems_of(WEBHOOK.format(url=f"'{url}'"))
        assert [(p.code, p.step) for p in problems] == [("schema.invalid", "hook")], url
