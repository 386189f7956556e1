"""Contacts (search and the 360° page) and the pressure dashboard: read-only pages for every role.

The contact page explains consent and the barometer with the engine's own functions (those that
`parcours contact show` prints), so the designer and the command line never disagree. The
dashboard's figures come from `designer.pressure_board`; this module puts them into words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from marshmallow import validate
from sqlalchemy import ColumnElement, and_, func, or_, select, true
from sqlalchemy.engine import Connection

from channels.registry import channel_names
from designer import parcours
from designer.auth import requires
from designer.forms import Form, Integer, Text
from designer.forms import query as query_values
from designer.i18n import current_language, ngettext
from designer.i18n import gettext as _
from designer.i18n_formats import number, percent, when
from designer.pressure_board import board
from designer.pressure_health import health_view
from designer.segment_files import segment_names
from engine.audience.attributes import contact_metrics, workspace_spec
from engine.audience.identity import find_contact, identifiers_of, merges_of
from engine.audience.ingest import contact_profile
from engine.audience.membership import contact_segments
from engine.policy import consent as ledger
from engine.policy.base import ADDRESS_FIELDS
from engine.policy.model import CapRule, Policy, PressureConfig
from engine.policy.pressure import explain, load_barometers
from engine.runtime.timing import zone_for
from engine.spec.attributes import AttributesSpec
from engine.spec.conditions import OVERALL, PRESSURE_STATES
from engine.store.db import SQLITE_BEGIN, id_in
from engine.store.models import (
    Contact,
    Enrollment,
    Event,
    JournalEntry,
    ScenarioRecord,
    ScenarioVersion,
    Send,
)

insights = Blueprint("insights", __name__)

PAGE = 50  # contacts per page
TIMELINE = 200  # timeline items per page


@contextmanager
def _reader() -> Iterator[Connection]:
    with parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        yield conn


# ---------------------------------------------------------------- words


def state_label(state: str) -> str:
    labels = {"under": _("Under-pressure"), "equilibrium": _("Equilibrium"),
              "over": _("Over-pressure")}  # fmt: skip
    return labels.get(state, state)


def channel_label(channel: str | None) -> str:
    labels = {OVERALL: _("All channels"), "email": _("Email"), "sms": _("SMS"), "push": _("Push"),
              "onsite": _("On-site"), "mail": _("Paper mail"), "call": _("Call centre"),
              "webhook": _("Webhook"), "marketing": _("Marketing")}  # fmt: skip
    return labels.get(channel or "", channel or "—")


def consent_label(state: str) -> str:
    labels = {"opted_in": _("Opted in"), "opted_out": _("Opted out"), "pending": _("Pending"),
              "expired": _("Expired"), "unknown": _("Unknown"),
              "opt_out_mode": _("Allowed by default")}  # fmt: skip
    return labels.get(state, state)


def reason_label(reason: str | None) -> str:
    """A journal reason (a rule id such as ``cap:email-week``) in words."""
    if not reason:
        return ""
    kind, _sep, rest = reason.partition(":")
    expired = rest.endswith(":expired")
    rest = rest.removesuffix(":expired")
    tightened = rest.endswith(":tightened")  # a cap a raised health signal tightened
    rest = rest.removesuffix(":tightened")
    if kind == "consent":
        topic, _sep, state = rest.rpartition(":")
        topics = parcours().policy().topics
        topic = _("every topic") if topic in ("all", OVERALL) else topics.get(topic, topic)
        text = _("Consent (%(topic)s): %(state)s", topic=topic, state=consent_label(state))
    elif kind in ("cap", "quiet", "spacing", "suppression", "address"):
        words = {"cap": _("Frequency cap %(rule)s"), "quiet": _("Quiet hours %(rule)s"),
                 "spacing": _("Spacing between sends (%(rule)s)"),
                 "suppression": _("Suppressed address (%(rule)s)"),
                 "address": _("Missing address (%(rule)s)")}  # fmt: skip
        text = words[kind] % {"rule": rest}
        if tightened:
            text = _("%(reason)s, tightened by a health signal", reason=text)
    elif kind == "blackout":  # blackout:year-end, with the reason the policy gives it
        why = next((b.reason for b in parcours().policy().blackouts if b.id == rest), None)
        text = _("Blackout dates %(rule)s", rule=rest)
        text = _("%(rule)s: %(why)s", rule=text, why=why) if why else text
    elif reason.startswith("pressure:over"):  # pressure:over:weight>=1
        text = _("Over-pressure")
    elif reason in ENTRY_REFUSALS:
        return entry_refusal_label(reason)
    elif reason in ("merged", "erased"):  # a journey ended by a merge or an erasure
        return _("Contact merged into another") if reason == "merged" else _("Contact erased")
    else:
        return reason
    return _("%(reason)s, waited too long", reason=text) if expired else text


ENTRY_REFUSALS = ("audience", "already_active", "reentry_never", "cooldown", "contact_missing")


def entry_refusal_label(reason: str) -> str:
    """Why a contact did not enter a journey (`engine.worker.enroll`), in words."""
    labels = {"audience": _("Not in the audience"), "already_active": _("Already in the journey"),
              "reentry_never": _("Entered once already; the journey allows no re-entry"),
              "cooldown": _("Entered too recently to enter again"),
              "contact_missing": _("Unknown contact")}  # fmt: skip
    return labels.get(reason, reason)


def journal_label(kind: str) -> str:
    labels = {"entered": _("Entered the journey"), "skipped_entry": _("Entry refused"),
              "step": _("Step"), "woken": _("Woken"), "decision": _("Send held back"),
              "error": _("Error"), "completed": _("Journey finished"),
              "converted": _("Goal reached"), "exited": _("Left the journey"),
              "failed": _("Journey failed"), "send": _("Send"),
              "cancelled": _("Send cancelled"), "merged": _("Merge")}  # fmt: skip
    return labels.get(kind, kind)


def merge_source_label(source: str | None) -> str:
    """Where a merge came from (`contact_merges.source`), in words."""
    labels = {"identify": _("identified by an event"), "cli": _("command line"),
              "api": _("API"), "designer": _("designer")}  # fmt: skip
    return labels.get(source or "", source or "—")


def identifier_label(kind: str) -> str:
    """An identifier kind in words; a declared kind shows its name."""
    labels = {"external_id": _("External id"), "email": _("Email"), "phone": _("Phone"),
              "anonymous_id": _("Anonymous web id"),
              "loyalty_card": _("Loyalty card")}  # fmt: skip
    return labels.get(kind, kind)


def status_label(status: str) -> str:
    labels = {"active": _("In progress"), "completed": _("Finished"),
              "converted": _("Goal reached"), "exited": _("Left"), "failed": _("Failed"),
              "queued": _("Queued"), "sent": _("Sent"), "delivered": _("Delivered"),
              "bounced": _("Bounced"), "ambiguous": _("Uncertain"),
              "cancelled": _("Cancelled")}  # fmt: skip
    return labels.get(status, status)


def computed_labels() -> dict[str, dict[str, str]]:
    """Lifecycle stages and RFM classes (engine/spec/attributes.py) in words."""
    stages = {"prospect": _("Prospect"), "first_purchase": _("First purchase"),
              "repeat": _("Repeat customer"), "loyal": _("Loyal"), "premium": _("Premium"),
              "at_risk": _("At risk"), "dormant": _("Dormant"), "lost": _("Lost")}  # fmt: skip
    classes = {"champions": _("Champions"), "loyal": _("Loyal"),
               "potential_loyalists": _("Potential loyalists"),
               "new_customers": _("New customers"), "promising": _("Promising"),
               "need_attention": _("Need attention"), "about_to_sleep": _("About to sleep"),
               "at_risk": _("At risk"), "cant_lose_them": _("Can't lose them"),
               "hibernating": _("Hibernating"), "lost": _("Lost")}  # fmt: skip
    return {"stages": stages, "classes": classes}


def span(delta: timedelta) -> str:
    """A duration in words: 7 days, 12 hours, 30 minutes."""
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return ngettext("%(num)s day", "%(num)s days", seconds // 86400)
    if seconds % 3600 == 0:
        return ngettext("%(num)s hour", "%(num)s hours", seconds // 3600)
    return ngettext("%(num)s minute", "%(num)s minutes", round(seconds / 60))


def _zone() -> Any:
    return zone_for(None, parcours().settings.timezone)


def ago(instant: datetime | None) -> str:
    if instant is None:
        return "—"
    seconds = (parcours().clock.now() - instant).total_seconds()
    if seconds < 60:
        return _("just now")
    if seconds < 3600:
        return _("%(n)s min ago", n=int(seconds // 60))
    if seconds < 86400:
        return _("%(n)s h ago", n=int(seconds // 3600))
    return _("%(n)s d ago", n=int(seconds // 86400))


@insights.context_processor
def _helpers() -> dict[str, Any]:
    return {"state_label": state_label, "channel_label": channel_label, "when": when, "ago": ago,
            "consent_label": consent_label, "reason_label": reason_label, "number": number,
            "journal_label": journal_label, "status_label": status_label, "span": span,
            "percent": percent, "merge_source_label": merge_source_label,
            "identifier_label": identifier_label}  # fmt: skip


# ---------------------------------------------------------------- contacts


def _in(column: Any, ids: list[int], conn: Connection) -> ColumnElement[bool]:
    return id_in(column, ids, conn.dialect.name)


def _like(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text) + "%"


def matching(q: str) -> ColumnElement[bool]:
    """External id (exact or prefix), email (prefix, any case) or phone (prefix, also typed as a
    national number with its leading 0)."""
    found = [
        Contact.external_id == q,
        Contact.external_id.like(_like(q), escape="\\"),
        func.lower(Contact.email).like(_like(q.lower()), escape="\\"),
    ]
    digits = re.sub(r"[\s.()-]", "", q)
    if re.fullmatch(r"\+?\d{3,}", digits):
        found.append(Contact.phone.like(_like(digits), escape="\\"))
        if digits.startswith("0"):  # national form: after a country code of 1 to 3 digits
            found += [Contact.phone.like(f"+{'_' * n}{digits[1:]}%") for n in (1, 2, 3)]
    return or_(*found)


class ContactPageQuery(Form):
    merged_from = Text(200, load_default="")  # the id just merged into this contact
    before = Text(200, load_default="")  # the timeline position to continue from


class ContactSearch(Form):
    q = Text(320, load_default="")
    page = Integer(load_default=1, validate=validate.Range(min=1, error="positive"))


@insights.get("/contacts")
@requires("viewer")
def contacts() -> Any:
    """Search by external id, email or phone; without a query, the latest updated contacts."""
    asked = query_values(ContactSearch(), request.args)
    q, page = asked["q"], asked["page"]
    state = parcours()
    now = state.clock.now()
    # merged tombstones and erased contacts are not people any more: never listed
    live = Contact.merged_into.is_(None) & Contact.erased_at.is_(None)
    where = (matching(q) if q else true()) & live
    with _reader() as conn:
        total = conn.execute(select(func.count()).select_from(Contact).where(where)).scalar_one()
        rows = conn.execute(
            select(Contact)
            .where(where)
            .order_by(Contact.updated_at.desc(), Contact.id.desc())
            .limit(PAGE)
            .offset((page - 1) * PAGE)
        ).all()
        ids = [r.id for r in rows]
        barometers = load_barometers(conn, ids, now, state.policy().pressure)
        active: dict[int, int] = {
            cid: n
            for cid, n in conn.execute(
                select(Enrollment.contact_id, func.count())
                .where(_in(Enrollment.contact_id, ids, conn), Enrollment.status == "active")
                .group_by(Enrollment.contact_id)
            )
        }
        latest = (
            select(Event.contact_id, func.max(Event.occurred_at).label("at"))
            .where(_in(Event.contact_id, ids, conn))
            .group_by(Event.contact_id)
            .subquery()
        )
        last = {
            r.contact_id: r
            for r in conn.execute(
                select(Event.contact_id, Event.name, Event.occurred_at).join(
                    latest,
                    (Event.contact_id == latest.c.contact_id) & (Event.occurred_at == latest.c.at),
                )
            )
        }
    people = [
        {"row": r, "state": barometers[r.id].reading().state, "active": active.get(r.id, 0),
         "last": last.get(r.id)}
        for r in rows
    ]  # fmt: skip
    pages = max(1, math.ceil(total / PAGE))
    return render_template("contacts.html", q=q, people=people, total=total, page=page, pages=pages)


def _cursor(text: str | None) -> tuple[datetime, int, int] | None:
    """The timeline position `iso~rank~id` to continue from (older items only)."""
    try:
        at, rank, ident = (text or "").split("~")
        found = datetime.fromisoformat(at)
        return (found if found.tzinfo else found.replace(tzinfo=UTC)), int(rank), int(ident)
    except ValueError:
        return None


def _older(at: Any, ident: Any, rank: int, cursor: tuple[datetime, int, int] | None) -> Any:
    """Items strictly before `cursor` in (at, rank, id) order, for a source of rank `rank`."""
    if cursor is None:
        return true()
    t, r, i = cursor
    if rank != r:
        return at <= t if rank < r else at < t
    return or_(at < t, and_(at == t, ident < i))


def timeline(
    conn: Connection, contact_id: int, cursor: tuple[datetime, int, int] | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Events, journal entries and messages of the contact, newest first, one page of them."""
    # Journal entries are read by contact (indexed with the time), so that refused entries,
    # which have no enrollment, show too; a send's own entry is left out, as the message is shown.
    sources: list[tuple[str, Any, Any, Any]] = [
        ("event", Event, Event.occurred_at, Event.contact_id == contact_id),
        ("journal", JournalEntry, JournalEntry.at,
         (JournalEntry.contact_id == contact_id) & (JournalEntry.kind != "send")),
        ("message", Send, Send.created_at, Send.contact_id == contact_id),
    ]  # fmt: skip
    items: list[dict[str, Any]] = []
    for rank, (kind, model, at, where) in enumerate(sources):
        query = (
            select(model)
            .where(where, _older(at, model.id, rank, cursor))
            .order_by(at.desc(), model.id.desc())
            .limit(TIMELINE + 1)
        )
        for r in conn.execute(query):
            item = {**r._asdict(), "type": kind, "key": (getattr(r, at.key), rank, r.id)}
            if kind == "message":
                parts = (r.payload or {}).get("parts") or {}
                found = (
                    str(parts[k]) for k in ("subject", "title", "text", "body") if parts.get(k)
                )
                item["headline"] = next(found, "")[:140]
            items.append(item)
    items.sort(key=lambda item: item["key"], reverse=True)
    page, more = items[:TIMELINE], len(items) > TIMELINE
    for item in page:
        item["at"] = item["key"][0]
    if not more:
        return page, None
    at_, rank_, ident = page[-1]["key"]
    return page, f"{at_.astimezone(UTC).isoformat()}~{rank_}~{ident}"


def _scenario_names(
    conn: Connection, journeys: Sequence[Any], items: list[dict[str, Any]]
) -> dict[str, str]:
    """Journey names by id, also for journeys the contact was refused from (no enrollment)."""
    names = {j.scenario_id: j.name or j.scenario_id for j in journeys}
    others = {it["scenario_id"] for it in items if it.get("scenario_id")} - set(names)
    if others:
        query = select(ScenarioRecord.id, ScenarioRecord.name)
        for sid, name in conn.execute(query.where(ScenarioRecord.id.in_(sorted(others)))):
            names[sid] = name or sid
    return names


def reachability(conn: Connection, contact: Any, policy: Policy, now: datetime) -> dict[str, Any]:
    """Whether marketing may reach the contact, per channel and topic, read as the gate reads it:
    global opt-out, then missing address, suppression, and consent."""
    snapshot = ledger.consent_snapshot(conn, [contact.id])[contact.id]
    suppressed = ledger.suppressed_addresses(conn, [contact])
    known = channel_names()
    used = set(policy.consent_defaults) | {channel for channel, _topic in snapshot}
    channels = sorted(used, key=lambda c: (known.index(c) if c in known else len(known), c))
    rows: list[dict[str, Any]] = []
    for channel in channels:
        field = ADDRESS_FIELDS.get(channel)
        cells: list[dict[str, Any]] = []
        for topic in policy.topics:
            if contact.opted_out:
                allowed, rule = False, "consent:all:opted_out"
            elif field and not getattr(contact, field):
                allowed, rule = False, f"address:{field}_missing"
            elif blocked := ledger.is_suppressed(suppressed, channel, contact):
                allowed, rule = False, blocked
            else:
                allowed, rule = ledger.effective_consent(snapshot, channel, topic, now, policy)
            cells.append({"allowed": allowed, "rule": rule, "state": rule.rpartition(":")[2]})
        rows.append({"channel": channel, "cells": cells})
    open_ = sum(any(cell["allowed"] for cell in r["cells"]) for r in rows)
    return {"topics": dict(policy.topics), "rows": rows, "open": open_}


def gauge(row: dict[str, Any], cfg: PressureConfig) -> dict[str, float]:
    """Where the score and the two thresholds sit on a 0-100 scale, for the barometer's bar."""
    low = min(-1.0, row["score"] - 0.5, cfg.under - 1.0)
    high = max(cfg.over * 1.5, row["score"] + 0.5)

    def at(value: float) -> float:
        return round(100 * float(value - low) / float(high - low), 1)

    return {"score": at(row["score"]), "under": at(cfg.under), "over": at(cfg.over)}


@insights.get("/contacts/<path:external_id>")
@requires("viewer")
def contact(external_id: str) -> Any:
    """One contact: profile, consent and its evidence, barometer, journeys, segments, timeline."""
    state = parcours()
    now, policy = state.clock.now(), state.policy()
    with _reader() as conn:
        row = conn.execute(select(Contact).where(Contact.external_id == external_id)).first()
        if row is not None and row.erased_at is not None:
            return render_template("contact.html", missing=None, erased=row.erased_at), 410
        if row is None or row.merged_into is not None:
            survivor = find_contact(conn, external_id)
            if survivor is None:
                return render_template("contact.html", missing=external_id), 404
            # The notice travels in the address, not in a flash: a request the browser sends
            # meanwhile (the favicon) may write the session cookie back without it.
            return redirect(url_for("insights.contact", external_id=survivor.external_id,
                                    merged_from=external_id))  # fmt: skip
        notices = []
        asked = query_values(ContactPageQuery(), request.args)
        absorbed = asked["merged_from"]
        found = find_contact(conn, absorbed) if absorbed and absorbed != external_id else None
        if found is not None and found.id == row.id:  # only a true merge is announced
            notices.append(("ok", _("%(absorbed)s was merged into %(survivor)s.",
                                    absorbed=absorbed, survivor=row.external_id)))  # fmt: skip
        barometer = load_barometers(conn, [row.id], now, policy.pressure)[row.id]
        pressure = explain(barometer, policy)
        journeys = conn.execute(
            select(Enrollment, ScenarioRecord.name, ScenarioVersion.number)
            .join(ScenarioRecord, ScenarioRecord.id == Enrollment.scenario_id, isouter=True)
            .join(ScenarioVersion, ScenarioVersion.id == Enrollment.version_id, isouter=True)
            .where(Enrollment.contact_id == row.id)
            .order_by(Enrollment.entered_at.desc(), Enrollment.id.desc())
        ).all()
        cursor = _cursor(asked["before"])
        items, older = timeline(conn, row.id, cursor)
        names = _scenario_names(conn, journeys, items)
        details = {
            "profile": contact_profile(row),
            "consents": ledger.consent_states(conn, row.id, now),
            "history": list(reversed(ledger.consent_history(conn, row.id))),  # newest first
            "suppressions": ledger.contact_suppressions(conn, row),
            "reach": reachability(conn, row, policy, now),
            "computed": contact_metrics(conn, row.id, _attributes_spec(state), now),
            "segments": contact_segments(conn, row.id),
            "identifiers": identifiers_of(conn, row.id),
            "merges": merges_of(conn, row.id),
        }
    barometer_rows = [(OVERALL, pressure["overall"]), *pressure["channels"].items()]
    gauges = {channel: gauge(r, policy.pressure) for channel, r in barometer_rows}
    return render_template(
        "contact.html", missing=None, contact=row, pressure=pressure, gauges=gauges,
        barometer_rows=barometer_rows, journeys=journeys, names=names, items=items, older=older,
        paged=cursor is not None, cfg_half_life=policy.pressure.half_life,
        computed_words=computed_labels(), segment_names=segment_names(), notices=notices,
        now=now, **details,
    )  # fmt: skip


def _attributes_spec(state: Any) -> AttributesSpec:
    # a broken declaration (lint says why) still lists the purchases, as the defaults read them
    return workspace_spec(state.settings.scenarios_dir) or AttributesSpec()


# ---------------------------------------------------------------- pressure dashboard


def _period(cap: CapRule) -> str:
    """The span a cap counts over, in words."""
    if cap.calendar == "day":
        return _("calendar day")
    if cap.calendar == "week":
        return _("calendar week")
    return span(cap.window) if cap.window else ""


def dashboard(conn: Connection, now: datetime, policy: Policy) -> dict[str, Any]:
    """Everything the pressure page draws: the board's figures, with their words."""
    zone = _zone()
    data = board(conn, now, policy, zone)
    data["health"] = health_view(conn, now, policy, zone)
    periods = {cap.id: _period(cap) for cap in policy.caps}
    for cap in data["sends"]["caps"]:
        cap["period"] = periods[cap["id"]]
    for row in data["reasons"]:
        row["label"] = reason_label(row["reason"])
    channels = [*data["barometer"]["channels"], *data["sends"]["channels"], "marketing"]
    return {
        **data,
        "lang": current_language(),
        "zone": str(zone),
        "labels": {
            "channels": {c: channel_label(c) for c in channels},
            "states": {s: state_label(s) for s in PRESSURE_STATES},
            "contacts": _("Contacts"), "sends": _("Marketing sends"), "blocked": _("Held back"),
            "ceiling": _("Daily ceiling %(cap)s"),
        },
    }  # fmt: skip


@insights.get("/pressure")
@requires("viewer")
def pressure() -> Any:
    """Barometer states, sends per day against the caps, why sends were held back."""
    state = parcours()
    policy = state.policy()
    with _reader() as conn:
        data = dashboard(conn, state.clock.now(), policy)
    return render_template("pressure.html", data=data, cfg=policy.pressure)
