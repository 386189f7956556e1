"""The JSON API under /api: events in, contact profiles and consents, suppressions, manual
entries, health.

Every route but ``/api/health`` needs an API key (``X-Api-Key`` or ``Authorization: Bearer``)
whose scope allows it (`authenticate`, designer.api_scope). Errors are RFC 9457 problems (see
`designer.rest`); the schemas are in `designer.api_schemas`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from datetime import datetime
from typing import Any, NoReturn

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.engine import Connection

from designer import ApiError, Parcours, api_rate
from designer import api_schemas as schemas
from designer.api_scope import allows, scope_needed
from designer.jsonbody import json_body
from designer.rest import RestBlueprint, body, header, problems
from engine.api_keys import Verified
from engine.api_keys import any_active as any_active_key
from engine.api_keys import verify as verify_key
from engine.audience.contact_upsert import (
    CREATED,
    clean_contact_body,
    identifiers_taken,
    upsert_rows,
)
from engine.audience.identity import (
    find_contact,
    identifiers_of,
)
from engine.audience.ingest import (
    RowInvalid,
    clean_event,
    contact_profile,
    parse_instant,
    record_events,
)
from engine.audience.membership import contact_segments
from engine.delivery.channel_config import delivering_channels
from engine.errors import ScenarioInvalid
from engine.policy.consent import (
    OPTED_IN,
    ConsentInvalid,
    check_consent,
    consent_history,
    consent_states,
    contact_suppressions,
    normalize_address,
    record_consent,
    subscribe,
    suppress,
)
from engine.policy.model import Policy
from engine.spec.identity_settings import current_identity
from engine.store.db import SQLITE_BEGIN
from engine.store.models import (
    ConsentRecord,
    Contact,
    Enrollment,
    Event,
    Suppression,
)
from engine.worker.enroll import Candidate, enroll

logger = logging.getLogger(__name__)

api = RestBlueprint("api", __name__, url_prefix="/api", tag="contacts")

MAX_BATCH = 1000  # events per POST, contacts per manual entry
RECENT_EVENTS = 50
RECENT_ENROLLMENTS = 100
MAX_IDEMPOTENCY_KEY = 200  # leaves room for the ":<index>" of a batch within the 255 of event_key
ENTRY_KEY_ROOM = 128 - len("manual:")  # enrollments.entry_key is 128 characters
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]+")  # visible ASCII, as in the IETF draft's examples
IDEMPOTENCY_HEADER = header(
    "Idempotency-Key",
    "A replayed request with the same key does nothing twice.",
    type="string",
    pattern=r"^[\x21-\x7e]{1,200}$",
)


def _parcours() -> Parcours:
    parcours: Parcours = current_app.extensions["parcours"]
    return parcours


def _invalid(message: str, field: str | None = None, code: str = "invalid") -> NoReturn:
    raise ApiError(422, code, message, field)


@api.before_request
def authenticate() -> None:
    """Require an API key (``X-Api-Key: <key>`` or ``Authorization: Bearer <key>``) whose scope
    allows the route (designer.api_scope). PARCOURS_API_KEY is an admin key; other keys are
    those of `parcours keys` (engine.api_keys). The API is closed (503) while there is none."""
    if request.endpoint == "api.health":
        return
    state = _parcours()
    auth = request.authorization
    if auth is not None and auth.type == "bearer":
        header, given = "Authorization", (auth.token or "").strip()
    else:
        header, given = "X-Api-Key", request.headers.get("X-Api-Key", "").strip()
    bootstrap = state.settings.api_key
    granted: Verified | None = None
    if bootstrap and given and hmac.compare_digest(given.encode(), bootstrap.encode()):
        granted = Verified("PARCOURS_API_KEY", "admin")
    elif given:
        granted = verify_key(state.engine, given, state.clock.now())
    if granted is None:
        if not bootstrap and not any_active_key(state.engine):
            raise ApiError(
                503,
                "api_key_not_set",
                "The API is disabled because no key exists: create one with "
                "`parcours keys create NAME --scope read|write|admin` (or set PARCOURS_API_KEY).",
            )
        raise ApiError(401, "unauthorized", f"Missing, wrong or revoked key in {header}.", header)
    api_rate.check(state.settings.api_rate, granted.name)  # 429 with Retry-After over the rate
    needed = scope_needed(current_app.view_functions.get(request.endpoint or ""), request.method)
    if not allows(granted.scope, needed):
        raise ApiError(
            403,
            "insufficient_scope",
            f"This call needs a key of scope '{needed}'; the key '{granted.name}' has scope "
            f"'{granted.scope}'.",
            header,
        )
    g.api_key = granted.name  # for logs and audit entries: which key, never the key itself


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header, checked: 1 to 200 visible ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            400,
            "invalid_header",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters.",
            "Idempotency-Key",
        )
    return key


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant is not None else None


# --- events ----------------------------------------------------------------------------------


def _clean_event(raw: Any, now: datetime, where: str, key: str | None) -> dict[str, Any]:
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        _invalid("An event is a JSON object.", where or None)
    if key is not None:
        given = raw.get("event_key")
        if given not in (None, "") and str(given) != key:
            _invalid("event_key and the Idempotency-Key header differ.", f"{prefix}event_key")
        raw = {**raw, "event_key": key}
    try:
        return clean_event(raw, now)
    except RowInvalid as exc:
        _invalid(exc.message, prefix + exc.field)


def _batch_key(key: str | None, index: int, item: Any) -> str | None:
    if key is None or (isinstance(item, dict) and item.get("event_key") not in (None, "")):
        return None
    return f"{key}:{index}"


@api.post("/events", tags=["events"])
@body(schemas.EventIn, many=MAX_BATCH)
@api.response(202, schemas.EventsRecorded)
@api.doc(parameters=[IDEMPOTENCY_HEADER])
def post_events() -> tuple[dict[str, int], int]:
    """Record one event or a list of up to 1,000, all or none.

    202 with the counts recorded and duplicates.

    ``Idempotency-Key`` becomes the event's `event_key`; in a list, item *i* without its own key
    gets ``<Idempotency-Key>:<i>``, so replaying the same request records nothing twice.
    Unknown contacts are created. The worker is woken at once.
    """
    parcours = _parcours()
    now = parcours.clock.now()
    key = idempotency_key()
    body = json_body()
    if isinstance(body, list):
        if len(body) > MAX_BATCH:
            _invalid(
                f"At most {MAX_BATCH} events per request ({len(body)} sent).", None, "too_many"
            )
        events = [
            _clean_event(item, now, str(i), _batch_key(key, i, item)) for i, item in enumerate(body)
        ]
    else:
        events = [_clean_event(body, now, "", key)]
    with parcours.engine.begin() as conn:
        recorded, duplicates = record_events(conn, events, now)
    if recorded:
        parcours.notify()
    return {"recorded": recorded, "duplicates": duplicates}, 202


# --- contacts --------------------------------------------------------------------------------


def _find_contact(conn: Connection, external_id: str) -> Any:
    return conn.execute(select(Contact).where(Contact.external_id == external_id)).first()


def contact_answer(conn: Connection, contact: Any) -> dict[str, Any]:
    """A contact as the API answers it: its profile and its identifiers (JSON-ready)."""
    return {
        "contact": contact_profile(contact),
        "identifiers": [
            {**i, "created_at": _iso(i["created_at"])} for i in identifiers_of(conn, contact.id)
        ],
    }


@api.put("/contacts/<external_id>")
@body(schemas.ContactIn)
@api.response(200, schemas.ContactSaved)
@problems(409)
def put_contact(external_id: str) -> dict[str, Any]:
    """Create or update a contact.

    Given profile fields replace, attributes merge key by key.

    Fields left out (or null) keep their value. `external_id` in the body, if any, must match
    the URL. `identifiers` ({"loyalty_card": "L-1"}) are added; one another contact holds: 409.
    """
    parcours = _parcours()
    settings = current_identity(parcours.settings.scenarios_dir)
    try:
        row = clean_contact_body(json_body(), external_id, settings)
    except RowInvalid as exc:
        _invalid(exc.message[:1].upper() + exc.message[1:] + ".", exc.field or None)
    now = parcours.clock.now()
    with parcours.engine.begin() as conn:
        taken = identifiers_taken(conn, [row])
        if taken:
            kind = taken[0]
            raise ApiError(
                409,
                "identifier_taken",
                f"This {kind} already identifies another contact (POST /api/identify merges them).",
                f"identifiers.{kind}",
            )
        (status,) = upsert_rows(conn, [row], now)  # an unchanged contact is not written
        contact = find_contact(conn, external_id)  # an absorbed id names the survivor
        answer = contact_answer(conn, contact)
    return {**answer, "created": status == CREATED}


@api.get("/contacts/<external_id>")
@api.response(200, schemas.ContactDetails)
@problems(404)
def get_contact(external_id: str) -> dict[str, Any]:
    """A contact's profile, identifiers, segments, enrollments and events.

    Its 100 latest enrollments and its 50 latest events. An external id a merge absorbed
    answers the contact that absorbed it."""
    with _parcours().engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        contact = find_contact(conn, external_id)  # an absorbed id names the survivor
        if contact is None:
            raise ApiError(404, "not_found", f"No contact with external id '{external_id}'.")
        identity = contact_answer(conn, contact)
        enrollments = conn.execute(
            select(
                Enrollment.scenario_id, Enrollment.status, Enrollment.step_id, Enrollment.entered_at
            )
            .where(Enrollment.contact_id == contact.id)
            .order_by(Enrollment.entered_at.desc(), Enrollment.id.desc())
            .limit(RECENT_ENROLLMENTS)
        ).all()
        events = conn.execute(
            select(Event.name, Event.occurred_at, Event.properties)
            .where(Event.contact_id == contact.id)
            .order_by(Event.occurred_at.desc(), Event.id.desc())
            .limit(RECENT_EVENTS)
        ).all()
        segments = contact_segments(conn, contact.id)
    return {
        **identity,  # contact and identifiers
        "segments": [{"id": s, "since": _iso(since)} for s, since in segments],
        "enrollments": [
            {
                "scenario": e.scenario_id,
                "status": e.status,
                "step": e.step_id,
                "entered_at": _iso(e.entered_at),
            }
            for e in enrollments
        ],
        "events": [
            {"name": e.name, "occurred_at": _iso(e.occurred_at), "properties": e.properties or {}}
            for e in events
        ],
    }


# --- consent and suppression -----------------------------------------------------------------


def _workspace_policy(parcours: Parcours) -> Policy:
    try:
        return parcours.policy()
    except ScenarioInvalid as exc:
        logger.error("policy.yaml is invalid: %s", exc)
        raise ApiError(
            503, "policy_invalid", f"The workspace policy file is invalid: {exc}"
        ) from None


def _delivering(parcours: Parcours) -> frozenset[str]:
    """The channels a provider delivers: a confirmation queued on any other would never leave."""
    try:
        return delivering_channels(parcours.settings.scenarios_dir)
    except ScenarioInvalid as exc:
        logger.error("channels.yaml is invalid: %s", exc)
        raise ApiError(
            503, "channels_invalid", f"The workspace channels file is invalid: {exc}"
        ) from None


def _text(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            _invalid(f"'{name}' is required.", name)
        return None
    if not isinstance(value, str):
        _invalid(f"'{name}' must be a string.", name)
    return value


def _required(body: dict[str, Any], *names: str) -> list[str]:
    return [str(_text(body, name)) for name in names]


def _record(conn: Connection, record_id: int) -> dict[str, Any]:
    r = conn.execute(select(ConsentRecord).where(ConsentRecord.id == record_id)).one()
    return {
        "id": r.id,
        "channel": r.channel,
        "topic": r.topic,
        "state": r.state,
        "source": r.source,
        "at": _iso(r.at),
        "expires_at": _iso(r.expires_at),
    }


@api.post("/contacts/<external_id>/consents", tags=["consents"])
@body(schemas.ConsentIn)
@api.response(201, schemas.ConsentDone)
@api.alt_response(200, schema=schemas.ConsentDone, description="Already effective")
@api.alt_response(202, schema=schemas.ConsentDone, description="Pending confirmation")
@problems(404)
def post_consent(external_id: str) -> tuple[dict[str, Any], int]:
    """Record a consent change with its evidence.

    201 with the record.

    An opt-in from a form or the API on a double opt-in channel is recorded as ``pending`` and a
    confirmation message with a signed link goes out: 202. An opt-in that is already effective
    records nothing: 200 with ``"already": true``.
    """
    parcours = _parcours()
    body = json_body()
    if not isinstance(body, dict):
        _invalid("A consent is a JSON object: {channel, topic, state, source, ...}.")
    channel, topic, state, source = _required(body, "channel", "topic", "state", "source")
    wording = _text(body, "wording", required=False)
    wording_version = _text(body, "wording_version", required=False)
    ip = _text(body, "ip", required=False)
    evidence = body.get("evidence")
    if evidence is not None and not isinstance(evidence, dict):
        _invalid("'evidence' must be a JSON object.", "evidence")
    expires = _text(body, "expires_at", required=False)
    policy = _workspace_policy(parcours)
    # Read before the transaction opens: no file is parsed while the write lock is held.
    delivering = _delivering(parcours) if state == OPTED_IN else frozenset()
    now = parcours.clock.now()
    try:
        expires_at = parse_instant(expires, "expires_at") if expires else None
        check_consent(channel, topic, state, source, policy)
        with parcours.engine.begin() as conn:
            contact = _find_contact(conn, external_id)
            if contact is None:
                raise ApiError(404, "not_found", f"No contact with external id '{external_id}'.")
            if state == OPTED_IN:
                done = subscribe(
                    conn, contact.id, channel, topic, source, now,
                    secret=parcours.secret, base_url=parcours.public_url, wording=wording,
                    wording_version=wording_version, ip=ip, evidence=evidence,
                    expires_at=expires_at, policy=policy, delivering=delivering,
                )  # fmt: skip
                record_id, status = done.record_id, 200 if done.already else 201
                if done.confirmation is not None:
                    status = 202
            else:
                record_id = record_consent(
                    conn, contact.id, channel, topic, state, source, now,
                    wording=wording, wording_version=wording_version, ip=ip, evidence=evidence,
                    expires_at=expires_at, policy=policy,
                )  # fmt: skip
                done, status = None, 201
            result: dict[str, Any] = {"consent": _record(conn, record_id)}
    except RowInvalid as exc:
        _invalid(exc.message, exc.field)
    except ConsentInvalid as exc:
        _invalid(str(exc), exc.field)
    if done is not None and done.already:
        result["already"] = True
    if done is not None and done.confirmation is not None:
        result["confirmation"] = {"send_key": done.confirmation.send_key}
    return result, status


@api.get("/contacts/<external_id>/consents", tags=["consents"])
@api.response(200, schemas.Consents)
@problems(404)
def get_consents(external_id: str) -> dict[str, Any]:
    """A contact's consents, their history and its suppressions.

    Current consents (expired ones show as such), the full history with evidence, and the
    suppressions of the contact's addresses."""
    parcours = _parcours()
    now = parcours.clock.now()
    with parcours.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        contact = _find_contact(conn, external_id)
        if contact is None:
            raise ApiError(404, "not_found", f"No contact with external id '{external_id}'.")
        return {
            "contact": external_id,
            "consents": consent_states(conn, contact.id, now),
            "history": consent_history(conn, contact.id),
            "suppressions": contact_suppressions(conn, contact),
        }


@api.post("/suppressions", tags=["consents"])
@body(schemas.SuppressionIn)
@api.response(201, schemas.SuppressionDone)
@api.alt_response(200, schema=schemas.SuppressionDone, description="Already suppressed")
def post_suppression() -> tuple[dict[str, Any], int]:
    """Suppress an address on a channel.

    ``*`` is every channel: 201, or 200 if it already was.

    The address is an email, a phone number or ``contact:<id>``; `contact` (an external id)
    optionally links the entry to a contact.
    """
    parcours = _parcours()
    body = json_body()
    if not isinstance(body, dict):
        _invalid("A suppression is a JSON object: {channel, address, reason}.")
    channel, address, reason = _required(body, "channel", "address", "reason")
    external_id = _text(body, "contact", required=False)
    now = parcours.clock.now()
    try:
        stored, _ = normalize_address(channel, address)
        with parcours.engine.begin() as conn:
            contact_id = None
            if external_id is not None:
                contact = _find_contact(conn, external_id)
                if contact is None:
                    _invalid(f"No contact with external id '{external_id}'.", "contact")
                contact_id = contact.id
            created = suppress(conn, channel, address, reason, "api", now, contact_id)
            entry = conn.execute(
                select(Suppression).where(
                    Suppression.channel == channel, Suppression.address == stored
                )
            ).one()
    except ConsentInvalid as exc:
        _invalid(str(exc), exc.field)
    found = {
        "channel": entry.channel,
        "address": entry.address,
        "reason": entry.reason,
        "source": entry.source,
        "at": _iso(entry.at),
    }
    return {"suppression": found, "created": created}, 201 if created else 200


# --- manual entry ----------------------------------------------------------------------------


def _entry_key() -> str:
    key = idempotency_key() or uuid.uuid4().hex
    if len(key) > ENTRY_KEY_ROOM:
        key = "sha256:" + hashlib.sha256(key.encode("ascii")).hexdigest()
    return f"manual:{key}"


@api.post("/scenarios/<scenario_id>/enroll", tags=["scenarios"])
@body(schemas.EnrollIn)
@api.alt_response(200, schema=schemas.EnrollCounts, description="Contacts by outcome")
@api.doc(parameters=[IDEMPOTENCY_HEADER])
@problems(404)
def enroll_contacts(scenario_id: str) -> dict[str, int]:
    """Enter known contacts into a live scenario now.

    Into its current version; answers counts by outcome.

    Any live scenario may be entered this way, whatever its triggers (a ``manual`` trigger is
    not required); audience and entry rules still apply. The entry key is
    ``manual:<Idempotency-Key>`` (or a fresh id), so a replayed request enters nobody twice.
    """
    parcours = _parcours()
    entry_key = _entry_key()
    body = json_body()
    contacts = body.get("contacts") if isinstance(body, dict) else None
    if not isinstance(contacts, list):
        _invalid('Send {"contacts": ["<external id>", ...]}.', "contacts")
    if len(contacts) > MAX_BATCH:
        _invalid(f"At most {MAX_BATCH} contacts per request.", "contacts", "too_many")
    for i, value in enumerate(contacts):
        if not isinstance(value, str) or not value.strip() or len(value) > 255:
            _invalid(
                "An external id is a non-empty string of at most 255 characters.", f"contacts.{i}"
            )
    now = parcours.clock.now()
    with parcours.engine.begin() as conn:
        live = {scenario.id: (vid, scenario) for vid, scenario in parcours.versions.live(conn)}
        if scenario_id not in live:
            raise ApiError(404, "not_found", f"Scenario '{scenario_id}' is not live.")
        version_id, scenario = live[scenario_id]
        ids = dict(
            conn.execute(
                select(Contact.external_id, Contact.id).where(
                    Contact.external_id.in_(set(contacts))
                )
            ).all()
        )
        unknown = [c for c in dict.fromkeys(contacts) if c not in ids]
        if unknown:
            shown = ", ".join(f"'{c}'" for c in unknown[:50])
            more = f" and {len(unknown) - 50} more" if len(unknown) > 50 else ""
            _invalid(f"Unknown contacts: {shown}{more}.", "contacts", "unknown_contacts")
        candidates = [
            Candidate(version_id, scenario, ids[c], entry_key, now, source="manual", entered_at=now)
            for c in contacts
        ]
        counts = enroll(conn, candidates, now)
    if counts.get("entered"):
        parcours.notify()
    return {"entered": 0, "duplicate": 0, **counts}


# --- health ----------------------------------------------------------------------------------


@api.get("/health", tags=["health"])
@api.alt_response(200, schema=schemas.Health, description="Every check is well")
@api.alt_response(503, schema=schemas.Health, description="A check failed: degraded or down")
@api.doc(security=[])
def health() -> tuple[dict[str, Any], int]:
    """The database, the worker's heartbeat and each configured provider (see
    engine.service_health); 200 when all are well, else 503. Needs no key."""
    from engine.service_health import health_report

    parcours = _parcours()
    status, checks = health_report(parcours.engine, parcours.settings)
    return {"status": status, "checks": checks}, 200 if status == "ok" else 503
