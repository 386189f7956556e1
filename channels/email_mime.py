"""An email built from a rendered OutboundMessage: MIME parts, headers, and injection checks.

Every header input is checked before it is set (no control characters, strict ASCII addresses), the
decoded value is checked again after the email package parsed it (an encoded word such as
`=?UTF-8?Q?=0A?=` decodes to a newline), and the serialised bytes are parsed back to prove no header
appeared that was not set. Errors name the field, never its value: values are personal data.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Any
from urllib.parse import urlsplit

from channels.errors import PermanentChannelError
from channels.message import OutboundMessage

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_SEND_KEY = re.compile(r"[!-~]{1,200}")  # printable ASCII, no spaces
_URI_LIMIT = 900  # a header line must stay under 998 octets (RFC 5322)

# Headers whose values are URIs or identifiers: the email package would fold a long one into
# RFC 2047 encoded words, which mail clients do not decode there (a broken one-click link).
_VERBATIM = frozenset(
    {"list-unsubscribe", "list-unsubscribe-post", "list-id", "x-parcours-send-key"}
)


class _MailPolicy(EmailPolicy):
    """SMTP policy (CRLF) that writes the URI headers as they are, one URI per line."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _VERBATIM:
            return f"{name}: {str(value).replace(', ', ',' + self.linesep + ' ')}{self.linesep}"
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _VERBATIM:
            return self.fold(name, value).encode("ascii")
        return super().fold_binary(name, value)


MAIL_POLICY = _MailPolicy(linesep="\r\n")


@dataclass(frozen=True)
class Sender:
    """Defaults from the channel settings; a message may override them through its metadata."""

    from_address: str
    from_name: str | None = None
    reply_to: str | None = None
    message_id_domain: str | None = None  # default: the domain of from_address
    unsubscribe_mailto: str | None = None


@dataclass(frozen=True)
class Email:
    """A message ready for the wire."""

    from_address: str
    envelope_recipient: str
    message_id: str
    data: bytes  # CRLF line endings, 7-bit clean


def message_id(send_key: str, domain: str) -> str:
    """Stable per send: a retry of the same send carries the same Message-ID."""
    return f"<{hashlib.sha256(send_key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


def build_email(message: OutboundMessage, sender: Sender, now: datetime) -> Email:
    """The MIME message for one recipient; PermanentChannelError when it cannot be sent as is."""
    meta = message.metadata
    send_key = message.send_key
    if not isinstance(send_key, str) or not _SEND_KEY.fullmatch(send_key):
        raise PermanentChannelError("send_key: must be 1-200 printable ASCII characters")
    where = f"send {send_key}"

    subject = _part(message, "subject")
    text, html = _part(message, "text"), _part(message, "html")
    if subject is None:
        raise PermanentChannelError(f"{where}: an email needs a subject")
    if text is None and html is None:
        raise PermanentChannelError(f"{where}: an email needs a text or an html part")

    from_address = checked_address("from_address", _meta(meta, "from_address", sender.from_address))
    from_name = _meta(meta, "from_name", sender.from_name)
    reply_to = _meta(meta, "reply_to", sender.reply_to)
    to_address = checked_address("recipient.email", message.recipient.get("email"))
    to_name = message.recipient.get("name")
    domain = sender.message_id_domain or from_address.rpartition("@")[2]
    if not _DOMAIN.fullmatch(domain):
        raise PermanentChannelError("message_id_domain: not a valid domain name")
    mid = message_id(send_key, domain)

    msg = EmailMessage(policy=MAIL_POLICY)
    _set(msg, "Message-ID", mid)
    _set(msg, "Date", format_datetime(now))
    _set(msg, "From", _mailbox("from_name", from_name, from_address))
    _set(msg, "To", _mailbox("recipient.name", to_name, to_address))
    if reply_to is not None:
        _set(msg, "Reply-To", checked_address("reply_to", reply_to))
    _set(msg, "Subject", header_text("subject", subject))
    _list_headers(msg, message, sender, where)
    _set(msg, "X-Parcours-Send-Key", send_key)

    if text is not None:
        msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
        if html is not None:
            msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    elif html is not None:
        msg.set_content(html, subtype="html", charset="utf-8", cte="quoted-printable")

    data = msg.as_bytes()
    _verify(data, msg, from_address, to_address, where)
    return Email(from_address, envelope_recipient=to_address, message_id=mid, data=data)


def header_text(field: str, value: Any) -> str:
    """`value` if it is a string fit for a header: no CR, LF, NUL or other control character."""
    if not isinstance(value, str):
        raise PermanentChannelError(f"{field}: expected text, got {type(value).__name__}")
    for index, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise PermanentChannelError(
                f"{field}: control character U+{ord(char):04X} at position {index} "
                "(header injection refused)"
            )
    return value


def checked_address(field: str, value: Any) -> str:
    """A plain `local@domain` address (ASCII local part; an IDN domain becomes punycode)."""
    text = header_text(field, value)
    local, at, domain = text.rpartition("@")
    if not at:
        raise PermanentChannelError(f"{field}: not an email address")
    if not local.isascii():
        raise PermanentChannelError(f"{field}: a non-ASCII local part needs SMTPUTF8 (unsupported)")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise PermanentChannelError(f"{field}: invalid internationalised domain") from None
    address = f"{local}@{domain}"
    if (
        not _DOT_ATOM.fullmatch(local)
        or not _DOMAIN.fullmatch(domain)
        or len(local) > 64
        or len(address) > 254
        or parseaddr(address) != ("", address)
    ):
        raise PermanentChannelError(f"{field}: not a valid email address")
    return address


def _part(message: OutboundMessage, name: str) -> str | None:
    value = message.parts.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise PermanentChannelError(f"send {message.send_key}: part '{name}' is not text")
    return value


def _meta(meta: Any, key: str, default: str | None) -> str | None:
    value = meta.get(key)
    return default if value is None else header_text(key, value)


def _mailbox(field: str, name: Any, address: str) -> Address:
    if name is None or name == "":
        return Address(addr_spec=address)
    return Address(display_name=header_text(field, name), addr_spec=address)


def _set(msg: EmailMessage, name: str, value: str | Address) -> None:
    msg[name] = value
    # What the email package parsed, with encoded words decoded, must still be one line.
    header_text(name, str(msg[name]))


def _list_headers(msg: EmailMessage, message: OutboundMessage, sender: Sender, where: str) -> None:
    meta = message.metadata
    marketing = message.kind != "transactional"  # anything not declared transactional is marketing
    url = meta.get("unsubscribe_url")
    if url is None and marketing:
        raise PermanentChannelError(
            f"{where}: a marketing email needs metadata['unsubscribe_url'] (RFC 8058 one-click)"
        )
    if meta.get("list_id") is not None:
        list_id = header_text("list_id", meta["list_id"])
        if not _DOT_ATOM.fullmatch(list_id) or "." not in list_id:
            raise PermanentChannelError("list_id: expected a dotted name like news.example.com")
        _set(msg, "List-Id", f"<{list_id}>")
    if url is not None:
        uris = [_https_uri("unsubscribe_url", url)]
        mailto = _meta(meta, "unsubscribe_mailto", sender.unsubscribe_mailto)
        if mailto is not None:
            uris.append(_mailto_uri("unsubscribe_mailto", mailto))
        _set(msg, "List-Unsubscribe", ", ".join(f"<{uri}>" for uri in uris))
        _set(msg, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    if marketing:
        _set(msg, "Auto-Submitted", "auto-generated")
        _set(msg, "Precedence", "bulk")


def _https_uri(field: str, value: Any) -> str:
    text = header_text(field, value)
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or not _uri_chars(text):
        raise PermanentChannelError(f"{field}: must be an https URL without spaces (RFC 8058)")
    return text


def _mailto_uri(field: str, value: str) -> str:
    address, _, query = value.removeprefix("mailto:").partition("?")
    uri = f"mailto:{checked_address(field, address)}" + (f"?{query}" if query else "")
    if not _uri_chars(uri):
        raise PermanentChannelError(f"{field}: not a valid mailto URI")
    return uri


def _uri_chars(uri: str) -> bool:
    return (
        uri.isascii()
        and len(uri) <= _URI_LIMIT
        and not any(c.isspace() or c in '<>",' for c in uri)
    )


def _verify(data: bytes, msg: EmailMessage, sender: str, recipient: str, where: str) -> None:
    """Parse the bytes back: the same headers in the same order, the same two addresses."""
    head = data.split(b"\r\n\r\n", 1)[0]
    parsed = BytesParser(policy=email_policy.SMTP).parsebytes(data, headersonly=True)
    if (
        b"\n" in head.replace(b"\r\n", b"")
        or b"\r" in head.replace(b"\r\n", b"")
        or [k.lower() for k in parsed.keys()] != [k.lower() for k in msg.keys()]
        or [a for _, a in getaddresses(parsed.get_all("To", []))] != [recipient]
        or [a for _, a in getaddresses(parsed.get_all("From", []))] != [sender]
    ):
        raise PermanentChannelError(f"{where}: the serialised headers differ from the ones set")
