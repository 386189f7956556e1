"""Contacts and events in: validation, upsert by external id, append-only events.

Every row is checked on its own; a bad row is reported with its number and field and written to a
reject file by the CLI, never silently dropped, and never stops the good rows from going in.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from engine.audience.changes import PROFILE, mark_selected
from engine.audience.contacts import (
    EMAIL,
    MAX_EMAIL_LENGTH,
    PHONE,
    RowInvalid,
    check_json,
    shown,
)
from engine.runtime.timing import is_valid_zone
from engine.store.models import Contact, Event, EventInbox

PROFILE_COLUMNS = ("email", "phone", "timezone", "locale", "score", "tags", "opted_out")
EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
LOCALE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MAX_PROPERTIES_BYTES = 64 * 1024
MAX_KEY_LENGTH = 255  # external ids and event keys (the columns' size)
SCORE_RANGE = (-(2**31), 2**31 - 1)  # the score column is a 32-bit INTEGER
TRUE_WORDS = frozenset({"true", "yes", "y", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "0"})


@dataclasses.dataclass
class RowError:
    """One refused row: its number, the field at fault, why, and the row as it came."""

    row: int
    field: str
    message: str
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def format(self) -> str:
        """`row N: field: message`, for terminals and logs."""
        return f"row {self.row}: {self.field}: {self.message}"


@dataclasses.dataclass
class ImportReport:
    """Counts of one import run, and every refused row."""

    accepted: int = 0
    created: int = 0
    updated: int = 0
    duplicates: int = 0
    errors: list[RowError] = dataclasses.field(default_factory=list)


def _coerce(value: Any) -> Any:
    """CSV cells are text: turn numbers and booleans into their types, keep the rest."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    # A leading zero means an identifier (a postal code, "007"): it stays text.
    if re.fullmatch(r"-?(0|[1-9]\d{0,14})", text):
        return int(text)
    if re.fullmatch(r"-?(0|[1-9]\d*)\.\d+", text):
        return float(text)
    return text


def _key(raw: Mapping[str, Any], names: tuple[str, ...], field_name: str) -> str:
    """The first present identifier among `names`, as stripped text of at most 255 characters."""
    value = next((raw[n] for n in names if raw.get(n) not in (None, "")), "")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RowInvalid(field_name, "must be text")
    text = str(value).strip()
    if len(text) > MAX_KEY_LENGTH:
        raise RowInvalid(field_name, f"at most {MAX_KEY_LENGTH} characters")
    if "\x00" in text:
        raise RowInvalid(field_name, "contains a NUL character")
    return text


def _score(value: Any) -> int:
    number = value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d{1,15}\s*", value):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise RowInvalid("score", f"'{shown(value)}' is not a whole number")
    if not SCORE_RANGE[0] <= number <= SCORE_RANGE[1]:
        raise RowInvalid("score", f"{number} is out of range (±2147483647)")
    return number


def _flag(value: Any, field_name: str) -> bool:
    # Consent data: a value we cannot read is refused, never taken as "not opted out".
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise RowInvalid(field_name, f"'{shown(value)}' is not true or false")


CONSENT_STATES = ("opted_in", "opted_out")


def _consent_column(key: str, value: Any) -> tuple[str, str, str]:
    """`consent:<channel>:<topic>` = opted_in | opted_out (topic `*`: the whole channel)."""
    parts = key.split(":")
    state = str(value).strip().lower()
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise RowInvalid(key, "a consent column is named consent:<channel>:<topic>")
    if state not in CONSENT_STATES:
        raise RowInvalid(key, f"'{value}' is not a consent; use {' or '.join(CONSENT_STATES)}")
    return parts[1], parts[2], state


def clean_contact(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one contact row (CSV cells or JSON); raise RowInvalid naming the field.

    `identifier:<kind>` columns give identifiers (engine.audience.identity); a row without an
    external id but with identifiers updates the contact they name.
    """
    external_id = _key(raw, ("external_id", "id"), "external_id")
    identifiers = _identifier_columns(raw)
    if not external_id and not identifiers:
        raise RowInvalid(
            "external_id",
            "required (the id your systems use for this contact), or an identifier:<kind> column",
        )
    out: dict[str, Any] = {"external_id": external_id or None}
    if identifiers:
        out["identifiers"] = identifiers
    attributes: dict[str, Any] = {}
    consents: list[tuple[str, str, str]] = []
    for key, value in raw.items():
        if key in ("external_id", "id") or value is None or value == "":
            continue
        if isinstance(key, str) and key.startswith(("consent:", IDENTIFIER_COLUMN)):
            if key.startswith("consent:"):
                consents.append(_consent_column(key, value))
            continue
        if key == "email":
            email = str(value).strip()
            if len(email) > MAX_EMAIL_LENGTH or not EMAIL.fullmatch(email):
                raise RowInvalid("email", f"'{shown(value)}' is not an email address")
            out["email"] = email.lower()
        elif key == "phone":
            if not PHONE.fullmatch(str(value).strip()):
                raise RowInvalid(
                    "phone", f"'{shown(value)}' is not a phone number (use +33612345678)"
                )
            out["phone"] = re.sub(r"[ .-]", "", str(value).strip())
        elif key == "timezone":
            if not is_valid_zone(str(value)):
                raise RowInvalid(
                    "timezone", f"'{shown(value)}' is not an IANA zone (e.g. Europe/Paris)"
                )
            out["timezone"] = str(value)
        elif key == "locale":
            if not LOCALE.fullmatch(str(value).strip()):
                raise RowInvalid("locale", f"'{shown(value)}' is not a locale (e.g. fr-FR)")
            out["locale"] = str(value).strip()[:16]
        elif key == "score":
            out["score"] = _score(value)
        elif key == "tags":
            tags = value if isinstance(value, list) else re.split(r"[|;,]", str(value))
            out["tags"] = [str(t).strip() for t in tags if str(t).strip()]
        elif key == "opted_out":
            out["opted_out"] = _flag(value, "opted_out")
        elif key == "attributes" and isinstance(value, Mapping):
            attributes.update(value)
        else:
            attributes[str(key)] = _coerce(value)
    check_json(attributes, "attributes")
    check_json(out.get("tags", []), "tags")
    out["attributes"] = attributes
    if consents:
        out["consents"] = consents
    return out


IDENTIFIER_COLUMN = "identifier:"  # identifier:<kind> columns of a contacts file


def _identifier_columns(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The checked (kind, value) of the row's `identifier:<kind>` columns (empty cells skipped)."""
    from engine.audience.identity import IdentifierInvalid, clean_identifier
    from engine.spec.identity_settings import current_identity

    wanted = [
        (key, value)
        for key, value in raw.items()
        if isinstance(key, str) and key.startswith(IDENTIFIER_COLUMN) and value not in (None, "")
    ]
    if not wanted:
        return []
    settings = current_identity()
    try:
        return [clean_identifier(k[len(IDENTIFIER_COLUMN) :], v, settings, k) for k, v in wanted]
    except IdentifierInvalid as exc:
        raise RowInvalid(exc.field, exc.message) from None


def _event_identifier(raw: Mapping[str, Any]) -> tuple[str, str] | None:
    """The identifier an event names its contact by: `anonymous_id`, or `identifier`
    ({"kind", "value"}); None when it names it by external id."""
    from engine.audience.identity import IdentifierInvalid, clean_identifier
    from engine.spec.identity_settings import current_identity

    try:
        if raw.get("anonymous_id") not in (None, ""):
            return clean_identifier("anonymous_id", raw["anonymous_id"], None, "anonymous_id")
        given = raw.get("identifier")
        if given in (None, ""):
            return None
        if not isinstance(given, Mapping) or set(given) != {"kind", "value"}:
            raise RowInvalid("identifier", 'an object {"kind": ..., "value": ...}')
        kind, value = given["kind"], given["value"]
        return clean_identifier(
            kind, value, current_identity(), "identifier.kind", "identifier.value"
        )
    except IdentifierInvalid as exc:
        raise RowInvalid(exc.field, exc.message) from None


def parse_instant(value: Any, field_name: str = "occurred_at") -> datetime:
    """ISO 8601 text or an aware datetime → aware UTC datetime; naive text is taken as UTC."""
    if isinstance(value, datetime):
        instant = value
    else:
        try:
            instant = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise RowInvalid(
                field_name, f"'{shown(value)}' is not an ISO 8601 time (2025-05-17T09:00:00Z)"
            ) from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    try:
        return instant.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past the last representable year
        raise RowInvalid(field_name, f"'{shown(value)}' is out of range") from None


def clean_event(raw: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Validate one event: its contact (`contact`, the external id; or `anonymous_id`; or
    `identifier`: {"kind", "value"}: exactly one), name, properties, occurred_at, event_key."""
    contact = _key(raw, ("contact", "external_id"), "contact")
    identifier = _event_identifier(raw)
    given = [n for n in ("anonymous_id", "identifier") if raw.get(n) not in (None, "")]
    if contact:
        given.insert(0, "contact")
    if len(given) > 1:
        raise RowInvalid(given[1], f"name the contact once: {' or '.join(given)}, not both")
    if not contact and identifier is None:
        raise RowInvalid(
            "contact",
            'required: the contact\'s external id (or "anonymous_id", or "identifier": '
            '{"kind", "value"})',
        )
    name = str(raw.get("name") or "")
    if not EVENT_NAME.fullmatch(name):
        raise RowInvalid("name", f"'{shown(name)}' is not an event name (letters, digits, _ . : -)")
    properties = raw.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise RowInvalid("properties", "must be an object")
    check_json(properties, "properties")
    if len(json.dumps(properties, ensure_ascii=False)) > MAX_PROPERTIES_BYTES:
        raise RowInvalid("properties", "larger than 64 KiB")
    occurred = parse_instant(raw["occurred_at"]) if raw.get("occurred_at") else now
    # Refused rather than cut: two long keys sharing a prefix must not collide as duplicates.
    key = _key(raw, ("event_key",), "event_key") or None
    cleaned: dict[str, Any] = {
        "contact": contact or None,
        "name": name,
        "properties": dict(properties),
        "occurred_at": occurred,
        "event_key": key,
    }
    if identifier is not None and not contact:
        cleaned["identifier"] = identifier
    return cleaned


def _insert_ignoring(conn: Connection, table: type[Contact] | type[Event], column: str) -> Any:
    """INSERT … ON CONFLICT (column) DO NOTHING: a row a concurrent transaction wrote is skipped."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[column])
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=[column])


def _locked_contacts(conn: Connection, external_ids: list[str]) -> dict[str, Any]:
    # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers) so two
    # concurrent merges of the same contact's attributes cannot lose one another's keys.
    query = (
        select(Contact.id, Contact.external_id, Contact.attributes)
        .where(Contact.external_id.in_(external_ids))
        .with_for_update()
    )
    return {r.external_id: r for r in conn.execute(query)}


def upsert_contacts(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> tuple[int, int]:
    """Insert or update cleaned contacts by external id, merging attributes: (created, updated)."""
    if not rows:
        return 0, 0
    rows = _named_contacts(conn, rows, now)
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:  # later rows for the same contact win, attributes merge
        # consents: see record_imported_consents; identifiers: registered below
        row = {k: v for k, v in row.items() if k not in ("consents", "identifiers")}
        prev = merged.get(row["external_id"])
        if prev:
            row = {**prev, **row, "attributes": {**prev["attributes"], **row["attributes"]}}
        merged[row["external_id"]] = row
    existing = _locked_contacts(conn, list(merged))
    defaults: dict[str, Any] = dict.fromkeys(("email", "phone", "timezone", "locale"))
    defaults.update(score=0, tags=[], opted_out=False)
    new = [
        {**defaults, **row, "created_at": now, "updated_at": now}
        for key, row in merged.items()
        if key not in existing
    ]
    created = 0
    if new:
        stmt = _insert_ignoring(conn, Contact, "external_id").returning(Contact.external_id)
        inserted = set(conn.execute(stmt, new).scalars())
        created = len(inserted)
        raced = [row["external_id"] for row in new if row["external_id"] not in inserted]
        if raced:  # created by a concurrent transaction since we looked: update them instead
            existing.update(_locked_contacts(conn, raced))
    for key, row in merged.items():
        if key in existing:
            current = existing[key]
            values = {k: row[k] for k in PROFILE_COLUMNS if k in row}
            values["attributes"] = {**(current.attributes or {}), **row["attributes"]}
            values["updated_at"] = now
            conn.execute(update(Contact).where(Contact.id == current.id).values(**values))
    # the segments reading profiles refresh these contacts (engine.audience.changes)
    touched = select(Contact.id).where(Contact.external_id.in_(list(merged)))
    mark_selected(conn, touched, PROFILE, now)
    _register_identifiers(conn, rows, now)
    return created, len(merged) - created


def _named_contacts(
    conn: Connection, rows: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """The rows, each with the external id of the live contact it names: an external id a merge
    absorbed names the survivor; a row with identifiers only names the contact holding the
    first one that names someone (an anonymous contact is created when none does)."""
    from engine.audience.identity import ensure_contacts, resolve
    from engine.spec.identity_settings import EXTERNAL_ID

    externals = [(EXTERNAL_ID, r["external_id"]) for r in rows if r.get("external_id")]
    bare = [r for r in rows if not r.get("external_id")]
    pairs = [p for r in bare for p in r["identifiers"]]
    found = resolve(conn, externals) if externals else {}
    if bare:
        found.update(resolve(conn, pairs))
        unnamed = [
            r["identifiers"][0] for r in bare if not any(p in found for p in r["identifiers"])
        ]
        if unnamed:
            found.update(ensure_contacts(conn, unnamed, now, "import"))
    ids = set(found.values())
    names = dict(conn.execute(select(Contact.id, Contact.external_id).where(
        Contact.id.in_(list(ids)))).all()) if ids else {}  # fmt: skip
    out = []
    for r in rows:
        if r.get("external_id"):
            cid = found.get((EXTERNAL_ID, r["external_id"]))
        else:
            cid = next(found[p] for p in r["identifiers"] if p in found)
        out.append({**r, "external_id": names[cid]} if cid is not None else r)
    return out


def _register_identifiers(conn: Connection, rows: list[dict[str, Any]], now: datetime) -> None:
    """Register the rows' identifiers on their contacts (one already held stays where it is:
    identify merges the contacts it names)."""
    wanted = [r for r in rows if r.get("identifiers")]
    if not wanted:
        return
    from engine.audience.identity import insert_ignoring
    from engine.store.models import ContactIdentifier

    ids = dict(conn.execute(select(Contact.external_id, Contact.id).where(
        Contact.external_id.in_([r["external_id"] for r in wanted]))).all())  # fmt: skip
    values = {
        (k, v): {"contact_id": ids[r["external_id"]], "kind": k, "value": v, "source": "import",
                 "created_at": now}
        for r in wanted for k, v in r["identifiers"]
    }  # fmt: skip
    conn.execute(insert_ignoring(conn, ContactIdentifier, ["kind", "value"]), list(values.values()))


def contact_ids(conn: Connection, external_ids: Iterable[str], now: datetime) -> dict[str, int]:
    """Map external ids to live contact ids, creating bare contacts for the unknown ones. An
    external id a merge absorbed maps to the contact that absorbed it."""
    from engine.audience.identity import resolve
    from engine.spec.identity_settings import EXTERNAL_ID

    wanted = set(external_ids)
    # One read for the usual case, a live contact under its own external id; the others
    # (unknown, merged, erased, an absorbed contact's id) go through `resolve`.
    found: dict[str, int] = {}
    if wanted:
        query = select(Contact.external_id, Contact.id).where(
            Contact.external_id.in_(list(wanted)),
            Contact.merged_into.is_(None),
            Contact.erased_at.is_(None),
        )
        found.update({str(e): int(i) for e, i in conn.execute(query)})
    unsure = wanted - set(found)
    if unsure:
        live = resolve(conn, [(EXTERNAL_ID, e) for e in unsure])
        found.update({e: live[(EXTERNAL_ID, e)] for e in unsure if (EXTERNAL_ID, e) in live})
    missing = wanted - set(found)
    if missing:
        upsert_contacts(conn, [{"external_id": e, "attributes": {}} for e in sorted(missing)], now)
        found.update(conn.execute(select(Contact.external_id, Contact.id).where(
            Contact.external_id.in_(list(missing)))).all())  # fmt: skip
    return {str(k): int(v) for k, v in found.items()}


def record_events(conn: Connection, events: list[dict[str, Any]], now: datetime) -> tuple[int, int]:
    """Append cleaned events and queue them for the trigger pass. Returns (recorded, duplicates)."""
    if not events:
        return 0, 0
    keys = [e["event_key"] for e in events if e["event_key"]]
    seen: set[str | None] = set()
    if keys:
        seen = set(conn.execute(select(Event.event_key).where(Event.event_key.in_(keys))).scalars())
    fresh: list[dict[str, Any]] = []
    batch_keys: set[str] = set()
    for e in events:
        key = e["event_key"]
        if key and (key in seen or key in batch_keys):
            continue
        if key:
            batch_keys.add(key)
        fresh.append(e)
    if not fresh:
        return 0, len(events)
    ids = contact_ids(conn, (e["contact"] for e in fresh if e.get("contact")), now)
    named = [e["identifier"] for e in fresh if not e.get("contact")]
    if named:  # an unknown identifier (anonymous id, loyalty card) makes an anonymous contact
        from engine.audience.identity import ensure_contacts

        by_identifier = ensure_contacts(conn, named, now, "event")
    rows = [
        {
            "contact_id": ids[e["contact"]] if e.get("contact") else by_identifier[e["identifier"]],
            "name": e["name"],
            "properties": e["properties"],
            "occurred_at": e["occurred_at"],
            "received_at": now,
            "event_key": e["event_key"],
        }
        for e in fresh
    ]
    # A key seen by neither check above may still be committed meanwhile by a concurrent request:
    # the conflict makes it a duplicate instead of an IntegrityError.
    inserted = _insert_events(conn, rows)
    if inserted:
        from engine.audience.attributes import on_events

        on_events(conn, rows, now)  # a purchase moves its contact's RFM and stage at once
    return len(inserted), len(events) - len(inserted)


def _insert_events(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the events (a replayed key is skipped) and queue them in the inbox; their ids.

    On PostgreSQL one statement per chunk does both (a data-modifying WITH), one round trip
    where the API's single event used to take two."""
    if conn.dialect.name != "postgresql":
        stmt = _insert_ignoring(conn, Event, "event_key").returning(Event.id)
        inserted = list(conn.execute(stmt, rows).scalars().all())
        if inserted:
            conn.execute(insert(EventInbox), [{"event_id": i} for i in inserted])
        return inserted
    ids: list[int] = []
    for chunk in chunked(rows, EVENTS_PER_STATEMENT):
        events = _insert_ignoring(conn, Event, "event_key").values(chunk).returning(Event.id)
        new = events.cte("new_events")
        queue = (
            insert(EventInbox)
            .from_select(["event_id"], select(new.c.id))
            .returning(EventInbox.event_id)
        )
        ids += conn.execute(queue).scalars().all()
    return ids


EVENTS_PER_STATEMENT = 1000  # 6 parameters each: far under PostgreSQL's 65,535


def chunked(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of at most `size` items, in order."""
    batch: list[Any] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_rows(
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    clean: Callable[[Mapping[str, Any]], dict[str, Any]],
    write: Callable[[list[dict[str, Any]]], tuple[int, int]],
    on_reject: Callable[[RowError], None] | None = None,
    batch_size: int = 1000,
) -> ImportReport:
    """Clean rows one by one, write the good ones in batches, report every bad one."""
    report = ImportReport()
    for batch in chunked(rows, batch_size):
        good = []
        for number, raw in batch:
            try:
                good.append(clean(raw))
            except RowInvalid as exc:
                error = RowError(number, exc.field, exc.message, dict(raw))
                report.errors.append(error)
                if on_reject:
                    on_reject(error)
        first, second = write(good)
        report.accepted += len(good)
        report.created += first
        report.updated += second
    return report


def record_imported_consents(
    conn: Connection, rows: list[dict[str, Any]], now: datetime, policy: Any = None
) -> int:
    """Record the `consent:<channel>:<topic>` columns of imported contacts (source: import)."""
    from engine.policy.consent import record_consent

    wanted = [row for row in rows if row.get("consents")]
    if not wanted:
        return 0
    wanted = _named_contacts(conn, wanted, now)  # a row may name its contact by identifiers
    ids = contact_ids(conn, (row["external_id"] for row in wanted), now)
    count = 0
    # In contact id order, like the gate's locks, so an import never deadlocks with a batch.
    for row in sorted(wanted, key=lambda r: ids[r["external_id"]]):
        for channel, topic, state in row["consents"]:
            record_consent(conn, ids[row["external_id"]], channel, topic, state, "import", now,
                           policy=policy)  # fmt: skip
            count += 1
    return count


def contact_profile(row: Any) -> dict[str, Any]:
    """A contact row as JSON-ready data (API answers, `parcours contact show`)."""
    return {
        "external_id": row.external_id,
        "email": row.email,
        "phone": row.phone,
        "timezone": row.timezone,
        "locale": row.locale,
        "score": row.score,
        "tags": list(row.tags or []),
        "opted_out": bool(row.opted_out),
        "attributes": dict(row.attributes or {}),
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }
