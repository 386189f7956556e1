"""Links in marketing emails: unsubscribe (page and RFC 8058 one-click), preferences, open pixel
and tracked clicks. No session, no API key: the signed token is the only credential.

Pages show English and French side by side (the visitor's language first), carry no script,
and answer a bad or expired link with a 400 page, never a redirect or a traceback. Logs name
contacts by id only.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from typing import Any

from flask import Blueprint, Response, current_app, make_response, redirect, request, url_for
from flask import render_template as render

from designer import PUBLIC_CSP, Parcours
from designer.forms import Choice, Flag, Form, Several, Text, parse
from designer.i18n import current_language
from engine.delivery.links import ExpiredLink, InvalidLink
from engine.delivery.tracking import (
    ContactLink,
    preferences_token,
    read_click_token,
    read_open_token,
    read_preferences_token,
    read_unsubscribe_token,
)
from engine.errors import IngestError, NotFound
from engine.policy.consent import ALL
from engine.policy.engagement import preferences, record_click, record_open, save_preferences
from engine.policy.engagement import unsubscribe as record_unsubscribe

logger = logging.getLogger(__name__)

public_links = Blueprint("public_links", __name__)

MAX_TOKEN = 4096  # a click token carries its destination (at most 2,000 characters)
LANGS = ("en", "fr")
# A transparent one-pixel GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
UNSUBSCRIBE_WORDING_VERSION = "unsubscribe-page/1"
ONE_CLICK_WORDING = "List-Unsubscribe=One-Click (RFC 8058), sent by the mail client"
ONE_CLICK_WORDING_VERSION = "rfc8058/1"
PREFERENCES_WORDING_VERSION = "preference-page/1"

CHANNELS = {"email": {"en": "emails", "fr": "e-mails"}, "sms": {"en": "text messages", "fr": "SMS"}}
EVERYTHING = {"en": "all our {channel}", "fr": "tous nos {channel}"}

MESSAGES: dict[str, dict[str, tuple[str, str]]] = {
    "ask": {
        "en": ("Unsubscribe from {what}?", "You will no longer receive {what} from us."),
        "fr": ("Vous désinscrire : {what} ?", "Vous ne recevrez plus {what} de notre part."),
    },
    "done": {
        "en": ("You are unsubscribed", "You will no longer receive {what} from us."),
        "fr": ("Vous êtes désinscrit", "Vous ne recevrez plus {what} de notre part."),
    },
    "already": {
        "en": ("Already unsubscribed", "You were already unsubscribed from {what}: nothing "
               "changed."),
        "fr": ("Déjà désinscrit", "Vous étiez déjà désinscrit : {what}. Rien n'a changé."),
    },
    "preferences": {
        "en": ("Your preferences", "Choose what you want to receive from us ({channel})."),
        "fr": ("Vos préférences", "Choisissez ce que vous souhaitez recevoir ({channel})."),
    },
    "saved": {
        "en": ("Preferences saved", "Your choices are saved ({channel})."),
        "fr": ("Préférences enregistrées", "Vos choix sont enregistrés ({channel})."),
    },
    "expired": {
        "en": ("Link expired", "This link has expired."),
        "fr": ("Lien expiré", "Ce lien a expiré."),
    },
    "click_expired": {
        "en": ("Link expired", "This link has expired. The page it led to:"),
        "fr": ("Lien expiré", "Ce lien a expiré. La page vers laquelle il menait :"),
    },
    "invalid": {
        "en": ("Invalid link", "This link is not valid: it may be incomplete. Please copy the "
               "whole link from the message."),
        "fr": ("Lien non valide", "Ce lien n'est pas valide : il est peut-être incomplet. "
               "Copiez le lien en entier depuis le message."),
    },
}  # fmt: skip
LABELS = {
    "unsubscribe_topic": {"en": "Unsubscribe", "fr": "Me désinscrire"},
    "unsubscribe_all": {"en": "Unsubscribe from {all}", "fr": "Me désinscrire de {all}"},
    "preferences": {"en": "Manage my preferences", "fr": "Gérer mes préférences"},
    "all_off": {"en": "Receive nothing ({all})", "fr": "Ne rien recevoir ({all})"},
    "save": {"en": "Save", "fr": "Enregistrer"},
}


# --- helpers -----------------------------------------------------------------------------------


def _state() -> Parcours:
    found: Parcours = current_app.extensions["parcours"]
    return found


def _langs() -> tuple[str, str]:
    first = current_language()
    return ("fr", "en") if first == "fr" else ("en", "fr")


def _channel_words(channel: str) -> dict[str, str]:
    return CHANNELS.get(channel, {"en": channel, "fr": channel})


def _what(channel: str, topic: str) -> dict[str, str]:
    words = _channel_words(channel)
    if topic == ALL:
        return {lang: EVERYTHING[lang].format(channel=words[lang]) for lang in LANGS}
    label = str(_state().policy().topics.get(topic, topic))
    return {lang: f"« {label} »" if lang == "fr" else f"“{label}”" for lang in LANGS}


def _texts(outcome: str, channel: str, what: dict[str, str] | None = None) -> dict[str, Any]:
    words = _channel_words(channel)
    return {
        lang: tuple(
            text.format(what=(what or {}).get(lang, ""), channel=words[lang])
            for text in MESSAGES[outcome][lang]
        )
        for lang in LANGS
    }


def _labels(channel: str) -> dict[str, str]:
    words = _channel_words(channel)
    everything = {lang: EVERYTHING[lang].format(channel=words[lang]) for lang in LANGS}
    return {
        name: " · ".join(texts[lang].format(all=everything[lang]) for lang in _langs())
        for name, texts in LABELS.items()
    }


def _headers(response: Response) -> Response:
    # The token is a credential: keep it out of caches, Referer headers and search engines.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = PUBLIC_CSP
    return response


def _page(outcome: str, status: int, channel: str = "email", **context: Any) -> Response:
    texts = context.pop("texts", None) or _texts(outcome, channel, context.pop("what", None))
    body = render(
        "public_links.html",
        outcome=outcome,
        texts=texts,
        langs=_langs(),
        labels=_labels(channel),
        **context,
    )
    return _headers(make_response(body, status))


def _refused(exc: Exception) -> Response:
    if isinstance(exc, ExpiredLink):
        return _page("expired", 400)
    return _page("invalid", 400)


def _token_ok(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN


def _client_ip() -> str | None:
    """The visitor's IP, kept as evidence in the consent record, never logged."""
    try:
        return str(ipaddress.ip_address(request.remote_addr or ""))
    except ValueError:
        return None


def _wording(outcome: str, channel: str, what: dict[str, str]) -> str:
    return "\n".join(" ".join(_texts(outcome, channel, what)[lang]) for lang in LANGS)


def _preferences_link(link: ContactLink) -> str:
    parcours = _state()
    token = preferences_token(
        parcours.secret, link.contact_id, link.channel, link.send_key, parcours.clock.now()
    )
    return url_for("public_links.preferences_page", token=token)


# --- unsubscribe -------------------------------------------------------------------------------


@public_links.get("/u/<token>")
def unsubscribe_page(token: str) -> Response:
    """Ask before unsubscribing: mail software fetches links on its own, so GET changes nothing."""
    if not _token_ok(token):
        return _page("invalid", 400)
    parcours = _state()
    try:
        link = read_unsubscribe_token(parcours.secret, token, parcours.clock.now())
    except InvalidLink as exc:
        return _refused(exc)
    return _page(
        "ask", 200, link.channel,
        what=_what(link.channel, link.topic),
        form="unsubscribe",
        show_all=link.topic != ALL,
        preferences_url=_preferences_link(link),
    )  # fmt: skip


class UnsubscribeForm(Form):
    scope = Choice(("topic", "all"), load_default="topic")  # this topic or the whole channel


class PreferencesForm(Form):
    topic = Several(Text(100), load_default=list)  # the topics kept, one checkbox each
    all_off = Flag(load_default=False)


def _asked(form: Form) -> dict[str, Any] | None:
    """The form's values, or None when one is wrong (only a forged page sends such)."""
    values, errors = parse(form, request.form)
    return None if errors else values


def _one_click() -> bool:
    return request.form.get("List-Unsubscribe") == "One-Click"


def _short(text: str, status: int) -> Response:
    response = make_response(text + "\n", status)
    response.mimetype = "text/plain"
    return _headers(response)


@public_links.post("/u/<token>")
def unsubscribe(token: str) -> Response:
    """Unsubscribe: the page's button, or an RFC 8058 one-click POST from a mail provider."""
    one_click = _one_click()
    if not _token_ok(token):
        return _short("Invalid link.", 400) if one_click else _page("invalid", 400)
    parcours = _state()
    now = parcours.clock.now()
    try:
        link = read_unsubscribe_token(parcours.secret, token, now)
    except InvalidLink as exc:
        logger.info("unsubscribe link refused: %s", exc)
        return _short(str(exc), 400) if one_click else _refused(exc)
    asked = {"scope": "topic"} if one_click else _asked(UnsubscribeForm())
    if asked is None:
        return _page("invalid", 400)
    everything = asked["scope"] == "all"
    what = _what(link.channel, ALL if everything else link.topic)
    if one_click:
        wording, version = ONE_CLICK_WORDING, ONE_CLICK_WORDING_VERSION
    else:
        wording, version = _wording("ask", link.channel, what), UNSUBSCRIBE_WORDING_VERSION
    try:
        with parcours.engine.begin() as conn:
            done = record_unsubscribe(
                conn, link, now, everything=everything, one_click=one_click, ip=_client_ip(),
                wording=wording, wording_version=version,
            )  # fmt: skip
    except NotFound:
        logger.info("unsubscribe link for a contact that no longer exists: %s", link.contact_id)
        return _short("Invalid link.", 400) if one_click else _page("invalid", 400)
    if not done.already:
        logger.info(
            "contact %s unsubscribed from %s/%s (%s)", link.contact_id, link.channel, done.topic,
            "one-click" if one_click else "page",
        )  # fmt: skip
        parcours.notify()
    if one_click:
        return _short("Already unsubscribed." if done.already else "Unsubscribed.", 200)
    return _page(
        "already" if done.already else "done", 200, link.channel,
        what=what, preferences_url=_preferences_link(link),
    )  # fmt: skip


# --- preferences -------------------------------------------------------------------------------


def _preferences_response(link: ContactLink, outcome: str) -> Response:
    parcours = _state()
    with parcours.engine.connect() as conn:
        current = preferences(
            conn, link.contact_id, link.channel, parcours.clock.now(), parcours.policy()
        )
    return _page(
        outcome, 200, link.channel,
        form="preferences", topics=current.topics, all_off=current.all_off,
    )  # fmt: skip


@public_links.route("/p/<token>", methods=["GET", "POST"])
def preferences_page(token: str) -> Response:
    """The topics of the channel with the contact's current choices; saving records changes."""
    if not _token_ok(token):
        return _page("invalid", 400)
    parcours = _state()
    now = parcours.clock.now()
    try:
        link = read_preferences_token(parcours.secret, token, now)
    except InvalidLink as exc:
        return _refused(exc)
    if request.method == "GET":
        return _preferences_response(link, "preferences")
    asked = _asked(PreferencesForm())
    if asked is None:
        return _page("invalid", 400)
    try:
        with parcours.engine.begin() as conn:
            saved = save_preferences(
                conn, link, asked["topic"], asked["all_off"],
                now, parcours.policy(), ip=_client_ip(),
                wording=_wording("preferences", link.channel, {}),
                wording_version=PREFERENCES_WORDING_VERSION,
            )  # fmt: skip
    except (NotFound, IngestError) as exc:
        logger.info("preferences of contact %s not saved: %s", link.contact_id, exc)
        return _page("invalid", 400)
    if saved:
        logger.info("contact %s changed %d preference(s)", link.contact_id, len(saved))
        parcours.notify()
    return _preferences_response(link, "saved")


# --- tracking ----------------------------------------------------------------------------------


@public_links.get("/t/o/<token>")
def open_pixel(token: str) -> Response:
    """A transparent pixel; a genuine token records one `email_opened` per send.

    The image is answered whatever the token: a broken image in a message helps nobody.
    """
    parcours = _state()
    now = parcours.clock.now()
    if _token_ok(token) and request.method == "GET":
        try:
            send_key = read_open_token(parcours.secret, token, now)
        except InvalidLink:
            send_key = None
        if send_key is not None:
            with parcours.engine.begin() as conn:
                recorded = record_open(conn, send_key, now)
            if recorded:
                parcours.notify()
    response = make_response(PIXEL, 200)
    response.mimetype = "image/gif"
    return _headers(response)


@public_links.get("/t/c/<token>")
def click(token: str) -> Response:
    """Record `email_clicked` and redirect to the address signed in the token, and only there."""
    if not _token_ok(token):
        return _page("invalid", 400)
    parcours = _state()
    now = parcours.clock.now()
    try:
        link = read_click_token(parcours.secret, token, now)
    except ExpiredLink:
        try:  # genuine but old: show where it led instead of redirecting
            old = read_click_token(parcours.secret, token, now, max_age=None)
        except InvalidLink:
            return _page("invalid", 400)
        return _page("click_expired", 400, destination=old.url)
    except InvalidLink as exc:
        logger.info("click link refused: %s", exc)
        return _page("invalid", 400)
    if request.method == "GET":  # a HEAD from a link checker is not a click
        with parcours.engine.begin() as conn:
            recorded = record_click(conn, link.send_key, link.url, now)
        if recorded:
            parcours.notify()
    return _headers(redirect(link.url, 302))
