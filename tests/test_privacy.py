"""Access, portability and erasure of a person: export completeness against the metadata,
erasure leaves no personal data in any table, the database file or the logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.engine import make_url

from engine.audience import privacy
from engine.store import db
from engine.store.models import (
    AuditEntry,
    Base,
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
    EventInbox,
    JournalEntry,
    Pressure,
    PushSubscription,
    ScenarioRecord,
    ScenarioVersion,
    SegmentChange,
    SegmentDue,
    SegmentMember,
    Send,
    Suppression,
)

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
EMAIL = "anouchka.vidal@example.org"
OLD_EMAIL = "a.vidal@oldmail.example"  # the merged tombstone's
PHONE = "+33612345678"
NAME = "Anouchka"
SECRETS = (EMAIL, OLD_EMAIL, PHONE, NAME)

# Tables that hold nothing about a contact, and why (a new table must be placed here or be
# found by the export through a contact column).
NOT_PERSONAL = {
    "worker_heartbeats": "worker processes (host:pid), their beats and providers' states",
    "scenarios": "journeys as designed",
    "scenario_versions": "published journey snapshots",
    "schedule_firings": "scheduled fan-outs (scenario, time, cursor)",
    "cursors": "stream positions",
    "users": "designer users, not contacts",
    "sign_in_throttle": "designer sign-in failures",
    "contact_metric_runs": "aggregate quintile edges of a full recompute",
    "segment_counts": "aggregate member counts per day",
    "segment_builds": "segment definition hashes",
    "installation_secrets": "the salt of the erased addresses",
    "kpi_daily": "aggregate KPI counters per journey, step, channel, arm and day",
    "experiment_state": "aggregate arm shares and p-values per split step",
    "pressure_health_days": "aggregate over-pressured counts per channel and day",
    "api_keys": "API key names, scopes and hashes; the operators who made them, no contact",
    # found by the export through the contact's events / the audit target, not a column
    "event_inbox": "rows of the person's events (exported by event id)",
    "audit_log": "entries about the contact (exported by target)",
    "contacts": "the person's own rows (exported by id and merged_into)",
}


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    found = db.make_engine(engine_url)
    yield found
    found.dispose()


def seed_person(conn: Any) -> tuple[int, int]:
    """A contact and a merged tombstone with personal data in every per-contact table."""
    main = conn.execute(
        insert(Contact)
        .values(external_id="crm-42", email=EMAIL, phone=PHONE, timezone="Europe/Paris",
                locale="fr", attributes={"first_name": NAME}, tags=["vip", NAME], score=7)
        .returning(Contact.id)
    ).scalar_one()  # fmt: skip
    old = conn.execute(
        insert(Contact)
        .values(external_id="web-anon-9", email=OLD_EMAIL, attributes={"nick": NAME},
                merged_into=main)
        .returning(Contact.id)
    ).scalar_one()  # fmt: skip
    conn.execute(
        insert(ContactIdentifier),
        [
            {"contact_id": main, "kind": "email", "value": OLD_EMAIL, "source": "merge"},
            {"contact_id": main, "kind": "external_id", "value": "web-anon-9", "source": "merge"},
            {"contact_id": main, "kind": "phone", "value": PHONE, "source": "api"},
        ],
    )
    conn.execute(
        insert(ContactMerge).values(
            survivor_id=main, absorbed_id=old, actor="anne", source="cli",
            details={"email": OLD_EMAIL, "events": 1},
        )
    )  # fmt: skip
    conn.execute(insert(ScenarioRecord).values(id="welcome", name="Welcome", status="live"))
    version = conn.execute(
        insert(ScenarioVersion)
        .values(scenario_id="welcome", number=1, content_hash="h" * 64, bundle={})
        .returning(ScenarioVersion.id)
    ).scalar_one()
    events = conn.execute(
        insert(Event).returning(Event.id),
        [
            {"contact_id": main, "name": "signup", "occurred_at": T0,
             "properties": {"first_name": NAME, "email": EMAIL}, "event_key": f"k-{EMAIL}"},
            {"contact_id": old, "name": "page_view", "occurred_at": T0,
             "properties": {"form": OLD_EMAIL}, "event_key": None},
        ],
    ).scalars().all()  # fmt: skip
    conn.execute(insert(EventInbox).values(event_id=events[0]))
    enrollment = conn.execute(
        insert(Enrollment)
        .values(scenario_id="welcome", version_id=version, contact_id=main, status="active",
                step_id="wait", entry_key=str(events[0]), trigger_event_id=events[0],
                entered_at=T0, due_at=T0 + timedelta(days=1), vars={"greeting": NAME})
        .returning(Enrollment.id)
    ).scalar_one()  # fmt: skip
    conn.execute(
        insert(Send).values(
            send_key="welcome:1", enrollment_id=enrollment, contact_id=main,
            scenario_id="welcome", version_id=version, step_id="mail", channel="email",
            kind="marketing", status="sent", created_at=T0,
            payload={"to": EMAIL, "subject": f"Hello {NAME}"}, error=f"bounced {EMAIL}",
        )
    )  # fmt: skip
    conn.execute(
        insert(JournalEntry),
        [
            {"at": T0, "kind": "sent", "enrollment_id": enrollment, "contact_id": main,
             "scenario_id": "welcome", "data": {"to": EMAIL, "name": NAME}},
            # an entry naming only the enrollment
            {"at": T0, "kind": "step", "enrollment_id": enrollment, "contact_id": None,
             "scenario_id": "welcome", "data": {"greeting": NAME}},
        ],
    )  # fmt: skip
    record = conn.execute(
        insert(ConsentRecord)
        .values(contact_id=main, channel="email", topic="*", state="opted_in", source="form",
                wording="Yes, send me news", wording_version="v1", ip="203.0.113.7", at=T0,
                evidence={"form_email": EMAIL, "name": NAME})
        .returning(ConsentRecord.id)
    ).scalar_one()  # fmt: skip
    conn.execute(
        insert(ConsentState).values(
            contact_id=main, channel="email", topic="*", state="opted_in", since=T0,
            record_id=record,
        )
    )  # fmt: skip
    conn.execute(
        insert(Suppression),
        [
            {"channel": "sms", "address": PHONE, "contact_id": main, "reason": "unsubscribe",
             "source": "api", "at": T0},
            {"channel": "*", "address": f"contact:{old}", "contact_id": old,
             "reason": "operator", "source": "cli", "at": T0},
        ],
    )  # fmt: skip
    conn.execute(
        insert(Pressure).values(contact_id=main, channel="*", score=1.5, updated_at=T0,
                                signals=[{"send": "welcome"}])
    )  # fmt: skip
    conn.execute(
        insert(PushSubscription).values(
            contact_id=main, endpoint=f"https://push.example/{NAME}", p256dh="p" * 20,
            auth="a" * 16, user_agent=f"{NAME}'s phone",
        )
    )  # fmt: skip
    conn.execute(insert(ContactMetrics).values(contact_id=main, lifecycle="active", computed_at=T0))
    conn.execute(
        insert(ContactLeadScore).values(
            contact_id=main, lead_score=3.0, score_seen=7, computed_at=T0
        )
    )
    conn.execute(insert(SegmentMember).values(segment_id="vip", contact_id=main, since=T0))
    conn.execute(
        insert(SegmentChange).values(
            segment_id="vip", contact_id=main, change="entered", at=T0, reason="rebuild"
        )
    )
    conn.execute(insert(SegmentDue).values(segment_id="vip", contact_id=main, due_at=T0))
    conn.execute(insert(ContactChange).values(contact_id=main, kind="profile", changed_at=T0))
    return main, old


def all_rows(conn: Any) -> dict[str, list[str]]:
    """Every row of every table, as text."""
    return {
        t.name: [repr(tuple(r)) for r in conn.execute(select(t))]
        for t in Base.metadata.sorted_tables
    }


def test_export_holds_every_table_row_of_the_person(engine: Engine) -> None:
    with engine.begin() as conn:
        main, old = seed_person(conn)
        other = conn.execute(
            insert(Contact).values(external_id="someone-else", email="x@example.net")
            .returning(Contact.id)
        ).scalar_one()  # fmt: skip
        conn.execute(insert(Event).values(contact_id=other, name="signup", occurred_at=T0))
    with engine.begin() as conn:
        document = privacy.export_contact(conn, main, actor="anne")
    assert json.loads(json.dumps(document)) == document  # JSON-able as it is
    assert document["contact"]["external_id"] == "crm-42"
    assert document["merged_contacts"] == [old]
    exported = document["tables"]
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in privacy.PERSON_COLUMNS if c in table.c]
            if not columns:
                assert table.name in NOT_PERSONAL, f"{table.name}: personal or not? say why"
                continue
            held = conn.execute(
                select(table).where(
                    *[] if len(columns) > 1 else [table.c[columns[0]].in_([main, old])]
                )
            ).mappings().all()  # fmt: skip
            assert held, f"the fixture must touch {table.name}"
            key = table.primary_key.columns.keys()
            ids = {tuple(str(r[c]) for c in key) for r in held}
            got = {tuple(str(r[c]) for c in key) for r in exported[table.name]}
            assert ids <= got, f"{table.name}: rows missing from the export"
    assert {r["id"] for r in exported["contacts"]} == {main, old}
    assert exported["event_inbox"]
    assert len(exported["journal"]) == 2  # the one naming only the enrollment too
    assert all(e["contact_id"] in (main, old) for e in exported["events"])
    assert {s["address"] for s in exported["suppressions"]} == {PHONE, f"contact:{old}"}
    assert exported["consent_records"][0]["evidence"] == {"form_email": EMAIL, "name": NAME}
    with engine.connect() as conn:
        entry = conn.execute(select(AuditEntry).where(AuditEntry.action == "export")).one()
    assert (entry.username, entry.target_kind, entry.target_id) == ("anne", "contact", str(main))


def _file_bytes(url: str) -> bytes:
    path = Path(make_url(url).database or "")
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_erasure_leaves_only_salted_hashes(
    engine: Engine, engine_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with engine.begin() as conn:
        main, old = seed_person(conn)
    if engine.dialect.name == "sqlite":
        db.checkpoint(engine)
        assert EMAIL.encode() in _file_bytes(engine_url)  # the grep below can find it
    with caplog.at_level(logging.DEBUG), engine.begin() as conn:
        logging.getLogger("parcours").debug("erasing")
        report = privacy.erase_contact(conn, main, T0 + timedelta(days=3), "anne", "art. 17")
    db.checkpoint(engine)
    assert report.contacts == [main, old]
    assert report.counts["contact_identifiers"] == 3
    assert report.counts["enrollments_ended"] == 1
    assert json.loads(json.dumps(report.to_dict()))["counts"] == report.counts
    with engine.connect() as conn:
        rows = all_rows(conn)
        hashes = {privacy.address_hash(conn, a): a for a in (EMAIL, OLD_EMAIL, PHONE)}
        suppressed = conn.execute(select(Suppression.channel, Suppression.address)).all()
        contact = conn.execute(select(Contact).where(Contact.id == main)).one()
        enrollment = conn.execute(select(Enrollment)).one()
        record = conn.execute(select(ConsentRecord)).one()
        audit = conn.execute(select(AuditEntry).where(AuditEntry.action == "erase")).one()
    for table, texts in rows.items():
        for secret in SECRETS:
            assert not any(secret in t for t in texts), f"{secret!r} still in {table}"
    assert caplog.records, "the capture must see the logs"
    for secret in SECRETS:
        assert secret not in caplog.text
    if engine.dialect.name == "sqlite":
        data = _file_bytes(engine_url)
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret!r} still in the database file"
    # the addresses are on the suppression list as salted hashes, on every channel
    assert {("*", h) for h in hashes} <= set(suppressed)
    assert ("sms", next(h for h, a in hashes.items() if a == PHONE)) in suppressed
    assert ("*", f"contact:{old}") in suppressed
    assert all(a.startswith(("sha256:", "contact:")) for _, a in suppressed)
    # tombstone, ended journey, consent proof kept
    assert contact.external_id == f"erased:{main}" and contact.erased_at is not None
    assert contact.opted_out and contact.email is None and contact.attributes == {}
    assert (enrollment.status, enrollment.end_reason) == ("exited", "erased")
    assert (record.state, record.source, record.wording_version) == ("opted_in", "form", "v1")
    assert record.ip is None and record.evidence is None
    assert audit.username == "anne" and audit.target_id == str(main)
    assert audit.details["reason"] == "art. 17"
    assert audit.details["counts"]["contacts"] == 2


def test_salt_is_created_once_and_shared(engine: Engine) -> None:
    with engine.begin() as conn:
        first = privacy.address_hash(conn, EMAIL)
    with engine.begin() as conn:
        assert privacy.address_hash(conn, f"  {EMAIL.upper()} ") == first
        assert privacy.address_hashes(conn, [EMAIL, PHONE]) == {
            EMAIL: first, PHONE: privacy.address_hash(conn, PHONE)
        }  # fmt: skip
        salts = conn.execute(text("SELECT count(*) FROM installation_secrets")).scalar_one()
    assert salts == 1
    assert first.startswith("sha256:") and EMAIL not in first


def test_readers_never_create_the_salt(engine: Engine) -> None:
    with engine.begin() as conn:
        assert privacy.address_hashes(conn, [EMAIL], create=False) == {}
        assert privacy.address_salt(conn, create=False) is None
