"""Outbound address guard: resolve once, refuse non-public addresses, connect to the vetted one.

Channels that call URLs chosen by scenario authors or contacts (webhooks) must not become a way to
reach the loopback interface, the private network or a cloud metadata service (SSRF). The guard:

1. resolves the name with `getaddrinfo`, which also turns legacy IPv4 spellings ("2130706433",
   "0x7f.1", "0177.0.0.1") into the address the operating system would actually use;
2. unwraps IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) and checks the
   embedded address too;
3. refuses the host if ANY of its addresses is not public, unless the operator's allow list says so;
4. connects to exactly the checked address (the `Pinned*Connection` classes), so a DNS answer that
   changes between the check and the connection (rebinding) is never consulted.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import sys
from collections.abc import Iterable

from channels.errors import PermanentChannelError, TransientChannelError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), label) for cidr, label in pairs)


# Listed explicitly rather than trusting `ipaddress.is_private`, whose tables changed between
# CPython releases; `is_global` stays as the final catch-all.
_BLOCKED_V4 = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_BLOCKED_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible"),
    ("::ffff:0:0:0/96", "IPv4-translated"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard"),
    ("2001:db8::/32", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Names that point inside the host or the cloud whatever DNS says.
_BLOCKED_NAMES = frozenset({"localhost", "metadata.google.internal", "metadata.goog"})


class BlockedAddress(PermanentChannelError):
    """The destination is not a public address and is not on the allow list."""

    code = "ssrf_blocked"

    def __init__(self, host: str, reason: str, address: IPAddress | None = None) -> None:
        where = f"{host} ({address})" if address is not None and str(address) != host else host
        super().__init__(
            f"refused to connect to {where}: {reason} address; "
            "add it to the channel's allow list if this destination is intended"
        )
        self.host = host
        self.address = address
        self.reason = reason


def normalise(address: IPAddress) -> IPAddress:
    """The address the kernel connects to: an IPv4-mapped IPv6 address becomes plain IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` is not a public destination, or None when it is."""
    address = normalise(address)
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_reason(address)
    for net, label in _BLOCKED_V6:
        if address in net:
            return label
    for label, embedded in _embedded_v4(address):
        reason = _v4_reason(embedded)
        if reason is not None:
            return f"{label} embedding {embedded}, a {reason}"
    return None if address.is_global else "non-global"


def _v4_reason(address: ipaddress.IPv4Address) -> str | None:
    for net, label in _BLOCKED_V4:
        if address in net:
            return label
    return None if address.is_global else "non-global"


def _embedded_v4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    found = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo", server), ("Teredo", client)]
    if address in _NAT64:
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def _host_key(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _reserved_name(key: str) -> bool:
    return key in _BLOCKED_NAMES or key.endswith(".localhost")


_LEGACY_V4 = frozenset("0123456789abcdefx.")


def literal_address(host: str) -> IPAddress | None:
    """The address `host` spells out, read as resolvers read it; None for a name (no DNS here).

    Covers IPv6 (brackets optional, IPv4-mapped forms unwrapped) and the legacy IPv4 forms
    `getaddrinfo` accepts through `inet_aton`: "2130706433", "0x7f.1", "0177.0.0.1", "127.1".
    """
    key = _host_key(host)
    try:
        return normalise(ipaddress.ip_address(key))
    except ValueError:
        pass
    if not key or not set(key) <= _LEGACY_V4:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(key))
    except OSError:
        return None


def refusal_without_dns(host: str, policy: AddressPolicy | None = None) -> BlockedAddress | None:
    """The refusal `resolve` will give `host` whatever DNS answers, or None if only DNS can tell.

    That is a literal address that is not public, or a name that is always local (`localhost`,
    `*.localhost`, cloud metadata names), unless `policy`'s allow list covers it. Pure: it
    neither resolves nor connects, so linters can give the guard's own reason before sending.
    """
    policy = policy or AddressPolicy()
    key = _host_key(host)
    if key in policy.hosts:
        return None
    address = literal_address(key)
    if address is None:
        return BlockedAddress(host, "reserved name") if _reserved_name(key) else None
    if policy.permits(address):
        return None
    reason = blocked_reason(address)
    return None if reason is None else BlockedAddress(host, reason, address)


class AddressPolicy:
    """Which destinations a channel may reach: public addresses, plus the operator's allow list.

    `allow` entries are CIDR blocks or single addresses ("10.1.2.0/24", "127.0.0.1") or exact host
    names ("hooks.internal.example"); an allowed name may resolve to any address.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.networks: list[Network] = []
        self.hosts: set[str] = set()
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or " " in entry:
                    raise ValueError(
                        f"allow list entry {entry!r} is neither CIDR nor host name"
                    ) from None
                self.hosts.add(_host_key(entry))

    def permits(self, address: IPAddress) -> bool:
        """True when the allow list covers `address` (as given or once unwrapped)."""
        candidates = {address, normalise(address)}
        return any(
            a in net for a in candidates for net in self.networks if a.version == net.version
        )

    def check(self, host: str, address: IPAddress) -> None:
        """Raise BlockedAddress unless `address` is public or allow-listed."""
        if self.permits(address):
            return
        reason = blocked_reason(address)
        if reason is not None:
            raise BlockedAddress(host, reason, address)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of `host`, vetted; connect only to these. Raises BlockedAddress."""
        key = _host_key(host)
        trusted = key in self.hosts
        reserved = not trusted and _reserved_name(key)
        try:
            infos = socket.getaddrinfo(key, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except UnicodeError as exc:
            raise PermanentChannelError(f"invalid host name {host!r}: {exc}") from None
        except OSError as exc:
            if reserved:
                raise BlockedAddress(host, "reserved name") from None
            raise TransientChannelError(f"cannot resolve {host}: {exc}") from None
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = normalise(ipaddress.ip_address(sockaddr[0]))
            if trusted or self.permits(address):
                pass
            elif reserved:
                raise BlockedAddress(host, "reserved name", address)
            else:
                self.check(host, address)
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise TransientChannelError(f"cannot resolve {host}: no address")
        return addresses


def resolve_public(host: str, port: int, policy: AddressPolicy | None = None) -> list[IPAddress]:
    """The vetted addresses of `host` under `policy` (no allow list by default)."""
    return (policy or AddressPolicy()).resolve(host, port)


def open_socket(address: IPAddress, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly `address`: a numeric address is never looked up again."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((str(address), port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to `host` (Host header) over a TCP connection to the vetted `address`."""

    def __init__(
        self, host: str, port: int, address: IPAddress, *, connect_timeout: float, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        self.sock = open_socket(self.address, self.port, self.connect_timeout)
        self.sock.settimeout(self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `host` over a TCP connection to `address`; SNI and the certificate use `host`."""

    def __init__(
        self,
        host: str,
        port: int,
        address: IPAddress,
        *,
        connect_timeout: float,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.connect_timeout = connect_timeout
        self.tls_context = context

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        sock = open_socket(self.address, self.port, self.connect_timeout)
        try:
            # The handshake runs under the connect timeout; the certificate must name `host`.
            self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock.settimeout(self.timeout)
