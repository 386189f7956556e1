"""Pages for contacts, reached from links in messages: no API key, no session, signed tokens only.

Each page is bilingual (English and French side by side) and autoescaped; a bad link gets a 400
page that says so, never a traceback.
"""

from __future__ import annotations

import ipaddress
import logging

from flask import Blueprint, Response, current_app, make_response, render_template, request
from marshmallow import validate

from designer import Parcours
from designer.forms import Form, Secret, parse
from engine.delivery.links import ExpiredLink, InvalidLink, verify
from engine.errors import IngestError, NotFound
from engine.policy.consent import ALL, DOI_MAX_AGE, DOI_SALT, confirm_double_opt_in

logger = logging.getLogger(__name__)

public = Blueprint("public", __name__)

MAX_TOKEN = 2048  # a genuine token is a few hundred characters


class LinkQuery(Form):
    """``?token=`` of a signed link, as the message carried it."""

    token = Secret(required=True, validate=validate.Length(max=MAX_TOKEN))


MESSAGES = {
    "confirmed": {
        "en": ("Subscription confirmed", "Thank you: your subscription to {what} is confirmed."),
        "fr": ("Inscription confirmée", "Merci : votre inscription à {what} est confirmée."),
    },
    "expired": {
        "en": ("Link expired", "This confirmation link has expired. Please sign up again."),
        "fr": (
            "Lien expiré",
            "Ce lien de confirmation a expiré. Merci de vous inscrire à nouveau.",
        ),
    },
    "invalid": {
        "en": (
            "Invalid link",
            "This confirmation link is not valid: it may be incomplete, or the request was "
            "withdrawn. Please copy the whole link, or sign up again.",
        ),
        "fr": (
            "Lien non valide",
            "Ce lien de confirmation n'est pas valide : il est peut-être incomplet, ou la demande "
            "a été retirée. Copiez le lien en entier, ou inscrivez-vous à nouveau.",
        ),
    },
}
EVERYTHING = {"en": "all our messages", "fr": "tous nos messages"}


def _page(outcome: str, status: int, what: dict[str, str] | None = None) -> Response:
    texts = {
        lang: (title, body.format(what=(what or EVERYTHING)[lang]))
        for lang, (title, body) in MESSAGES[outcome].items()
    }
    response = make_response(
        render_template("consent_confirm.html", outcome=outcome, texts=texts), status
    )
    # The token is a credential: keep it out of caches and of Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _client_ip() -> str | None:
    """The visitor's IP as evidence; None when the server cannot tell (a Unix socket...)."""
    try:
        return str(ipaddress.ip_address(request.remote_addr or ""))
    except ValueError:
        return None


@public.get("/consent/confirm")
def confirm_consent() -> Response:
    """Confirm a double opt-in from the link of the confirmation message."""
    parcours: Parcours = current_app.extensions["parcours"]
    asked, wrong = parse(LinkQuery(), request.args)
    if wrong:
        return _page("invalid", 400)
    token = asked["token"]
    policy = parcours.policy()
    now = parcours.clock.now()
    try:
        # Checked before the transaction too: a forged link must not even take the write lock.
        verify(parcours.secret, DOI_SALT, token, DOI_MAX_AGE, now)
        with parcours.engine.begin() as conn:
            _, _, topic = confirm_double_opt_in(
                conn, token, parcours.secret, now, _client_ip(), policy=policy
            )
    except ExpiredLink:
        return _page("expired", 400)
    except (InvalidLink, NotFound, IngestError) as exc:
        # IngestError: the topic was removed from policy.yaml since the request.
        logger.info("double opt-in refused: %s", exc)
        return _page("invalid", 400)
    label = str(policy.topics.get(topic, topic))
    what = EVERYTHING if topic == ALL else {"en": label, "fr": label}
    return _page("confirmed", 200, what)
