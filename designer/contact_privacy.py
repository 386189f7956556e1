"""A contact's personal data, for admins: download it (access and portability), or erase it.

Both actions call the engine's functions (`engine.audience.privacy`), which also write the
audit entry (`export` / `erase`, target the contact's id) under the admin's name. Erasure asks,
on a page of its own, to type the contact's external id: a wrong or missing id erases nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from designer import parcours
from designer.auth import requires
from designer.forms import Form, Text
from designer.forms import query as query_values
from designer.i18n import gettext as _
from engine.audience.privacy import MAX_REASON, erase_contact, export_contact
from engine.store.db import SQLITE_BEGIN, checkpoint
from engine.store.models import Contact

contact_privacy = Blueprint("contact_privacy", __name__)


def _live(conn: Connection, contact_id: int) -> Row[Any]:
    """The contact, or a 404 for an unknown, merged or already erased one."""
    row = conn.execute(select(Contact).where(Contact.id == contact_id)).first()
    if row is None or row.merged_into is not None or row.erased_at is not None:
        abort(404, _("No such contact: it may have been merged or erased."))
    return row


def download_name(external_id: str) -> str:
    """`<external_id>.json`, with what a file name cannot hold replaced by `_`."""
    return (re.sub(r"[^A-Za-z0-9._@+-]", "_", external_id).lstrip(".") or "contact") + ".json"


@contact_privacy.post("/privacy/contacts/<int:contact_id>/export")
@requires("admin")
def export(contact_id: int) -> Any:
    """Everything stored about the contact, as a JSON file to download (audited)."""
    with parcours().engine.begin() as conn:  # the audit entry is written with the export
        row = _live(conn, contact_id)
        data = export_contact(conn, contact_id, actor=g.user.username)
    body = json.dumps(data, ensure_ascii=False, indent=2, default=str)
    disposition = f'attachment; filename="{download_name(row.external_id)}"'
    return Response(body, mimetype="application/json", headers={"Content-Disposition": disposition})


class ErasureForm(Form):
    confirm = Text(200, load_default="")  # the external id, typed again
    reason = Text(MAX_REASON, load_default="")


@contact_privacy.route("/privacy/contacts/<int:contact_id>/erase", methods=["GET", "POST"])
@requires("admin")
def erase(contact_id: int) -> Any:
    """Explain what erasure removes and keeps; erase on POST once the external id is typed."""
    state = parcours()
    error = None
    asked = query_values(ErasureForm(), request.form)
    typed, reason = asked["confirm"], asked["reason"]
    if request.method == "POST":
        with state.engine.begin() as conn:  # a write transaction (SQLite: BEGIN IMMEDIATE)
            row = _live(conn, contact_id)
            if typed != row.external_id:
                error = _("Type the external id exactly as shown to confirm.")
            else:
                now = state.clock.now()
                erase_contact(conn, contact_id, now, actor=g.user.username, reason=reason or None)
        if error is None:
            checkpoint(state.engine)  # SQLite: the WAL no longer holds the erased pages
            flash(_("Contact erased."), "ok")
            return redirect(url_for("insights.contacts"))
    else:
        with state.engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
            row = _live(conn, contact_id)
    page = render_template("contact_erase.html", contact=row, error=error, typed=typed,
                           reason=reason)  # fmt: skip
    return page, (400 if error else 200)
