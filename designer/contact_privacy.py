"""A contact's personal data, for admins: download it (access and portability), or erase it.

Both actions use the engine's functions (`engine.audience.privacy`), the same the command line
uses, and leave an audit entry naming the admin. Erasure asks, on a page of its own, to type the
contact's external id: a wrong or missing id erases nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from designer import parcours
from designer.auth import audit, requires
from designer.i18n import gettext as _
from engine.store.db import SQLITE_BEGIN
from engine.store.models import AuditEntry, Contact

contact_privacy = Blueprint("contact_privacy", __name__)

MAX_REASON = 500  # characters of the erasure's reason kept in the audit


def _live(conn: Connection, contact_id: int) -> Row[Any]:
    """The contact, or a 404 for an unknown, merged or already erased one."""
    row = conn.execute(select(Contact).where(Contact.id == contact_id)).first()
    if row is None or row.merged_into is not None or row.erased_at is not None:
        abort(404, _("No such contact: it may have been merged or erased."))
    return row


def _audited(conn: Connection, action: str, contact_id: int, since: int) -> bool:
    """Whether the engine already wrote the audit entry of `action` (an id above `since`)."""
    query = select(AuditEntry.id).where(
        AuditEntry.id > since,
        AuditEntry.action == action,
        AuditEntry.target_kind == "contact",
        AuditEntry.target_id == str(contact_id),
    )
    return conn.execute(query.limit(1)).first() is not None


def _last_audit_id(conn: Connection) -> int:
    found = conn.execute(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1)).first()
    return int(found[0]) if found else 0


def download_name(external_id: str) -> str:
    """`<external_id>.json`, with what a file name cannot hold replaced by `_`."""
    return (re.sub(r"[^A-Za-z0-9._@+-]", "_", external_id).lstrip(".") or "contact") + ".json"


@contact_privacy.post("/privacy/contacts/<int:contact_id>/export")
@requires("admin")
def export(contact_id: int) -> Any:
    """Everything stored about the contact, as a JSON file to download."""
    from engine.audience import privacy  # TEMP until h-privacy merges

    with Session(parcours().engine) as db, db.begin():
        conn = db.connection()
        row = _live(conn, contact_id)
        since = _last_audit_id(conn)
        data = privacy.export_contact(conn, contact_id)
        if not _audited(conn, "export", contact_id, since):
            audit(db, "export", "contact", str(contact_id))
    body = json.dumps(data, ensure_ascii=False, indent=2, default=str, sort_keys=False)
    disposition = f'attachment; filename="{download_name(row.external_id)}"'
    return Response(body, mimetype="application/json", headers={"Content-Disposition": disposition})


@contact_privacy.route("/privacy/contacts/<int:contact_id>/erase", methods=["GET", "POST"])
@requires("admin")
def erase(contact_id: int) -> Any:
    """Explain what erasure removes and keeps; erase on POST once the external id is typed."""
    state = parcours()
    error = None
    typed = request.form.get("confirm", "").strip()
    reason = request.form.get("reason", "").strip()[:MAX_REASON]
    if request.method == "POST":
        with Session(state.engine) as db, db.begin():
            conn = db.connection()  # a write transaction (SQLite: BEGIN IMMEDIATE)
            row = _live(conn, contact_id)
            if typed != row.external_id:
                error = _("Type the external id exactly as shown to confirm.")
            else:
                from engine.audience import privacy  # TEMP until h-privacy merges

                since = _last_audit_id(conn)
                actor = g.user.username
                privacy.erase_contact(
                    conn, contact_id, state.clock.now(), actor=actor, reason=reason or None
                )
                if not _audited(conn, "erase", contact_id, since):
                    audit(db, "erase", "contact", str(contact_id), reason=reason)
        if error is None:
            flash(_("Contact erased."), "ok")
            return redirect(url_for("insights.contacts"))
    else:
        with state.engine.connect() as conn:
            conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
            row = _live(conn, contact_id)
    page = render_template(
        "contact_erase.html", contact=row, error=error, typed=typed, reason=reason
    )
    return page, (400 if error else 200)
