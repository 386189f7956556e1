"""Mobile push through an HTTP provider, against a real local server: the device tokens and the
notification arrive in the built-in shape or the configured template, and answers map to retry
decisions (gone devices reported, credentials errors pause the channel)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from channels import OutboundMessage, PermanentChannelError, TransientChannelError
from channels.errors import ChannelConfigError
from channels.netguard import BlockedAddress
from channels.push_fanout import TargetsGone
from channels.push_http import PushHttpChannel, PushHttpSettings, push_http_channel_from_config

TOKEN = "provider-token-0123456789"
LOCAL = ("127.0.0.1/32",)


@dataclass
class Seen:
    headers: dict[str, str]
    body: Any


@dataclass
class Provider:
    """A push provider on 127.0.0.1; `reply(body) -> (status, headers, text)`."""

    reply: Callable[[Any], tuple[int, dict[str, str], str]] = lambda body: (
        200,
        {},
        '{"id": "m-1"}',
    )
    seen: list[Seen] = field(default_factory=list)

    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                provider.seen.append(Seen(dict(self.headers.items()), body))
                status, headers, text = provider.reply(body)
                data = text.encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/send"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def provider() -> Iterator[Provider]:
    found = Provider()
    found.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


def channel(
    provider: Provider, on_gone: Callable[[str], None] | None = None, **settings: Any
) -> PushHttpChannel:
    settings = {"url": provider.url, "token": TOKEN, "allow": LOCAL, "allow_http": True, **settings}
    return PushHttpChannel(PushHttpSettings(**settings), on_gone=on_gone)


def message(*devices: Any, **parts: str) -> OutboundMessage:
    parts = {
        "title": "Back in stock",
        "body": "Your size is back.",
        "url": "https://shop.example/p/1",
        **parts,
    }
    return OutboundMessage(
        "s-1", "push", {"external_id": "c-1", "devices": list(devices)}, parts, topic="stock"
    )


def test_each_device_gets_the_built_in_shape(provider: Provider) -> None:
    receipt = channel(provider).send(message("dev-a", {"token": "dev-b"}, "dev-a", ""))
    assert receipt.provider_id == "push_http:s-1:2/2"
    assert [s.body for s in provider.seen] == [
        {"to": device, "title": "Back in stock", "body": "Your size is back.",
         "url": "https://shop.example/p/1", "reference": "s-1"}
        for device in ("dev-a", "dev-b")
    ]  # fmt: skip
    assert {s.headers["Authorization"] for s in provider.seen} == {f"Bearer {TOKEN}"}
    keys = [s.headers["Idempotency-Key"] for s in provider.seen]
    assert all(k.startswith("s-1:") for k in keys) and keys[0] != keys[1]


def test_a_template_sends_the_providers_shape_in_one_request(provider: Provider) -> None:
    template = {
        "registration_ids": "$tokens",
        "priority": "high",
        "notification": {"title": "$title", "body": "$body", "image": "$image"},
        "data": {"url": "$url", "campaign": "$topic"},
    }
    channel(provider, template=template).send(message("dev-a", "dev-b"))
    [seen] = provider.seen
    assert seen.body == {
        "registration_ids": ["dev-a", "dev-b"],
        "priority": "high",
        "notification": {
            "title": "Back in stock",
            "body": "Your size is back.",
        },  # no image: left out
        "data": {"url": "https://shop.example/p/1", "campaign": "stock"},
    }
    assert seen.headers["Idempotency-Key"] == "s-1"


def test_a_gone_device_is_reported_and_the_others_deliver(provider: Provider) -> None:
    provider.reply = lambda body: (
        (410, {}, "unregistered") if body["to"] == "old" else (200, {}, "{}")
    )
    gone: list[str] = []
    receipt = channel(provider, on_gone=gone.append).send(message("old", "new"))
    assert receipt.provider_id == "push_http:s-1:1/2"
    assert gone == ["old"]


def test_every_device_gone_is_a_bounce(provider: Provider) -> None:
    provider.reply = lambda body: (404, {}, "")
    gone: list[str] = []
    with pytest.raises(TargetsGone) as caught:
        channel(provider, on_gone=gone.append).send(message("a", "b"))
    assert caught.value.bounce is True
    assert caught.value.gone == ("a", "b") and gone == ["a", "b"]


def test_refused_credentials_pause_the_channel_without_echoing_the_token(
    provider: Provider,
) -> None:
    provider.reply = lambda body: (401, {}, f'{{"error": "bad token {TOKEN}"}}')
    with pytest.raises(ChannelConfigError) as caught:
        channel(provider).send(message("a", "b"))
    assert "401" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert len(provider.seen) == 1  # the second device is not tried with the same bad token


def test_rate_limited_is_transient_with_retry_after(provider: Provider) -> None:
    provider.reply = lambda body: (429, {"Retry-After": "30"}, "slow down")
    with pytest.raises(TransientChannelError) as caught:
        channel(provider).send(message("a"))
    assert caught.value.retry_after == 30.0


def test_a_rejected_request_is_permanent_not_a_bounce(provider: Provider) -> None:
    provider.reply = lambda body: (400, {}, "invalid payload")
    with pytest.raises(PermanentChannelError, match="invalid payload") as caught:
        channel(provider).send(message("a"))
    assert caught.value.bounce is False


def test_no_device_fails_before_calling(provider: Provider) -> None:
    with pytest.raises(PermanentChannelError, match="no push device"):
        channel(provider).send(message())
    assert provider.seen == []


def test_a_private_provider_needs_the_allow_list(provider: Provider) -> None:
    with pytest.raises(BlockedAddress):
        channel(provider, allow=()).send(message("a"))
    assert provider.seen == []


def test_template_problems_are_reported_at_once() -> None:
    template = {"to": "$tokn", "also": "$tokens", "text": "$text"}
    with pytest.raises(ChannelConfigError) as caught:
        PushHttpSettings(url="https://push.example/send", token="t", template=template)
    text = str(caught.value)
    assert "did you mean $token?" in text
    assert "no field takes $title or $body" in text


def test_from_config_resolves_secrets_and_refuses_unknown_keys() -> None:
    built = push_http_channel_from_config(
        {"url": "https://push.example/send", "token": "${PUSH_TOKEN}", "idempotent": True},
        {"PUSH_TOKEN": TOKEN},
    )
    assert built.settings.token == TOKEN
    assert built.info.idempotent_provider is True
    assert TOKEN not in repr(built.settings)
    with pytest.raises(ChannelConfigError, match="did you mean 'token'"):
        push_http_channel_from_config({"url": "https://push.example/send", "tokne": "x"}, {})
    with pytest.raises(ChannelConfigError, match="token: required by auth=bearer"):
        push_http_channel_from_config({"url": "https://push.example/send"}, {})
