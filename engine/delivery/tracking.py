"""The contact-facing links of an email: unsubscribe, preferences, open pixel and tracked clicks.

Every link is a signed token (`engine.delivery.links`) with its own salt, so a token made for one
purpose is refused by every other one. Tokens are signed, not encrypted: they carry ids (contact,
send key) and, for a tracked click, the target address, never an email address.

A tracked click redirects only to the address inside its token: nothing in the request can
choose the destination, so the click endpoint is never an open redirect.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from engine.delivery.links import InvalidLink, sign, verify

UNSUBSCRIBE_SALT = "parcours-unsubscribe"
PREFERENCES_SALT = "parcours-preferences"
CLICK_SALT = "parcours-click"
OPEN_SALT = "parcours-open"
# CAN-SPAM: an opt-out must work at least 30 days after the message was sent.
UNSUBSCRIBE_MAX_AGE = timedelta(days=60)
PREFERENCES_MAX_AGE = timedelta(days=60)
# Tracking links are kept for a limited time; an expired click still offers its destination.
CLICK_MAX_AGE = timedelta(days=180)
OPEN_MAX_AGE = timedelta(days=90)

UNSUBSCRIBE_PATH = "/u/"
PREFERENCES_PATH = "/p/"
OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"
MAX_TARGET = 2000  # longer targets stay untracked rather than make an unwieldy link
ALL_TOPICS = "*"

_INVALID = "This link is not valid (altered, truncated or not ours)."
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f]")

FOOTER_TEXT = (
    "Unsubscribe / Se désinscrire : {unsubscribe}\n"
    "Manage your preferences / Gérer vos préférences : {preferences}\n"
)
FOOTER_HTML = (
    '<p style="font-size:12px;line-height:1.5;color:#777777;margin:24px 0 0">'
    '<a href="{unsubscribe}" data-parcours-notrack>Unsubscribe / Se désinscrire</a> · '
    '<a href="{preferences}" data-parcours-notrack>'
    "Manage your preferences / Gérer vos préférences</a></p>"
)
PIXEL_HTML = (
    '<img src="{src}" width="1" height="1" alt="" '
    'style="display:block;width:1px;height:1px;border:0" data-parcours-pixel>'
)


@dataclass(frozen=True)
class ContactLink:
    """What an unsubscribe or preferences token names: who, on which channel, from which send.

    `topic` is the send's topic (``*`` when it had none); preference links carry ``*``.
    """

    contact_id: int
    channel: str
    topic: str
    send_key: str


@dataclass(frozen=True)
class ClickLink:
    """What a click token names: the send the link came in, and the signed destination."""

    send_key: str
    url: str


# --- tokens and addresses ----------------------------------------------------------------------


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def is_web_url(url: str) -> bool:
    """An absolute http(s) address with a host and no spaces or control characters."""
    lowered = url[:8].lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        return False
    rest = url.split("://", 1)[1]
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return bool(host) and not _UNSAFE_URL.search(url) and "\\" not in host


def _contact_payload(contact_id: int, channel: str, topic: str, send_key: str) -> dict[str, Any]:
    return {"c": int(contact_id), "ch": channel, "t": topic or ALL_TOPICS, "k": send_key}


def _contact_link(payload: Any) -> ContactLink:
    try:
        return ContactLink(
            int(payload["c"]), str(payload["ch"]), str(payload["t"]), str(payload["k"])
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidLink(_INVALID) from None


def unsubscribe_token(
    secret: str, contact_id: int, channel: str, topic: str | None, send_key: str, now: datetime
) -> str:
    """A token that unsubscribes this contact from `topic` on `channel` (valid 60 days)."""
    return sign(
        secret, UNSUBSCRIBE_SALT, _contact_payload(contact_id, channel, topic or "", send_key), now
    )


def read_unsubscribe_token(secret: str, token: str, now: datetime) -> ContactLink:
    """The link's contact, channel, topic and send; InvalidLink or ExpiredLink otherwise."""
    return _contact_link(verify(secret, UNSUBSCRIBE_SALT, token, UNSUBSCRIBE_MAX_AGE, now))


def unsubscribe_url(base_url: str, token: str) -> str:
    """The unsubscribe address: GET shows a page, POST (RFC 8058 one-click) unsubscribes."""
    return f"{_base(base_url)}{UNSUBSCRIBE_PATH}{token}"


def preferences_token(
    secret: str, contact_id: int, channel: str, send_key: str, now: datetime
) -> str:
    """A token opening this contact's preference page for `channel` (valid 60 days)."""
    payload = _contact_payload(contact_id, channel, ALL_TOPICS, send_key)
    return sign(secret, PREFERENCES_SALT, payload, now)


def read_preferences_token(secret: str, token: str, now: datetime) -> ContactLink:
    """The preference link's contact and channel; InvalidLink or ExpiredLink otherwise."""
    return _contact_link(verify(secret, PREFERENCES_SALT, token, PREFERENCES_MAX_AGE, now))


def preferences_url(base_url: str, token: str) -> str:
    """The preference page's address."""
    return f"{_base(base_url)}{PREFERENCES_PATH}{token}"


def click_url(
    base_url: str, secret: str, send_key: str, target_url: str, now: datetime | None = None
) -> str:
    """The tracked address of `target_url` (http or https only: ValueError otherwise)."""
    if not is_web_url(target_url):
        raise ValueError("only http and https addresses can be tracked")
    token = sign(secret, CLICK_SALT, {"k": send_key, "u": target_url}, now)
    return f"{_base(base_url)}{CLICK_PATH}{token}"


def read_click_token(
    secret: str, token: str, now: datetime, max_age: timedelta | None = CLICK_MAX_AGE
) -> ClickLink:
    """The signed send key and destination; InvalidLink if forged or not a web address."""
    payload = verify(secret, CLICK_SALT, token, max_age, now)
    try:
        link = ClickLink(str(payload["k"]), str(payload["u"]))
    except (KeyError, TypeError, ValueError):
        raise InvalidLink(_INVALID) from None
    if not is_web_url(link.url):  # never redirect to javascript:, data: or a relative path
        raise InvalidLink(_INVALID)
    return link


def open_pixel_url(base_url: str, secret: str, send_key: str, now: datetime | None = None) -> str:
    """The address of the one-pixel image that reports an open of this send."""
    token = sign(secret, OPEN_SALT, {"k": send_key}, now)
    return f"{_base(base_url)}{OPEN_PATH}{token}"


def read_open_token(secret: str, token: str, now: datetime) -> str:
    """The send key of an open pixel; InvalidLink or ExpiredLink otherwise."""
    payload = verify(secret, OPEN_SALT, token, OPEN_MAX_AGE, now)
    try:
        return str(payload["k"])
    except (KeyError, TypeError):
        raise InvalidLink(_INVALID) from None


# --- HTML rewriting ----------------------------------------------------------------------------

# One attribute of a start tag, as html.parser reads it (name, optional value).
_ATTRIBUTE = re.compile(
    r"""[\s/]*(?P<name>[^\s/>][^\s/=>]*)"""
    r"""(?:\s*=+\s*(?P<value>'[^']*'|"[^"]*"|(?!['"])[^>\s]*))?"""
)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*")


def _href_span(tag: str) -> tuple[int, int, str] | None:
    """(start, end, raw value) of the first href attribute in a raw start tag."""
    match = _TAG_NAME.match(tag)
    if match is None:
        return None
    pos = match.end()
    while pos < len(tag):
        attribute = _ATTRIBUTE.match(tag, pos)
        if attribute is None or attribute.end() == pos:
            return None
        pos = attribute.end()
        if attribute.group("name").lower() == "href" and attribute.group("value") is not None:
            start, end = attribute.span("value")
            return start, end, attribute.group("value")
    return None


def _unquote(raw: str) -> str:
    if raw[:1] in ("'", '"') and raw[-1:] == raw[:1] and len(raw) >= 2:
        raw = raw[1:-1]
    return html.unescape(raw)


class _LinkFinder(HTMLParser):
    """Finds, in the original text, the links to rewrite and the closing body tag."""

    def __init__(self, source: str, keep: Callable[[str], bool]) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.keep = keep
        self.lines = [0, *(m.end() for m in re.finditer("\n", source))]
        # (start, end, target) of each href value to replace, in document order.
        self.links: list[tuple[int, int, str]] = []
        self.body_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        names = {name for name, _ in attrs}
        if "data-parcours-notrack" in names or "href" not in names:
            return
        href = next(value for name, value in attrs if name == "href") or ""
        target = href.strip()
        if not is_web_url(target) or len(target) > MAX_TARGET or self.keep(target):
            return
        raw = self.get_starttag_text() or ""
        start = self._offset()
        span = _href_span(raw)
        # Rewrite only when the text and the parser agree on the link: never guess.
        if self.source[start : start + len(raw)] != raw or span is None:
            return
        if _unquote(span[2]).strip() != target:
            return
        self.links.append((start + span[0], start + span[1], target))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


def rewrite_html(
    document: str,
    make_click_url: Callable[[str], str] | None,
    pixel_url: str | None,
    *,
    untracked: tuple[str, ...] = (),
    footer: str = "",
) -> str:
    """`document` with each http(s) link sent through `make_click_url` (None: links stay), then
    `footer` and the open pixel put before the closing body tag (or at the end).

    Everything else is kept byte for byte. Left alone: mailto:, tel:, anchors, relative links,
    links starting with one of `untracked`, and links marked ``data-parcours-notrack``.
    """
    finder = _LinkFinder(document, lambda url: url.startswith(untracked) if untracked else False)
    finder.feed(document)
    finder.close()
    rewrite = make_click_url
    links = [(start, end, rewrite(url)) for start, end, url in finder.links] if rewrite else []
    insert_at = finder.body_end if finder.body_end is not None else len(document)
    tail = footer + (PIXEL_HTML.format(src=html.escape(pixel_url)) if pixel_url else "")
    pieces: list[str] = []
    last = 0
    for start, end, tracked in links:
        if last <= insert_at < start:
            pieces.append(document[last:insert_at] + tail)
            last, tail = insert_at, ""
        pieces.append(document[last:start])
        pieces.append('"' + html.escape(tracked, quote=True) + '"')
        last = end
    if tail and last <= insert_at:
        pieces.append(document[last:insert_at] + tail)
        last = insert_at
    pieces.append(document[last:])
    return "".join(pieces)


# --- a whole message ---------------------------------------------------------------------------


def render_tracking(
    parts: Mapping[str, str],
    contact_id: int,
    channel: str,
    topic: str | None,
    send_key: str,
    base_url: str,
    secret: str,
    now: datetime,
    *,
    track: bool = True,
) -> tuple[dict[str, str], dict[str, str]]:
    """A marketing email's parts with the unsubscribe footer (text and HTML), tracked links and
    the open pixel (HTML, unless `track` is False), and the metadata for its headers.

    The metadata's ``unsubscribe_url`` is the RFC 8058 one-click address; its scheme follows
    `base_url`, and the email channel refuses anything but https, so the public address must be
    https in production.
    """
    base = _base(base_url)
    unsubscribe = unsubscribe_url(
        base, unsubscribe_token(secret, contact_id, channel, topic, send_key, now)
    )
    preferences = preferences_url(
        base, preferences_token(secret, contact_id, channel, send_key, now)
    )
    out = dict(parts)
    if "text" in out:
        text = out["text"].rstrip("\n")
        footer = FOOTER_TEXT.format(unsubscribe=unsubscribe, preferences=preferences)
        out["text"] = f"{text}\n\n-- \n{footer}" if text else footer
    if "html" in out:
        out["html"] = rewrite_html(
            out["html"],
            (lambda target: click_url(base, secret, send_key, target, now)) if track else None,
            open_pixel_url(base, secret, send_key, now) if track else None,
            untracked=(f"{base}{UNSUBSCRIBE_PATH}", f"{base}{PREFERENCES_PATH}"),
            footer=FOOTER_HTML.format(
                unsubscribe=html.escape(unsubscribe), preferences=html.escape(preferences)
            ),
        )
    return out, {"unsubscribe_url": unsubscribe, "preferences_url": preferences}
