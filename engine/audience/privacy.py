"""Privacy: everything held on a person (access, portability) and its erasure.

A person is a contact and every tombstone a merge absorbed into it (`contacts.merged_into`).

- `export_contact` gathers, in one JSON-able document, every row of every table that names the
  person (any table with a ``contact_id``, ``survivor_id`` or ``absorbed_id`` column, found in
  the metadata so a new table is exported without anyone remembering it), the suppressions of
  its addresses, the event inbox rows of its events and the audit entries about it.
- `erase_contact` removes the personal data from every table in the caller's transaction: the
  contact rows stay as tombstones (`erased:<id>`) so that foreign keys and aggregates (send
  counts, conversions, segment history) stay whole; the addresses stay only as salted hashes on
  the suppression list, so that a later import of the same address is never reached by
  marketing; the consent records stay as the proof of consent, without their IP and evidence.
- `address_hash` / `address_hashes`: the salted hash (HMAC-SHA256, a per-database salt kept in
  `installation_secrets`) an erased address is kept as.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, insert, null, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from engine.policy.locks import lock_contacts
from engine.store.db import id_in
from engine.store.models import (
    AuditEntry,
    Base,
    ConsentRecord,
    Contact,
    ContactChange,
    ContactIdentifier,
    ContactLeadScore,
    ContactMerge,
    ContactMetrics,
    Enrollment,
    Event,
    EventInbox,
    InstallationSecret,
    JournalEntry,
    Pressure,
    PushSubscription,
    SegmentDue,
    SegmentMember,
    Send,
    Suppression,
)

SALT_NAME = "address_salt"
HASH_PREFIX = "sha256:"
CONTACT_ADDRESS = "contact:"  # same as engine.policy.consent (which imports this module)
ALL_CHANNELS = "*"
ERASED_PREFIX = "erased:"
ERASURE = "erasure"  # suppression reason and source
ERASED_REASON = "erased"  # an active enrollment's end reason
EXPORT_FORMAT = "parcours-contact-export/1"
PERSON_COLUMNS = ("contact_id", "survivor_id", "absorbed_id")
ADDRESS_KINDS = ("email", "phone")  # identifier kinds that are addresses
MAX_REASON = 500
MAX_HOPS = 16


def _ids(column: Any, ids: list[int], dialect: str) -> ColumnElement[bool]:
    """`column IN ids` for any id column, nullable ones included (see engine.store.db.id_in)."""
    return id_in(column, ids, dialect)


# --- salted hashes -------------------------------------------------------------------------------


def address_salt(conn: Connection, create: bool = True) -> bytes | None:
    """This database's salt; created on first use (INSERT ... ON CONFLICT DO NOTHING, then read
    back, so concurrent processes agree). With ``create=False``, None if there is none yet (no
    address was ever hashed, so no hash can match)."""
    query = select(InstallationSecret.value).where(InstallationSecret.name == SALT_NAME)
    value = conn.execute(query).scalar_one_or_none()
    if value is None and create:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(InstallationSecret)
            .values(name=SALT_NAME, value=secrets.token_hex(32))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        value = conn.execute(query).scalar_one()
    return bytes.fromhex(value) if value is not None else None


def canonical_address(address: str) -> str:
    """The address as contacts store it: a lower-case email, a phone without spaces, dots or
    dashes (what engine.policy.consent.normalize_address keeps)."""
    text = address.strip()
    if "@" in text:
        return text.lower()
    return "".join(c for c in text if c not in " .-")


def hash_with(salt: bytes, address: str) -> str:
    """``sha256:<hex>``: the HMAC-SHA256 of the canonical address under `salt`."""
    digest = hmac.new(salt, canonical_address(address).encode("utf-8"), hashlib.sha256)
    return HASH_PREFIX + digest.hexdigest()


def address_hash(conn: Connection, address: str) -> str:
    """The salted hash an erased `address` is kept as on the suppression list."""
    salt = address_salt(conn)
    assert salt is not None  # created above
    return hash_with(salt, address)


def address_hashes(
    conn: Connection, addresses: Iterable[str], create: bool = True
) -> dict[str, str]:
    """Address → its salted hash, for many addresses with one read of the salt. With
    ``create=False`` (readers: the gate), {} when no salt exists yet."""
    wanted = {a for a in addresses if a and not a.startswith(CONTACT_ADDRESS)}
    if not wanted:
        return {}
    salt = address_salt(conn, create=create)
    if salt is None:
        return {}
    return {a: hash_with(salt, a) for a in wanted}


# --- the person ----------------------------------------------------------------------------------


def person_ids(conn: Connection, contact_id: int) -> list[int]:
    """The contact and every tombstone merged into it (merges flatten chains; this follows any
    left over, up to MAX_HOPS levels)."""
    found = [contact_id]
    frontier = [contact_id]
    for _ in range(MAX_HOPS):
        nxt = conn.execute(
            select(Contact.id).where(_ids(Contact.merged_into, frontier, conn.dialect.name))
        ).scalars()
        frontier = [i for i in nxt if i not in found]
        if not frontier:
            break
        found.extend(frontier)
    return sorted(found)


def _person_tables() -> list[tuple[Table, list[str]]]:
    """Every table with a column naming a contact, and those columns."""
    out = []
    for table in Base.metadata.sorted_tables:
        columns = [c for c in PERSON_COLUMNS if c in table.c]
        if columns:
            out.append((table, columns))
    return out


def _person_filter(conn: Connection, table: Table, columns: list[str], ids: list[int]) -> Any:
    return or_(*(_ids(table.c[c], ids, conn.dialect.name) for c in columns))


# --- export --------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _rows(conn: Connection, table: Table, where: Any) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns)
    rows = conn.execute(select(table).where(where).order_by(*order)).mappings()
    return [{k: _jsonable(v) for k, v in row.items()} for row in rows]


def _addresses_of(conn: Connection, ids: list[int]) -> set[str]:
    """Every address the person has or had: contact email/phone, email/phone identifiers, and
    the plain addresses of suppressions held in its name."""
    dialect = conn.dialect.name
    found: set[str] = set()
    for email, phone in conn.execute(
        select(Contact.email, Contact.phone).where(_ids(Contact.id, ids, dialect))
    ):
        found.update(a for a in (email, phone) if a)
    found.update(
        conn.execute(
            select(ContactIdentifier.value).where(
                _ids(ContactIdentifier.contact_id, ids, dialect),
                ContactIdentifier.kind.in_(ADDRESS_KINDS),
            )
        ).scalars()
    )
    found.update(
        a
        for a in conn.execute(
            select(Suppression.address).where(_ids(Suppression.contact_id, ids, dialect))
        ).scalars()
        if not a.startswith(CONTACT_ADDRESS) and not a.startswith(HASH_PREFIX)
    )
    return found


def export_contact(conn: Connection, contact_id: int, actor: str = "system") -> dict[str, Any]:
    """Everything held on the person, JSON-serialisable (instants in ISO 8601): for the contact
    and its merged tombstones, every row of every table naming them, the suppressions of their
    addresses, the inbox rows of their events and the audit entries about them.

    Writes an ``export`` entry to the audit log in the caller's transaction (use
    ``engine.begin()``)."""
    ids = person_ids(conn, contact_id)
    dialect = conn.dialect.name
    contacts = Base.metadata.tables["contacts"]
    tables = {"contacts": _rows(conn, contacts, _ids(contacts.c.id, ids, dialect))}
    for table, columns in _person_tables():
        tables[table.name] = _rows(conn, table, _person_filter(conn, table, columns, ids))
    addresses = _addresses_of(conn, ids)
    hashed = address_hashes(conn, addresses, create=False)
    wanted = sorted(addresses | set(hashed.values()) | {f"{CONTACT_ADDRESS}{i}" for i in ids})
    suppressions = Base.metadata.tables["suppressions"]
    tables["suppressions"] = _rows(
        conn,
        suppressions,
        or_(suppressions.c.address.in_(wanted), _ids(suppressions.c.contact_id, ids, dialect)),
    )
    events = select(Event.id).where(_ids(Event.contact_id, ids, dialect))
    inbox = Base.metadata.tables["event_inbox"]
    tables["event_inbox"] = _rows(conn, inbox, inbox.c.event_id.in_(events.scalar_subquery()))
    audit = Base.metadata.tables["audit_log"]
    tables["audit_log"] = _rows(
        conn,
        audit,
        (audit.c.target_kind == "contact") & audit.c.target_id.in_([str(i) for i in ids]),
    )
    main = next((r for r in tables["contacts"] if r["id"] == contact_id), None)
    _audit(conn, actor, "export", contact_id, {"contacts": ids})
    return {
        "format": EXPORT_FORMAT,
        "contact": main,
        "merged_contacts": [i for i in ids if i != contact_id],
        "tables": dict(sorted(tables.items())),
    }


def _audit(
    conn: Connection, actor: str, action: str, contact_id: int, details: dict[str, Any]
) -> None:
    conn.execute(
        insert(AuditEntry).values(
            username=(actor or "system")[:64],
            action=action,
            target_kind="contact",
            target_id=str(contact_id),
            details=details,
        )
    )


# --- erasure -------------------------------------------------------------------------------------


@dataclass
class ErasureReport:
    """What an erasure changed, per table (row counts): never the personal data itself."""

    contact_id: int
    contacts: list[int]
    at: datetime
    actor: str
    reason: str | None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able values (the instant in ISO 8601)."""
        return {
            "contact_id": self.contact_id,
            "contacts": list(self.contacts),
            "at": self.at.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "counts": dict(sorted(self.counts.items())),
        }


def _count(result: Any) -> int:
    return int(result.rowcount or 0)


def _hash_suppressions(conn: Connection, ids: list[int], now: datetime) -> dict[str, int]:
    """Replace every plain suppression of the person's addresses by its salted hash, and add an
    erasure suppression on every channel for each address: nothing in plain text stays."""
    dialect = conn.dialect.name
    addresses = _addresses_of(conn, ids)
    if not addresses:
        return {"suppressions_hashed": 0, "suppressions_added": 0}
    hashed = address_hashes(conn, addresses)
    plain = or_(
        Suppression.address.in_(sorted(addresses)),
        _ids(Suppression.contact_id, ids, dialect)
        & ~Suppression.address.startswith(CONTACT_ADDRESS)
        & ~Suppression.address.startswith(HASH_PREFIX),
    )
    existing = conn.execute(
        select(Suppression.channel, Suppression.address, Suppression.reason, Suppression.source,
               Suppression.at).where(plain)
    ).all()  # fmt: skip
    rows = [
        {"channel": r.channel, "address": hashed[r.address], "contact_id": None,
         "reason": r.reason, "source": r.source, "at": r.at}
        for r in existing
    ]  # fmt: skip
    rows += [
        {"channel": ALL_CHANNELS, "address": h, "contact_id": None, "reason": ERASURE,
         "source": ERASURE, "at": now}
        for h in sorted(set(hashed.values()))
    ]  # fmt: skip
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    added = 0
    for row in rows:  # a person has a handful of addresses
        stmt = (
            ins(Suppression)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["channel", "address"])
        )
        added += _count(conn.execute(stmt))
    removed = _count(conn.execute(delete(Suppression).where(plain)))
    return {"suppressions_hashed": removed, "suppressions_added": added}


def _end_enrollments(conn: Connection, ids: list[int], now: datetime) -> int:
    """End the person's active enrollments (reason ``erased``), journaled like other exits."""
    dialect = conn.dialect.name
    ended = conn.execute(
        update(Enrollment)
        .where(_ids(Enrollment.contact_id, ids, dialect), Enrollment.status == "active")
        .values(status="exited", end_reason=ERASED_REASON, ended_at=now, due_at=None,
                deadline=None, waiting_for=None, lease_owner=None, lease_until=None,
                attempt=Enrollment.attempt + 1)
        .returning(Enrollment.id, Enrollment.contact_id, Enrollment.scenario_id,
                   Enrollment.version_id, Enrollment.step_id)
    ).all()  # fmt: skip
    if ended:
        conn.execute(
            insert(JournalEntry),
            [
                {"at": now, "kind": "exited", "enrollment_id": e.id, "contact_id": e.contact_id,
                 "scenario_id": e.scenario_id, "version_id": e.version_id, "step_id": e.step_id,
                 "reason": ERASED_REASON, "data": {}}
                for e in ended
            ],
        )  # fmt: skip
    return len(ended)


def _blank_merges(conn: Connection, ids: list[int]) -> int:
    """Keep only the counts (numbers, booleans) of the merges' details."""
    dialect = conn.dialect.name
    rows = conn.execute(
        select(ContactMerge.id, ContactMerge.details).where(
            or_(
                _ids(ContactMerge.survivor_id, ids, dialect),
                _ids(ContactMerge.absorbed_id, ids, dialect),
            )
        )
    ).all()
    for merge_id, details in rows:  # a person has a handful of merges
        kept = {k: v for k, v in (details or {}).items() if isinstance(v, bool | int | float)}
        conn.execute(update(ContactMerge).where(ContactMerge.id == merge_id).values(details=kept))
    return len(rows)


def _delete_rows(conn: Connection, ids: list[int]) -> dict[str, int]:
    dialect = conn.dialect.name
    counts: dict[str, int] = {}
    events = select(Event.id).where(_ids(Event.contact_id, ids, dialect)).scalar_subquery()
    counts["event_inbox"] = _count(
        conn.execute(delete(EventInbox).where(EventInbox.event_id.in_(events)))
    )
    for model in (ContactIdentifier, PushSubscription, Pressure, ContactMetrics,
                  ContactLeadScore, SegmentMember, SegmentDue, ContactChange):  # fmt: skip
        table = model.__table__
        assert isinstance(table, Table)
        counts[table.name] = _count(
            conn.execute(delete(table).where(_ids(table.c.contact_id, ids, dialect)))
        )
    return counts


def _blank_rows(conn: Connection, ids: list[int], now: datetime) -> dict[str, int]:
    dialect = conn.dialect.name
    counts: dict[str, int] = {}
    counts["events"] = _count(
        conn.execute(
            update(Event)
            .where(_ids(Event.contact_id, ids, dialect))
            .values(properties={}, event_key=None)
        )
    )
    counts["sends_cancelled"] = _count(
        conn.execute(
            update(Send)
            .where(_ids(Send.contact_id, ids, dialect), Send.status == "queued")
            .values(status="cancelled", lease_owner=None, lease_until=None, next_attempt_at=None)
        )
    )
    counts["sends"] = _count(
        conn.execute(
            update(Send).where(_ids(Send.contact_id, ids, dialect)).values(payload={}, error=None)
        )
    )
    counts["enrollments_ended"] = _end_enrollments(conn, ids, now)
    counts["enrollments"] = _count(
        conn.execute(
            update(Enrollment).where(_ids(Enrollment.contact_id, ids, dialect)).values(vars={})
        )
    )
    theirs = select(Enrollment.id).where(_ids(Enrollment.contact_id, ids, dialect))
    counts["journal"] = _count(
        conn.execute(
            update(JournalEntry)
            .where(
                or_(
                    _ids(JournalEntry.contact_id, ids, dialect),
                    JournalEntry.enrollment_id.in_(theirs.scalar_subquery()),
                )
            )
            .values(data={})
        )
    )
    # The only change the ledger's trigger allows: the records stay as the proof of consent.
    counts["consent_records"] = _count(
        conn.execute(
            update(ConsentRecord)
            .where(_ids(ConsentRecord.contact_id, ids, dialect))
            .where(or_(ConsentRecord.ip.is_not(None), ConsentRecord.evidence.is_not(None)))
            .values(ip=None, evidence=null())
        )
    )
    counts["contact_merges"] = _blank_merges(conn, ids)
    return counts


def _tombstone(conn: Connection, ids: list[int], now: datetime) -> int:
    """Contact rows keep only their id (foreign keys and aggregates need it)."""
    done = 0
    for i in ids:  # the person and its tombstones: a handful of rows
        done += _count(
            conn.execute(
                update(Contact)
                .where(Contact.id == i)
                .values(external_id=f"{ERASED_PREFIX}{i}", email=None, phone=None,
                        timezone=None, locale=None, attributes={}, tags=[], score=0,
                        opted_out=True, erased_at=now, updated_at=now)
            )
        )  # fmt: skip
    return done


def erase_contact(
    conn: Connection, contact_id: int, now: datetime, actor: str, reason: str | None
) -> ErasureReport:
    """Remove the person's personal data from every table, in the caller's transaction (on
    SQLite a write transaction: ``BEGIN IMMEDIATE``, the default of engine.store.db), under the
    per-contact policy lock and the contact rows locked FOR UPDATE. The addresses stay as
    salted hashes on the suppression list; an ``erase`` entry goes to the audit log with the
    counts and `reason`, never the personal data.

    On SQLite, run `engine.store.db.checkpoint` after the commit so that the WAL file no longer
    holds the old pages (``secure_delete`` overwrites the freed ones in the database file)."""
    ids = person_ids(conn, contact_id)
    lock_contacts(conn, ids)
    conn.execute(
        select(Contact.id).where(_ids(Contact.id, ids, conn.dialect.name)).with_for_update()
    ).all()
    if reason is not None:
        reason = reason.strip()[:MAX_REASON] or None
    counts = _hash_suppressions(conn, ids, now)
    counts.update(_delete_rows(conn, ids))
    counts.update(_blank_rows(conn, ids, now))
    counts["contacts"] = _tombstone(conn, ids, now)
    report = ErasureReport(contact_id, ids, now, actor, reason, counts)
    _audit(conn, actor, "erase", contact_id, {"reason": reason, "contacts": ids,
                                                "counts": report.to_dict()["counts"]})  # fmt: skip
    return report
