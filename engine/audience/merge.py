"""Merging two contacts into one: everything the absorbed contact had moves to the survivor, in
one transaction, and the absorbed contact stays as a tombstone (`merged_into`).

What a merge does, in order (see README "Identity: one person online and offline"):

1. locks both contacts (the gate's advisory lock, then the rows) and refuses a contact merged
   into itself, a tombstone or an erased contact;
2. fences the workers: every active enrollment of both contacts takes a new attempt, so a batch
   advancing one of them right now fails its fenced save and rolls back;
3. moves events, sends (caps and pressure count both pasts), journal, enrollments, push
   subscriptions, `contact:<id>` suppressions and identifiers; never two active enrollments in
   one scenario: the survivor's (earliest) stays, the other ends with reason `merged`;
4. consent: the absorbed contact's records stay on the tombstone (append-only: the evidence);
   where its current state is more restrictive than the survivor's (opted_out > pending >
   expired > opted_in), a new record of the survivor says so, pointing at the record it comes
   from;
5. pressure: the barometers add up, decayed to now;
6. profile: the survivor's fields unless empty; tags united; scores added; attributes as
   identity.yaml's `merge:` says;
7. segments and computed attributes of the absorbed contact go; the survivor is marked changed;
8. the absorbed contact points at the survivor (and so do those it had absorbed), and its
   external id becomes an identifier of the survivor;
9. journaled: a `contact_merges` row, a `merged` journal row on the survivor's timeline, an
   audit_log entry. No emails, phones or names in any of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from engine.audience.changes import CONSENT, METRICS, PRESSURE, PROFILE, mark_changed
from engine.audience.identity import (
    IdentifierInvalid,
    ensure_contacts,
    insert_ignoring,
    live_ids,
    register,
    resolve,
)
from engine.errors import IngestError
from engine.policy.consent import (
    CONTACT_ADDRESS,
    EXPIRED,
    OPTED_IN,
    OPTED_OUT,
    PENDING,
    derived_state,
)
from engine.policy.locks import lock_contacts
from engine.policy.model import Policy
from engine.policy.pressure import KEEP, Barometer, load_barometers, save_barometers, state_of
from engine.runtime.state import ACTIVE, EXITED
from engine.spec.identity_settings import ABSORBED, EXTERNAL_ID, NEWEST, IdentitySettings
from engine.store.models import (
    AuditEntry,
    ConsentRecord,
    ConsentState,
    Contact,
    ContactChange,
    ContactIdentifier,
    ContactLeadScore,
    ContactMerge,
    ContactMetrics,
    Enrollment,
    Event,
    JournalEntry,
    Pressure,
    PushSubscription,
    SegmentDue,
    SegmentMember,
    Send,
    Suppression,
)

MERGED = "merged"  # the journal kind and the end reason of an enrollment a merge ended
SOURCE = "merge"  # the source of the consent records and identifiers a merge writes
ENTRY_KEY_MAX = 128  # enrollments.entry_key
# The higher, the more restrictive: the merged state is the most restrictive current one.
RESTRICTION = {OPTED_IN: 0, EXPIRED: 1, PENDING: 2, OPTED_OUT: 3}
PROFILE_FIELDS = ("email", "phone", "timezone", "locale")


class MergeRefused(IngestError):
    """A merge that cannot be done (same contact, tombstone, erased): nothing was changed."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class MergeReport:
    """What one merge did: its id, the two contacts, and how many rows of each kind moved."""

    merge_id: int
    survivor_id: int
    absorbed_id: int
    absorbed_external_id: str
    moved: dict[str, int]


def merge_contacts(
    conn: Connection,
    survivor_id: int,
    absorbed_id: int,
    now: datetime,
    actor: str,
    source: str,
    *,
    policy: Policy | None = None,
    settings: IdentitySettings | None = None,
) -> MergeReport:
    """Merge `absorbed_id` into `survivor_id` in the caller's transaction (see the module doc).

    Raises MergeRefused, having changed nothing, for a contact merged into itself, an unknown,
    merged or erased contact.
    """
    policy = policy or Policy()
    settings = settings or IdentitySettings()
    survivor, absorbed = _lock(conn, survivor_id, absorbed_id)
    merge_id = int(
        conn.execute(
            insert(ContactMerge)
            .values(survivor_id=survivor_id, absorbed_id=absorbed_id, at=now, actor=actor[:64],
                    source=source[:32], details={})
            .returning(ContactMerge.id)
        ).scalar_one()
    )  # fmt: skip
    moved: dict[str, int] = {"fenced": _fence(conn, [survivor_id, absorbed_id])}
    moved.update(_move_enrollments(conn, survivor_id, absorbed_id, merge_id, now))
    for name, table in (("events", Event), ("sends", Send), ("journal", JournalEntry),
                        ("push_subscriptions", PushSubscription),
                        ("identifiers", ContactIdentifier)):  # fmt: skip
        moved[name] = _move(conn, table, survivor_id, absorbed_id)
    moved["suppressions"] = _move_suppressions(conn, survivor_id, absorbed_id, now)
    moved["consents"] = _merge_consents(conn, survivor_id, absorbed_id, merge_id, now)
    moved["pressure"] = _merge_pressure(conn, survivor_id, absorbed_id, now, policy)
    _merge_profile(conn, survivor, absorbed, now, settings)
    _forget_computed(conn, survivor_id, absorbed_id, now)
    _tombstone(conn, survivor_id, absorbed, now)
    _record(conn, merge_id, survivor_id, absorbed, now, actor, source, moved)
    return MergeReport(merge_id, survivor_id, absorbed_id, absorbed.external_id, moved)


# ---------------------------------------------------------------- 1. locks and checks


def _lock(conn: Connection, survivor_id: int, absorbed_id: int) -> tuple[Row[Any], Row[Any]]:
    if survivor_id == absorbed_id:
        raise MergeRefused("a contact cannot be merged into itself", "absorbed")
    # The gate's lock first (a batch deciding about either contact commits before, or waits),
    # then the rows, in id order like every other locker.
    lock_contacts(conn, [survivor_id, absorbed_id])
    query = (
        select(Contact)
        .where(Contact.id.in_([survivor_id, absorbed_id]))
        .order_by(Contact.id)
        .with_for_update()
    )
    rows = {r.id: r for r in conn.execute(query)}
    for cid, role in ((survivor_id, "survivor"), (absorbed_id, "absorbed")):
        row = rows.get(cid)
        if row is None:
            raise MergeRefused(f"no contact with id {cid}", role)
        if row.erased_at is not None:
            raise MergeRefused(f"contact {cid} was erased: it cannot take part in a merge", role)
        if row.merged_into is not None:
            raise MergeRefused(
                f"contact {cid} was already merged into contact {row.merged_into}", role
            )
    return rows[survivor_id], rows[absorbed_id]


# ---------------------------------------------------------------- 2-3. fence and move


def _fence(conn: Connection, ids: list[int]) -> int:
    """A new attempt for every active enrollment of both: a batch holding one cannot save."""
    result = conn.execute(
        update(Enrollment)
        .where(Enrollment.contact_id.in_(ids), Enrollment.status == ACTIVE)
        .values(attempt=Enrollment.attempt + 1, lease_owner=None, lease_until=None)
    )
    return int(result.rowcount or 0)


def _move(conn: Connection, table: Any, survivor_id: int, absorbed_id: int) -> int:
    result = conn.execute(
        update(table).where(table.contact_id == absorbed_id).values(contact_id=survivor_id)
    )
    return int(result.rowcount or 0)


def _suffixed(key: str, enrollment_id: int) -> str:
    suffix = f"~merged:{enrollment_id}"
    return key[: ENTRY_KEY_MAX - len(suffix)] + suffix


def _move_enrollments(
    conn: Connection, survivor_id: int, absorbed_id: int, merge_id: int, now: datetime
) -> dict[str, int]:
    """Move the absorbed's enrollments; end all but one active per scenario (reason merged)."""
    rows = conn.execute(
        select(
            Enrollment.id, Enrollment.contact_id, Enrollment.scenario_id, Enrollment.entry_key,
            Enrollment.status, Enrollment.entered_at, Enrollment.version_id, Enrollment.step_id,
        ).where(Enrollment.contact_id.in_([survivor_id, absorbed_id]))
    ).all()  # fmt: skip
    keys = {(r.scenario_id, r.entry_key) for r in rows if r.contact_id == survivor_id}
    clashes = [
        {"eid": r.id, "key": _suffixed(r.entry_key, r.id)}
        for r in rows
        if r.contact_id == absorbed_id and (r.scenario_id, r.entry_key) in keys
    ]
    if clashes:
        from sqlalchemy import bindparam

        conn.execute(
            update(Enrollment)
            .where(Enrollment.id == bindparam("eid"))
            .values(entry_key=bindparam("key")),
            clashes,
        )
    moved = _move(conn, Enrollment, survivor_id, absorbed_id)
    active: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        if r.status == ACTIVE:
            active[r.scenario_id].append(r)
    ending = []
    for group in active.values():
        if len(group) > 1:
            # The survivor's earliest stays, else the absorbed's earliest.
            group.sort(key=lambda r: (r.contact_id != survivor_id, r.entered_at, r.id))
            ending += group[1:]
    ended = _end_merged(conn, ending, survivor_id, merge_id, now)
    return {"enrollments": moved, "enrollments_ended": ended}


def _end_merged(
    conn: Connection, ending: list[Any], survivor_id: int, merge_id: int, now: datetime
) -> int:
    if not ending:
        return 0
    by_id = {r.id: r for r in ending}
    done = conn.execute(
        update(Enrollment)
        .where(Enrollment.id.in_(list(by_id)), Enrollment.status == ACTIVE)
        .values(status=EXITED, end_reason=MERGED, ended_at=now, due_at=None, deadline=None,
                waiting_for=None, attempt=Enrollment.attempt + 1)
        .returning(Enrollment.id)
    ).scalars().all()  # fmt: skip
    journal = [
        {"at": now, "kind": EXITED, "enrollment_id": i, "contact_id": survivor_id,
         "scenario_id": by_id[i].scenario_id, "version_id": by_id[i].version_id,
         "step_id": by_id[i].step_id, "reason": MERGED, "data": {"merge_id": merge_id}}
        for i in done
    ]  # fmt: skip
    if journal:
        conn.execute(insert(JournalEntry), journal)
    return len(done)


def _move_suppressions(conn: Connection, survivor_id: int, absorbed_id: int, now: datetime) -> int:
    """`contact:<absorbed>` suppressions get their `contact:<survivor>` twin; those by address
    need nothing (addresses are checked whoever holds them). Every row stays."""
    rows = conn.execute(
        select(Suppression.channel, Suppression.reason, Suppression.source).where(
            Suppression.address == f"{CONTACT_ADDRESS}{absorbed_id}"
        )
    ).all()
    conn.execute(
        update(Suppression)
        .where(Suppression.contact_id == absorbed_id)
        .where(Suppression.address != f"{CONTACT_ADDRESS}{absorbed_id}")
        .values(contact_id=survivor_id)
    )
    if not rows:
        return 0
    twins = [
        {"channel": r.channel, "address": f"{CONTACT_ADDRESS}{survivor_id}",
         "contact_id": survivor_id, "reason": r.reason, "source": r.source, "at": now}
        for r in rows
    ]  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(Suppression).on_conflict_do_nothing(index_elements=["channel", "address"])
    conn.execute(stmt, twins)
    return len(rows)


# ---------------------------------------------------------------- 4. consent


def _merge_consents(
    conn: Connection, survivor_id: int, absorbed_id: int, merge_id: int, now: datetime
) -> int:
    """Per (channel, topic), the most restrictive current state of the two wins; a new record of
    the survivor (source `merge`) says so where its own state was less restrictive. Returns how
    many records were written. The absorbed contact's records stay where they are."""
    states = conn.execute(
        select(ConsentState).where(ConsentState.contact_id.in_([survivor_id, absorbed_id]))
    ).all()
    mine = {(s.channel, s.topic): s for s in states if s.contact_id == survivor_id}
    theirs = {(s.channel, s.topic): s for s in states if s.contact_id == absorbed_id}
    winners = []
    for key, other in theirs.items():
        own = mine.get(key)
        if own is None or _restriction(other, now) > _restriction(own, now):
            winners.append(other)
    if not winners:
        return 0
    sources = {
        r.id: r
        for r in conn.execute(
            select(ConsentRecord).where(ConsentRecord.id.in_([w.record_id for w in winners]))
        )
    }
    for state in winners:
        _copy_record(conn, survivor_id, state, sources.get(state.record_id), merge_id, now)
    mark_changed(conn, [(survivor_id, CONSENT)], now)
    return len(winners)


def _restriction(state: Row[Any], now: datetime) -> int:
    current = derived_state(state.state, state.expires_at, now)
    return RESTRICTION.get(current, RESTRICTION[OPTED_OUT])  # a state unknown here: the safest


def _copy_record(
    conn: Connection,
    survivor_id: int,
    state: Row[Any],
    record: Row[Any] | None,
    merge_id: int,
    now: datetime,
) -> None:
    """Append the survivor's record of the winning state and make it its current state.

    Written here rather than by `record_consent`, which refuses what a merge must copy as is: an
    opt-in already past its expiry, a pending state, the source `merge`."""
    record_id = conn.execute(
        insert(ConsentRecord)
        .values(
            contact_id=survivor_id, channel=state.channel, topic=state.topic, state=state.state,
            source=SOURCE, wording=record.wording if record else None,
            wording_version=record.wording_version if record else None, ip=None, at=now,
            expires_at=state.expires_at,
            evidence={"merged_from_record": state.record_id, "merge_id": merge_id},
        )
        .returning(ConsentRecord.id)
    ).scalar_one()  # fmt: skip
    values = {"state": state.state, "since": now, "expires_at": state.expires_at,
              "record_id": record_id}  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(ConsentState).values(
        contact_id=survivor_id, channel=state.channel, topic=state.topic, **values
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["contact_id", "channel", "topic"], set_=values)
    )


# ---------------------------------------------------------------- 5. pressure


def _merge_pressure(
    conn: Connection, survivor_id: int, absorbed_id: int, now: datetime, policy: Policy
) -> int:
    """Each channel's score becomes the sum of both, decayed to now: what the barometer would
    read had one contact received both pasts (scores are sums of decayed contributions)."""
    cfg = policy.pressure
    both = load_barometers(conn, [survivor_id, absorbed_id], now, cfg, lock=True)
    theirs = both[absorbed_id]
    if not theirs.rows:
        return 0
    mine: Barometer = both[survivor_id]
    for channel, reading in theirs.rows.items():
        row = mine.rows.get(channel)
        if row is None:
            mine.rows[channel] = dataclasses.replace(reading, signals=list(reading.signals))
        else:
            row.score += reading.score
            row.signals = sorted([*row.signals, *reading.signals], key=lambda s: str(s["at"]))
            del row.signals[:-KEEP]
        merged = mine.rows[channel]
        merged.at = now
        merged.state = state_of(merged.score if math.isfinite(merged.score) else 0.0, cfg)
        mine.touched.add(channel)
    save_barometers(conn, [mine], now)
    conn.execute(delete(Pressure).where(Pressure.contact_id == absorbed_id))
    mark_changed(conn, [(survivor_id, PRESSURE)], now)
    return len(theirs.rows)


# ---------------------------------------------------------------- 6-7. profile and computed


def merged_attributes(
    survivor: Row[Any], absorbed: Row[Any], settings: IdentitySettings
) -> dict[str, Any]:
    """The attributes after a merge, as identity.yaml's `merge:` says (default: the survivor's
    values win, the absorbed contact fills the keys the survivor lacks)."""
    mine, theirs = dict(survivor.attributes or {}), dict(absorbed.attributes or {})
    absorbed_newer = absorbed.updated_at > survivor.updated_at

    def pick(rule: str) -> bool:  # True: the absorbed contact's value
        return rule == ABSORBED or (rule == NEWEST and absorbed_newer)

    out = {**theirs, **mine} if not pick(settings.attributes) else {**mine, **theirs}
    for name, rule in settings.prefer.items():
        first, second = (theirs, mine) if pick(rule) else (mine, theirs)
        if name in first:
            out[name] = first[name]
        elif name in second:
            out[name] = second[name]
    return out


def _merge_profile(
    conn: Connection, survivor: Row[Any], absorbed: Row[Any], now: datetime,
    settings: IdentitySettings,
) -> None:  # fmt: skip
    values: dict[str, Any] = {
        f: getattr(absorbed, f) for f in PROFILE_FIELDS if not getattr(survivor, f)
    }
    values["tags"] = list(dict.fromkeys([*(survivor.tags or []), *(absorbed.tags or [])]))
    values["score"] = Contact.score + int(absorbed.score or 0)
    values["opted_out"] = bool(survivor.opted_out or absorbed.opted_out)
    values["attributes"] = merged_attributes(survivor, absorbed, settings)
    if survivor.anonymous and not absorbed.anonymous:
        values["anonymous"] = False
    values["updated_at"] = now
    conn.execute(update(Contact).where(Contact.id == survivor.id).values(**values))


def _forget_computed(conn: Connection, survivor_id: int, absorbed_id: int, now: datetime) -> None:
    """The absorbed contact leaves every segment and its computed rows go; the worker
    re-evaluates the survivor for every kind of data (segment_history stays: append-only)."""
    for table in (SegmentMember, SegmentDue, ContactChange, ContactMetrics, ContactLeadScore):
        conn.execute(delete(table).where(table.contact_id == absorbed_id))
    names = conn.execute(select(Event.name).where(Event.contact_id == survivor_id).distinct())
    kinds = [PROFILE, CONSENT, PRESSURE, METRICS, *(f"event:{n}" for n in names.scalars())]
    mark_changed(conn, [(survivor_id, k) for k in kinds], now)
    from engine.audience.attributes import refresh_contacts, workspace_spec
    from engine.config import load_settings

    spec = workspace_spec(load_settings().scenarios_dir)
    if spec is not None:  # the purchases of both pasts, at once (as after a purchase)
        refresh_contacts(conn, spec, [survivor_id], now)


# ---------------------------------------------------------------- 8-9. tombstone and record


def _tombstone(conn: Connection, survivor_id: int, absorbed: Row[Any], now: datetime) -> None:
    conn.execute(
        update(Contact)
        .where(Contact.id == absorbed.id)
        .values(merged_into=survivor_id, updated_at=now)
    )
    conn.execute(  # flatten: who pointed at the absorbed contact points at the survivor
        update(Contact).where(Contact.merged_into == absorbed.id).values(merged_into=survivor_id)
    )
    register(conn, survivor_id, [(EXTERNAL_ID, absorbed.external_id)], SOURCE, now)


def _record(
    conn: Connection, merge_id: int, survivor_id: int, absorbed: Row[Any], now: datetime,
    actor: str, source: str, moved: dict[str, int],
) -> None:  # fmt: skip
    conn.execute(update(ContactMerge).where(ContactMerge.id == merge_id).values(details=moved))
    data = {"merge_id": merge_id, "absorbed_id": absorbed.id,
            "absorbed_external_id": absorbed.external_id, "source": source}  # fmt: skip
    conn.execute(
        insert(JournalEntry).values(
            at=now, kind=MERGED, enrollment_id=None, contact_id=survivor_id, scenario_id=None,
            version_id=None, step_id=None, reason=MERGED, data=data,
        )
    )  # fmt: skip
    conn.execute(
        insert(AuditEntry).values(
            at=now, username=actor[:64], action="merge", target_kind="contact",
            target_id=str(survivor_id), details={"merge_id": merge_id,
                                                 "absorbed_id": absorbed.id, **moved},
        )
    )  # fmt: skip


# ---------------------------------------------------------------- identify


@dataclass(frozen=True)
class Identified:
    """What `identify` did: the live contact, whether it was created or promoted (an anonymous
    contact that took the given external id), the merges done, the identifiers added."""

    contact_id: int
    external_id: str
    created: bool = False
    promoted: bool = False
    merges: tuple[int, ...] = ()
    added: int = 0


def identify(
    conn: Connection,
    identifiers: Iterable[tuple[str, str]],
    now: datetime,
    actor: str,
    source: str,
    *,
    external_id: str | None = None,
    policy: Any = None,
    settings: IdentitySettings | None = None,
) -> Identified:
    """Recognise one person by every identifier given (cleaned pairs) and, if given, its external
    id; merge every contact they name into one and give it every identifier.

    The survivor is the contact the external id names, else the oldest non-anonymous contact
    found, else the oldest anonymous one (which takes the external id and stops being
    anonymous). Every other contact found is merged into it, even a known contact holding one
    of the identifiers: that is what identifying means. Nothing found: the contact is created
    (anonymous when no external id is given). Calling it again changes nothing.
    """
    pairs = list(dict.fromkeys(identifiers))
    wanted = [*pairs, *([(EXTERNAL_ID, external_id)] if external_id else [])]
    if not wanted:
        raise IdentifierInvalid("give an external id or at least one identifier", "identifiers")
    found = resolve(conn, wanted)
    named = found.get((EXTERNAL_ID, external_id)) if external_id else None
    others = sorted({cid for pair, cid in found.items() if pair[0] != EXTERNAL_ID} - {named})
    rows = _contacts(conn, [*others, *([named] if named else [])])
    created = promoted = False
    if named is not None:
        survivor = named
    elif others:
        survivor = min(others, key=lambda c: (rows[c].anonymous, rows[c].created_at, c))
        if external_id and rows[survivor].anonymous:
            _promote(conn, survivor, external_id, now)
            promoted = True
    else:
        survivor, created = _create(conn, external_id, pairs, now, source), True
    merges = []
    for absorbed in others:
        merge_id = _merge_live(conn, survivor, absorbed, now, actor, source, policy, settings)
        if merge_id is not None:
            merges.append(merge_id)
        survivor = _live(conn, survivor)
    if external_id and named is None and not promoted and not created:
        # a known contact found by its identifiers: the new external id names it from now on
        pairs = [*pairs, (EXTERNAL_ID, external_id)]
    added = register(conn, survivor, pairs, source, now)
    ext = conn.execute(select(Contact.external_id).where(Contact.id == survivor)).scalar_one()
    return Identified(survivor, str(ext), created, promoted, tuple(merges), added)


def _live(conn: Connection, contact_id: int) -> int:
    live = live_ids(conn, [contact_id])[contact_id]
    if live is None:
        raise MergeRefused(f"contact {contact_id} was erased meanwhile", "identifiers")
    return live


def _merge_live(
    conn: Connection, survivor: int, absorbed: int, now: datetime, actor: str, source: str,
    policy: Any, settings: IdentitySettings | None,
) -> int | None:  # fmt: skip
    """Merge what the two contacts are now: a concurrent identify may have merged one of them
    since they were resolved (the merge refuses a tombstone before writing anything, and the
    rows it then locks are read again). None: they are one contact already."""
    for _ in range(3):
        survivor, absorbed = _live(conn, survivor), _live(conn, absorbed)
        if survivor == absorbed:
            return None
        try:
            report = merge_contacts(
                conn, survivor, absorbed, now, actor, source, policy=policy, settings=settings
            )
        except MergeRefused as exc:
            if "already merged" not in str(exc):
                raise
            continue
        return report.merge_id
    raise MergeRefused("the contacts kept being merged concurrently; try again", "identifiers")


def _contacts(conn: Connection, ids: list[int]) -> dict[int, Any]:
    if not ids:
        return {}
    query = select(Contact.id, Contact.anonymous, Contact.created_at).where(Contact.id.in_(ids))
    return {r.id: r for r in conn.execute(query)}


def _promote(conn: Connection, contact_id: int, external_id: str, now: datetime) -> None:
    """An anonymous contact takes the external id the person was identified by."""
    conn.execute(
        update(Contact)
        .where(Contact.id == contact_id)
        .values(external_id=external_id, anonymous=False, updated_at=now)
    )
    mark_changed(conn, [(contact_id, PROFILE)], now)


def _create(
    conn: Connection,
    external_id: str | None,
    pairs: list[tuple[str, str]],
    now: datetime,
    source: str,
) -> int:
    if external_id is None:
        kind, value = pairs[0]
        return ensure_contacts(conn, [(kind, value)], now, source)[(kind, value)]
    row = {
        "external_id": external_id, "attributes": {}, "tags": [], "score": 0, "opted_out": False,
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    conn.execute(insert_ignoring(conn, Contact, ["external_id"]), [row])
    contact_id = conn.execute(
        select(Contact.id).where(Contact.external_id == external_id)
    ).scalar_one()
    mark_changed(conn, [(int(contact_id), PROFILE)], now)
    return int(contact_id)
