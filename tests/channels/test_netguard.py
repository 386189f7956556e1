"""The outbound address guard, address by address (no network)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from channels.errors import TransientChannelError
from channels.netguard import AddressPolicy, BlockedAddress, blocked_reason, resolve_public

BLOCKED = {
    "0.0.0.0": "unspecified",
    "0.1.2.3": "unspecified",
    "10.0.0.1": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "169.254.169.254": "link-local",
    "100.64.0.1": "carrier-grade NAT",
    "100.127.255.254": "carrier-grade NAT",
    "192.0.0.8": "IETF",
    "198.18.0.1": "benchmarking",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "::": "unspecified",
    "::1": "loopback",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:7f00:1": "loopback",
    "::ffff:169.254.169.254": "link-local",
    "::ffff:10.0.0.1": "private",
    "::127.0.0.1": "IPv4-compatible",
    "::ffff:0:7f00:1": "IPv4-translated",
    "2002:7f00:1::": "6to4 embedding 127.0.0.1",
    "2002:a9fe:a9fe::1": "6to4 embedding 169.254.169.254",
    "64:ff9b::7f00:1": "NAT64 embedding 127.0.0.1",
    "64:ff9b::a00:1": "NAT64 embedding 10.0.0.1",
    "64:ff9b:1::1": "local NAT64",
    # Teredo: server 65.54.227.120, client 192.0.2.45 (obfuscated)
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "",
    "fe80::1": "link-local",
    "fc00::1": "unique-local",
    "fd12:3456::1": "unique-local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "2001:db8::1": "documentation",
}
PUBLIC = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", sorted(BLOCKED))
def test_non_public_addresses_have_a_reason(address: str) -> None:
    reason = blocked_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert BLOCKED[address] in reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None
    assert resolve_public(address, 443) == [ipaddress.ip_address(address)]


@pytest.mark.parametrize(
    "literal", ["2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "017700000001", "127.1"]
)
def test_legacy_ipv4_spellings_are_normalised_then_blocked(literal: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        resolve_public(literal, 80)
    assert caught.value.address == ipaddress.IPv4Address("127.0.0.1")


def test_mapped_addresses_are_returned_as_the_ipv4_address_dialled() -> None:
    assert resolve_public("::ffff:8.8.8.8", 80) == [ipaddress.IPv4Address("8.8.8.8")]


def test_allow_list_by_network_covers_unwrapped_forms() -> None:
    policy = AddressPolicy(["127.0.0.1/32", "10.1.0.0/16"])
    assert resolve_public("::ffff:127.0.0.1", 80, policy) == [ipaddress.IPv4Address("127.0.0.1")]
    assert resolve_public("10.1.2.3", 80, policy) == [ipaddress.IPv4Address("10.1.2.3")]
    with pytest.raises(BlockedAddress):
        resolve_public("10.2.0.1", 80, policy)
    with pytest.raises(BlockedAddress):
        resolve_public("127.0.0.2", 80, policy)


def test_allow_list_by_name_trusts_whatever_the_name_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        assert host == "hooks.internal.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    policy = AddressPolicy(["Hooks.Internal.Example."])
    assert resolve_public("hooks.internal.example", 80, policy) == [
        ipaddress.IPv4Address("10.9.8.7")
    ]
    with pytest.raises(BlockedAddress):
        resolve_public("hooks.internal.example", 80)


def test_localhost_is_refused_by_name_unless_its_address_is_allowed() -> None:
    with pytest.raises(BlockedAddress):
        resolve_public("localhost", 80)
    allowed = resolve_public("localhost", 80, AddressPolicy(["127.0.0.0/8", "::1"]))
    assert ipaddress.IPv4Address("127.0.0.1") in allowed


def test_metadata_names_are_refused_even_when_they_do_not_resolve() -> None:
    with pytest.raises(BlockedAddress, match="reserved name"):
        resolve_public("metadata.google.internal", 80)


def test_an_unresolvable_name_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(TransientChannelError, match="cannot resolve"):
        resolve_public("nowhere.example", 80)


def test_a_malformed_allow_entry_is_refused() -> None:
    with pytest.raises(ValueError, match="neither CIDR nor host name"):
        AddressPolicy(["10.0.0.0/33"])
