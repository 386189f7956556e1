"""The email channel over SMTP: settings, one reused connection, SMTP replies mapped to errors.

Reply mapping (the delivery loop acts on the error type):
- 4xx replies, timeouts, refused or reset connections: TransientChannelError;
- the connection dies after the end of the message data, before the server's answer:
  AmbiguousDeliveryError (the server may have queued it; a resend could deliver twice);
- 5xx to MAIL FROM, RCPT TO or the data: PermanentChannelError with the reply code (a hard bounce);
- failed AUTH, untrusted TLS certificate, STARTTLS missing, AUTH required: ChannelConfigError
  (nothing can pass until an operator fixes the settings; the loop should pause the channel).
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from channels.base import Channel
from channels.config import coerce_number, resolve_secrets
from channels.email_mime import Email, Sender, build_email, checked_address
from channels.errors import (
    AmbiguousDeliveryError,
    ChannelConfigError,
    PermanentChannelError,
    TransientChannelError,
)
from channels.message import OutboundMessage, Receipt
from channels.outbox import BUILTIN_CHANNELS

log = logging.getLogger(__name__)

Security = Literal["starttls", "ssl", "none"]
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "ssl": 465, "none": 25}
_RETRY_CONNECT = 60.0  # seconds: a refused connection or a 421 means the server is busy or down
_RETRY_GREYLIST = 300.0  # greylisting servers accept the same message after a few minutes
_AUTH_CODES = frozenset({530, 534, 535, 538})
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110)

# Plain SMTP has no idempotency key: a resend after an ambiguous outcome may deliver twice.
SMTP_EMAIL_INFO = replace(
    next(info for info in BUILTIN_CHANNELS if info.name == "email"), idempotent_provider=False
)


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SmtpSettings:
    """SMTP connection and sender identity. Each field is a configuration key (see README)."""

    host: str = field(metadata=_help("SMTP server name or address"))
    from_address: str = field(metadata=_help("default From address"))
    port: int | None = field(
        default=None, metadata=_help("default 587 (starttls), 465 (ssl), 25 (none)")
    )
    security: Security = field(
        default="starttls", metadata=_help("starttls, ssl (implicit TLS) or none")
    )
    username: str | None = field(default=None, metadata=_help("AUTH user; no AUTH when unset"))
    password: str | None = field(
        default=None, repr=False, metadata=_help("AUTH password; write ${ENV_NAME}")
    )
    timeout: float = field(default=30.0, metadata=_help("seconds per connect, command or reply"))
    from_name: str | None = field(default=None, metadata=_help("default From display name"))
    reply_to: str | None = field(default=None, metadata=_help("default Reply-To address"))
    local_hostname: str | None = field(
        default=None, metadata=_help("name sent in EHLO; default: this machine's FQDN")
    )
    message_id_domain: str | None = field(
        default=None, metadata=_help("right-hand side of Message-ID; default: From domain")
    )
    envelope_from: str | None = field(
        default=None, metadata=_help("MAIL FROM (bounce) address; default: the From address")
    )
    unsubscribe_mailto: str | None = field(
        default=None, metadata=_help("mailto added to List-Unsubscribe when a URL is given")
    )
    ca_file: str | None = field(
        default=None, metadata=_help("PEM CA bundle replacing the system trust store")
    )
    callback_secret: str = field(
        default="", repr=False, metadata=_help("HMAC key of the event callbacks; write ${ENV_NAME}")
    )
    callback_header: str = field(
        default="X-Signature", metadata=_help("header carrying the callbacks' signature")
    )

    def __post_init__(self) -> None:
        problems = []
        if self.security not in _DEFAULT_PORTS:
            problems.append(f"security: expected one of {', '.join(_DEFAULT_PORTS)}")
        if self.port is not None and not 0 < self.port < 65536:
            problems.append("port: expected 1-65535")
        if not self.timeout > 0:
            problems.append("timeout: expected a positive number of seconds")
        if not self.host:
            problems.append("host: required")
        if self.password and not self.username:
            problems.append("password: set without a username")
        if self.username and self.security == "none" and not _is_loopback(self.host):
            problems.append("username: AUTH over an unencrypted connection is refused off loopback")
        for key in ("from_address", "reply_to", "envelope_from"):
            value = getattr(self, key)
            if value is not None or key == "from_address":
                try:
                    checked_address(key, value)
                except PermanentChannelError as exc:
                    problems.append(str(exc))
        if self.callback_secret and not _HEADER_NAME.fullmatch(self.callback_header):
            problems.append("callback_header: not a valid HTTP header name")
        if problems:
            raise ChannelConfigError("SMTP settings: " + "; ".join(problems))

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS[self.security]


class SmtpChannel(Channel):
    """Sends email through one SMTP server, reusing the connection between sends."""

    info = SMTP_EMAIL_INFO

    def __init__(self, settings: SmtpSettings, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sender = Sender(
            from_address=settings.from_address,
            from_name=settings.from_name,
            reply_to=settings.reply_to,
            message_id_domain=settings.message_id_domain,
            unsubscribe_mailto=settings.unsubscribe_mailto,
        )
        self._smtp: smtplib.SMTP | None = None

    def __repr__(self) -> str:
        return f"SmtpChannel({self.settings!r})"

    def send(self, message: OutboundMessage) -> Receipt:
        email = build_email(message, self._sender, self._clock())  # raises before any connection
        self._deliver(email, self.settings.envelope_from or email.from_address, message.send_key)
        log.debug("smtp accepted send_key=%s message_id=%s", message.send_key, email.message_id)
        return Receipt(provider_id=email.message_id, status="sent")

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except OSError:  # smtplib errors are OSErrors too
                self._smtp.close()
            self._smtp = None

    # --- one transaction ---------------------------------------------------------------------

    def _deliver(self, email: Email, envelope_from: str, send_key: str) -> None:
        reused = self._smtp is not None
        smtp = self._connection()
        stage = "MAIL FROM"
        try:
            code, reply = smtp.mail(envelope_from)
            if reused and code == 421:
                raise smtplib.SMTPServerDisconnected("421 on a reused connection")
        except OSError:
            if not reused:
                raise self._lost(stage, send_key) from None
            # The server closed an idle connection; nothing was sent yet, so reconnect once.
            self._drop()
            smtp = self._connection()
            code, reply = self._guarded(lambda: smtp.mail(envelope_from), stage, send_key)
        if code != 250:
            self._reset(smtp)
            _refused(stage, code, reply, send_key)
        stage = "RCPT TO"
        code, reply = self._guarded(lambda: smtp.rcpt(email.envelope_recipient), stage, send_key)
        if code not in (250, 251):
            self._reset(smtp)
            _refused(stage, code, reply, send_key)
        stage = "DATA"
        code, reply = self._guarded(lambda: smtp.docmd("DATA"), stage, send_key)
        if code != 354:
            self._reset(smtp)
            _refused(stage, code, reply, send_key)
        self._guarded(lambda: smtp.send(_dot_stuffed(email.data)), "message data", send_key)
        try:
            # The server has the whole message: from here on a lost answer is an unknown outcome.
            code, reply = smtp.getreply()
        except OSError:
            self._drop()
            raise AmbiguousDeliveryError(
                f"send {send_key}: no SMTP answer after the message data was sent "
                f"({self._where()}); it may have been accepted"
            ) from None
        if code != 250:
            _refused("end of data", code, reply, send_key)

    def _guarded(self, call: Callable[[], Any], stage: str, send_key: str) -> Any:
        try:
            return call()
        except OSError:
            raise self._lost(stage, send_key) from None

    def _lost(self, stage: str, send_key: str) -> TransientChannelError:
        self._drop()
        return TransientChannelError(
            f"send {send_key}: SMTP connection to {self._where()} lost at {stage}", _RETRY_CONNECT
        )

    def _reset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except OSError:
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.effective_port}"

    # --- connection ----------------------------------------------------------------------------

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = self._connect()
        return self._smtp

    def _connect(self) -> smtplib.SMTP:
        s, where = self.settings, self._where()
        try:
            if s.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.effective_port,
                    local_hostname=s.local_hostname,
                    timeout=s.timeout,
                    context=self._tls_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    s.host, s.effective_port, local_hostname=s.local_hostname, timeout=s.timeout
                )
        except smtplib.SMTPConnectError as exc:
            _refused("connect", exc.smtp_code, exc.smtp_error, None)
        except ssl.SSLCertVerificationError as exc:
            raise ChannelConfigError(
                f"TLS certificate of {where} not trusted ({exc.verify_message}); see ca_file"
            ) from None
        except OSError as exc:
            raise TransientChannelError(
                f"cannot connect to SMTP {where}: {type(exc).__name__}", _RETRY_CONNECT
            ) from None
        try:
            self._handshake(smtp)
        except BaseException:
            smtp.close()
            raise
        log.debug("smtp connected to %s (%s)", where, s.security)
        return smtp

    def _handshake(self, smtp: smtplib.SMTP) -> None:
        s, where = self.settings, self._where()
        try:
            smtp.ehlo_or_helo_if_needed()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ChannelConfigError(
                        f"{where} does not offer STARTTLS; refusing to send in clear "
                        "(security: starttls)"
                    )
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if s.username:
                self._login(smtp, s.username, s.password or "")
        except smtplib.SMTPHeloError as exc:
            _refused("EHLO", exc.smtp_code, exc.smtp_error, None)
        except smtplib.SMTPResponseException as exc:
            _refused("STARTTLS", exc.smtp_code, exc.smtp_error, None)
        except ssl.SSLCertVerificationError as exc:
            raise ChannelConfigError(
                f"TLS certificate of {where} not trusted ({exc.verify_message}); see ca_file"
            ) from None
        except OSError as exc:
            raise TransientChannelError(
                f"SMTP handshake with {where} failed: {type(exc).__name__}", _RETRY_CONNECT
            ) from None

    def _login(self, smtp: smtplib.SMTP, username: str, password: str) -> None:
        where = self._where()
        try:
            smtp.login(username, password)
        except smtplib.SMTPAuthenticationError as exc:
            if 400 <= exc.smtp_code < 500:
                raise TransientChannelError(
                    f"SMTP AUTH on {where} temporarily failed ({exc.smtp_code})"
                ) from None
            raise ChannelConfigError(
                f"SMTP AUTH failed for user '{username}' on {where} ({exc.smtp_code}); "
                "check username and password"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise ChannelConfigError(
                f"{where} does not offer AUTH; unset username or use starttls/ssl"
            ) from None
        except smtplib.SMTPException as exc:
            if isinstance(exc, smtplib.SMTPServerDisconnected):
                raise
            raise ChannelConfigError(f"SMTP AUTH on {where}: {exc}") from None

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)


_BOUNCE_CODES = frozenset({550, 551, 553})


def _refused(stage: str, code: int, reply: bytes | str, send_key: str | None) -> NoReturn:
    """Raise the error a non-success SMTP reply means."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    # Replies often quote the address; logs and ledgers must not carry it.
    text = re.sub(r"[^\s<>@]+@[^\s<>]+", "<address>", " ".join(text.split()))[:200]
    what = f"send {send_key}: " if send_key else ""
    detail = f"{what}SMTP {stage} refused with {code} {text}".rstrip()
    if 400 <= code < 500:
        greylisted = "grey" in text.lower() or "gray" in text.lower()
        retry = _RETRY_GREYLIST if greylisted else _RETRY_CONNECT if code == 421 else None
        raise TransientChannelError(detail, retry)
    if code in _AUTH_CODES or (stage == "connect" and 500 <= code < 600):
        raise ChannelConfigError(detail)
    if 500 <= code < 600:
        # 550/551/553 at RCPT: the mailbox does not exist or is refused — a hard bounce.
        raise PermanentChannelError(detail, bounce=stage == "RCPT TO" and code in _BOUNCE_CODES)
    raise TransientChannelError(f"{detail} (unexpected reply)")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: leading dots doubled, ended by CRLF . CRLF (RFC 5321 4.5.2)."""
    body = re.sub(rb"(?m)^\.", b"..", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- configuration -------------------------------------------------------------------------------


def smtp_channel_from_config(
    config: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> SmtpChannel:
    """An SmtpChannel from a plain mapping; `${ENV_NAME}` values come from `environ` (os.environ).

    Every problem is reported at once, each naming its key; secret values are never echoed.
    """
    resolved = resolve_secrets(config, os.environ if environ is None else environ)
    declared = {f.name: f for f in fields(SmtpSettings)}
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in resolved.items():
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"unknown key '{key}'{hint}")
        elif value is not None:
            try:
                values[key] = _coerce(key, value)
            except ValueError as exc:
                problems.append(str(exc))
    missing = [key for key in ("host", "from_address") if key not in values]
    problems += [f"'{key}' is required" for key in missing]
    if problems:
        # The settings that were given are still checked, so one run reports every problem.
        stand_in = {"host": "localhost", "from_address": "parcours@example.com"}
        try:
            SmtpSettings(**{**{k: stand_in[k] for k in missing}, **values})
        except ChannelConfigError as exc:
            problems += str(exc).removeprefix("SMTP settings: ").split("; ")
        except TypeError:
            pass
        raise ChannelConfigError(
            f"SMTP configuration: {'; '.join(problems)}; known keys: {', '.join(declared)}"
        )
    return SmtpChannel(SmtpSettings(**values))


def _coerce(key: str, value: Any) -> Any:
    if key in ("port", "timeout"):
        return coerce_number(key, value, int if key == "port" else float)
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text")
    return value
