"""Plug-ins register channels and providers the way the built-ins do, through entry points."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import channels.registry as registry
from channels import Channel, ChannelInfo, OutboundMessage, Receipt, register_channel
from engine.delivery import channel_config

FAX = ChannelInfo(
    name="fax", label="Fax", weight=2.5, realtime=False, cost=0.3, max_length=None,
    idempotent_provider=False, required_parts=(("text",),),
)  # fmt: skip


class FaxChannel(Channel):
    info = FAX

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = dict(settings or {})

    def send(self, message: OutboundMessage) -> Receipt:
        return Receipt(provider_id=f"fax:{message.send_key}")


def register_fax() -> None:
    register_channel(FAX, FaxChannel)


def fax_provider(settings: Mapping[str, Any], environ: Mapping[str, str]) -> Channel:
    return FaxChannel({**settings, "token": environ.get("FAX_TOKEN")})


class _Entry:
    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.target = target

    def load(self) -> Any:
        return self.target


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    groups = {
        "parcours.channels": [_Entry("fax", register_fax)],
        "parcours.providers": [_Entry("faxhub", fax_provider)],
    }

    def entry_points(group: str) -> list[_Entry]:
        return groups.get(group, [])

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    monkeypatch.setattr(channel_config, "entry_points", entry_points)
    saved = (dict(registry._INFO), dict(registry._FACTORIES))
    registry._INFO.clear()
    registry._FACTORIES.clear()
    yield
    registry._INFO.clear()
    registry._FACTORIES.clear()
    registry._INFO.update(saved[0])
    registry._FACTORIES.update(saved[1])


def test_a_plugin_channel_and_provider_are_found_through_entry_points(
    plugin: None, tmp_path: Path
) -> None:
    assert "fax" in registry.channel_names()
    assert "email" in registry.channel_names()  # the built-ins are still there
    assert registry.channel_info("fax").weight == 2.5
    (tmp_path / "channels.yaml").write_text("fax:\n  provider: faxhub\n  number: '+33100000000'\n")
    built = channel_config.load_channels(tmp_path, {"FAX_TOKEN": "t0k"})
    fax = built["fax"]
    assert isinstance(fax, FaxChannel)
    assert fax.settings == {"number": "+33100000000", "token": "t0k"}
    assert channel_config.lint_channels_text("fax:\n  provider: faxhub\n") == []
