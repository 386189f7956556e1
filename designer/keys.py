"""The API keys page, for admins: list the keys, create one (shown once, on the page that
answers the form), revoke one.

Creating and revoking go through `engine.api_keys`, which writes the audit entry (`create` /
`revoke`, target kind `api_key`) under the admin's name in the same transaction. The key itself
is never kept in the session nor in a flash message: only the answer to the form holds it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from designer import parcours
from designer.auth import requires
from designer.forms import Choice, Form, Text, parse
from designer.i18n import gettext as _
from engine import api_keys
from engine.errors import NotFound
from engine.store.db import SQLITE_BEGIN
from engine.store.models import API_KEY_SCOPES

keys = Blueprint("keys", __name__, url_prefix="/admin/keys")


class KeyForm(Form):
    name = Text(required=True)
    scope = Choice(API_KEY_SCOPES, required=True)


def _listing(errors: dict[str, str] | None = None, form: dict[str, Any] | None = None) -> Any:
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})
        found = api_keys.list_keys(conn)
    page = render_template("keys.html", keys=found, scopes=API_KEY_SCOPES,
                           errors=errors or {}, form=form or {})  # fmt: skip
    return page, (400 if errors else 200)


@keys.get("")
@requires("admin")
def index() -> Any:
    """Every key with its scope, prefix, creation, last use and revocation; the create form."""
    return _listing()


@keys.post("")
@requires("admin")
def create() -> Any:
    """Create a key and show it, this once."""
    values, errors = parse(KeyForm(), request.form)
    name = values.get("name", "")
    if name and not api_keys.NAME.fullmatch(name):
        errors["name"] = _(
            "1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit."
        )
    if not errors:
        try:
            with parcours().engine.begin() as conn:
                secret = api_keys.create(conn, name, values["scope"], g.user.username)
        except api_keys.KeyInvalid:  # name and scope are checked above: the name is taken
            errors["name"] = _("A key of that name exists (revoked keys keep their name).")
        else:
            return render_template("key_created.html", name=name, scope=values["scope"],
                                   secret=secret)  # fmt: skip
    return _listing(errors, dict(request.form))


@keys.post("/<name>/revoke")
@requires("admin")
def revoke(name: str) -> Any:
    """Revoke a key: it answers 401 from now on; it stays listed."""
    try:
        with parcours().engine.begin() as conn:
            api_keys.revoke(conn, name, g.user.username)
    except NotFound:
        abort(404, _("No API key of that name."))
    except api_keys.KeyInvalid:
        flash(_("The key %(name)s was already revoked.", name=name), "error")
    else:
        flash(_("Key %(name)s revoked: it no longer opens the API.", name=name), "ok")
    return redirect(url_for("keys.index"))
