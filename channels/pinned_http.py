"""One HTTP request through the outbound address guard: the only way channels call a URL.

The push channels post to push service endpoints taken from subscriptions (data a browser sent
us) or to a configured provider, the webhook channel to receivers' URLs, the SMS channel to its
provider; whoever chose the URL, the connection goes to a vetted address only
(`channels.netguard`). A provider module that opened its own connection would escape the guard:
tests/test_architecture.py fails when one does. Errors say whether the receiver may have the
request: nothing left (transient), the request left without an answer (ambiguous).
Redirects are not followed here: a channel that follows them parses and vets each Location as a
new target.
"""

from __future__ import annotations

import email.utils
import http.client
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from channels.errors import (
    AmbiguousDeliveryError,
    ChannelConfigError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.netguard import (
    AddressPolicy,
    IPAddress,
    PinnedHTTPConnection,
    PinnedHTTPSConnection,
)


@dataclass(frozen=True)
class Target:
    """Where a request goes, split once and checked."""

    scheme: str
    host: str
    port: int
    path: str  # path and query

    @property
    def origin(self) -> str:
        """`scheme://host[:port]`: what error messages name (paths may carry tokens)."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def parse_target(url: str, *, allow_http: bool, what: str) -> Target:
    """The target of `url`; PermanentChannelError for anything but a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise PermanentChannelError(f"{what}: invalid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        only = "http(s)" if allow_http else "https"
        raise PermanentChannelError(f"{what}: URL scheme {scheme!r} refused, {only} only")
    if scheme == "http" and not allow_http:
        raise PermanentChannelError(f"{what}: plain http refused, https only (see allow_http)")
    if parts.username is not None or parts.password is not None:
        raise PermanentChannelError(f"{what}: URL carries credentials")
    if not parts.hostname:
        raise PermanentChannelError(f"{what}: URL has no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


@dataclass(frozen=True)
class Answer:
    """The receiver's answer: status, headers (lower-case names) and the start of the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Transport:
    """Timeouts, TLS and the address policy shared by every request of a channel."""

    policy: AddressPolicy
    tls: ssl.SSLContext
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_response_bytes: int = 64 * 1024
    # True: a certificate the TLS context does not trust is the channel's configuration (one
    # provider, or a missing ca_file). False: that address failed like a refused connection,
    # for channels whose every recipient names its own receiver (webhooks).
    untrusted_certificate_is_config: bool = True

    def post(self, target: Target, body: bytes, headers: Mapping[str, str], what: str) -> Answer:
        """POST `body` to one vetted address of `target` (see `request`)."""
        return self.request("POST", target, body, headers, what)

    def request(
        self,
        method: str,
        target: Target,
        body: bytes | None,
        headers: Mapping[str, str],
        what: str,
    ) -> Answer:
        """Send `method` with `body` to one vetted address of `target`.

        BlockedAddress (permanent) before any connection when the host is not public and not
        allow-listed; TransientChannelError when nothing reached the receiver;
        AmbiguousDeliveryError when the request left but no answer came back.
        """
        addresses = self.policy.resolve(target.host, target.port)
        failures = []
        for address in addresses:
            conn = self._connection(target, address)
            try:
                try:
                    conn.connect()
                except ssl.SSLCertVerificationError as exc:
                    reason = exc.verify_message
                    if self.untrusted_certificate_is_config:
                        raise ChannelConfigError(
                            f"{what}: {target.origin}'s certificate is not trusted ({reason})"
                        ) from None
                    failures.append(f"{address}: certificate not trusted ({reason})")
                    continue
                except OSError as exc:
                    failures.append(f"{address}: {type(exc).__name__}")
                    continue
                try:
                    conn.request(method, target.path, body=body, headers=dict(headers))
                except ValueError as exc:  # CR/LF in a header, bad characters in the path
                    raise PermanentChannelError(f"{what}: {target.origin}: {exc}") from None
                except (OSError, http.client.HTTPException) as exc:
                    raise TransientChannelError(
                        f"{what}: {target.origin}: sending failed ({type(exc).__name__})"
                    ) from None
                try:
                    response = conn.getresponse()
                except (OSError, http.client.HTTPException) as exc:
                    timed_out = isinstance(exc, TimeoutError)
                    late = f" within {self.read_timeout:g}s" if timed_out else ""
                    raise AmbiguousDeliveryError(
                        f"{what}: {target.origin} got the request but no answer came back{late} "
                        f"({type(exc).__name__}); it may have been accepted"
                    ) from None
                found = {k.lower(): v for k, v in response.getheaders()}
                return Answer(response.status, found, self._read(response))
            finally:
                conn.close()
        raise TransientChannelError(
            f"{what}: cannot connect to {target.origin} ({'; '.join(failures)})"
        )

    def _connection(self, target: Target, address: IPAddress) -> http.client.HTTPConnection:
        if target.scheme == "https":
            return PinnedHTTPSConnection(
                target.host,
                target.port,
                address,
                connect_timeout=self.connect_timeout,
                timeout=self.read_timeout,
                context=self.tls,
            )
        return PinnedHTTPConnection(
            target.host,
            target.port,
            address,
            connect_timeout=self.connect_timeout,
            timeout=self.read_timeout,
        )

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        # Capped, and bounded in time: a receiver that trickles bytes cannot hold the worker.
        # The status already decides; a body cut short only shortens the error text.
        chunks, remaining = [], self.max_response_bytes
        deadline = time.monotonic() + self.read_timeout
        try:
            while remaining > 0 and time.monotonic() < deadline:
                chunk = response.read(min(remaining, 16384))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        except (OSError, http.client.HTTPException):
            pass
        return b"".join(chunks)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date); None if absent or bad.

    `headers` as in an Answer (lower-case names); `now` is the clock's time, for dates.
    """
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
