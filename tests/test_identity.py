"""Identity: identifiers of any kind, identify, merges, on SQLite and PostgreSQL.

Every merge keeps the evidence the law needs (no consent record lost or changed), lets no message
through that either side refused (the most restrictive consent wins, caps and pressure count both
pasts), and leaves at most one active enrollment per scenario.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from engine.audience.identity import (
    IdentifierInvalid,
    anonymous_external_id,
    clean_identifier,
    ensure_contacts,
    find_contact,
    identifiers_of,
    resolve,
)
from engine.audience.ingest import contact_ids, upsert_contacts
from engine.audience.merge import MergeRefused, identify, merge_contacts, merged_attributes
from engine.policy.base import SendRequest
from engine.policy.consent import consent_snapshot, record_consent
from engine.policy.loader import lint_policy_text
from engine.policy.loading import build_gate
from engine.policy.model import Policy
from engine.policy.pressure import load_barometers, record_sends
from engine.spec.identity_settings import IdentitySettings, lint_identity_text
from engine.store.db import make_engine
from engine.store.models import (
    AuditEntry,
    ConsentRecord,
    Contact,
    ContactMerge,
    Enrollment,
    Event,
    JournalEntry,
    Send,
    Suppression,
)
from engine.worker.enroll import Candidate, contact_views, enroll
from engine.worker.versions import VersionCache, publish_bundle

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
POLICY = """\
format_version: 1
topics: {promotions: Promotions, news: News}
consent:
  defaults: {email: opt_in}
caps:
  - {id: email-week, channels: [email], max: 1, window: 7d}
outcome: {action: skip}
pressure: {under_extra: 0, over_factor: 1}
"""
SCENARIO = """\
format_version: 1
id: {id}
name: {id}
objective: other
topic: promotions
triggers:
  - manual: true
entry:
  reentry: always
steps:
  wait:
    type: wait
    duration: 30d
    next: offer
  offer:
    type: send
    channel: email
    content: {{subject: Offer, text: offer}}
"""
LOYALTY = IdentitySettings(kinds={"loyalty_card": "Loyalty card"})


def policy() -> Policy:
    found, problems = lint_policy_text(POLICY)
    assert found is not None, problems
    return found


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = make_engine(engine_url)
    yield eng
    eng.dispose()


def people(conn: Connection, *rows: dict[str, Any]) -> dict[str, int]:
    upsert_contacts(conn, [{"attributes": {}, **r} for r in rows], T0)
    return contact_ids(conn, [r["external_id"] for r in rows], T0)


def scenario(engine: Engine, *ids: str) -> dict[str, tuple[int, Any]]:
    with Session(engine) as session, session.begin():
        for sid in ids:
            publish_bundle(session, {"yaml": SCENARIO.format(id=sid), "templates": {}}, now=T0)
    with engine.connect() as conn:
        return {sc.id: (vid, sc) for vid, sc in VersionCache().live(conn)}


def enter(conn: Connection, live: dict[str, tuple[int, Any]], sid: str, cid: int, key: str,
          at: datetime) -> None:  # fmt: skip
    vid, sc = live[sid]
    counts = enroll(conn, [Candidate(vid, sc, cid, key, at, source="manual", entered_at=at)], at)
    assert counts["entered"] == 1, counts


def sent(conn: Connection, cid: int, scenario_id: str, at: datetime, key: str) -> None:
    conn.execute(
        Send.__table__.insert().values(
            send_key=key, contact_id=cid, scenario_id=scenario_id, step_id="offer",
            channel="email", topic="promotions", kind="marketing", status="sent",
            created_at=at, sent_at=at,
        )
    )  # fmt: skip


def count(conn: Connection, table: Any, *where: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# ---------------------------------------------------------------- identifiers


def test_identifiers_are_normalised_and_unknown_kinds_refused_with_a_hint() -> None:
    assert clean_identifier("email", "  Ann@Example.COM ") == ("email", "ann@example.com")
    assert clean_identifier("phone", "+33 6 12-34.56.78") == ("phone", "+33612345678")
    assert clean_identifier("loyalty_card", " L-1 ", LOYALTY) == ("loyalty_card", "L-1")
    with pytest.raises(IdentifierInvalid) as caught:
        clean_identifier("loyalty_crd", "L-1", LOYALTY)
    assert caught.value.field == "identifiers.loyalty_crd"
    assert "did you mean 'loyalty_card'?" in caught.value.message
    with pytest.raises(IdentifierInvalid, match="reserved"):
        clean_identifier("external_id", "x")
    with pytest.raises(IdentifierInvalid, match="not an email"):
        clean_identifier("email", "nope")
    with pytest.raises(IdentifierInvalid, match="1 to 255"):
        clean_identifier("anonymous_id", "x" * 256)


def test_identity_file_is_linted_with_lines() -> None:
    settings, problems = lint_identity_text(
        "format_version: 1\nkinds:\n  loyalty_card: {label: Card}\n"
        "merge: {attributes: newest, prefer: {store: absorbed}}\n"
    )
    assert settings is not None and problems == []
    assert settings.known_kinds() == ("email", "phone", "anonymous_id", "loyalty_card")
    assert (settings.attributes, dict(settings.prefer)) == ("newest", {"store": "absorbed"})
    _, problems = lint_identity_text("format_version: 1\nkinds:\n  phone: {}\n", "i.yaml")
    assert [(p.line, "built-in" in p.message) for p in problems] == [(3, True)]


def test_anonymous_external_ids_never_cut_a_long_value() -> None:
    long_a, long_b = "a" * 250 + "1", "a" * 250 + "2"
    assert anonymous_external_id("anonymous_id", "w1") == "anonymous:anonymous_id:w1"
    names = {anonymous_external_id("anonymous_id", v) for v in (long_a, long_b)}
    assert len(names) == 2 and all(len(n) <= 255 for n in names)


def test_event_for_an_unknown_anonymous_id_creates_an_anonymous_contact(engine: Engine) -> None:
    with engine.begin() as conn:
        first = ensure_contacts(conn, [("anonymous_id", "web-1")], T0)
        again = ensure_contacts(conn, [("anonymous_id", "web-1")], T0)
        row = conn.execute(select(Contact).where(Contact.id == first[("anonymous_id", "web-1")]))
        contact = row.one()
    assert first == again
    assert (contact.anonymous, contact.external_id) == (True, "anonymous:anonymous_id:web-1")


def test_email_falls_back_to_the_profile_only_when_one_live_contact_has_it(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a", "email": "a@x.io"},
                     {"external_id": "b", "email": "s@x.io"}, {"external_id": "c", "email": "s@x.io"})  # fmt: skip
        found = resolve(conn, [("email", "a@x.io"), ("email", "s@x.io")])
    assert found == {("email", "a@x.io"): ids["a"]}


# ---------------------------------------------------------------- identify


def test_identify_anonymous_then_known_moves_everything_and_journals_it(engine: Engine) -> None:
    live = scenario(engine, "promo")
    with engine.begin() as conn:
        anon = ensure_contacts(conn, [("anonymous_id", "web-1")], T0)[("anonymous_id", "web-1")]
        ann = people(conn, {"external_id": "ann", "email": "ann@x.io"})["ann"]
        conn.execute(Event.__table__.insert().values(
            contact_id=anon, name="page_viewed", properties={}, occurred_at=T0, received_at=T0))  # fmt: skip
        enter(conn, live, "promo", anon, "k-anon", T0)
        done = identify(conn, [("anonymous_id", "web-1")], T0 + timedelta(hours=1), "api", "api",
                        external_id="ann")  # fmt: skip
    assert (done.contact_id, done.external_id, done.created, len(done.merges)) == (
        ann, "ann", False, 1)  # fmt: skip
    with engine.connect() as conn:
        assert count(conn, Event, Event.contact_id == ann) == 1
        assert count(conn, Enrollment, Enrollment.contact_id == ann) == 1
        tomb = conn.execute(select(Contact).where(Contact.id == anon)).one()
        assert tomb.merged_into == ann
        merged = conn.execute(select(JournalEntry).where(JournalEntry.kind == "merged")).one()
        assert (merged.contact_id, merged.reason, merged.scenario_id) == (ann, "merged", None)
        assert merged.data == {"merge_id": done.merges[0], "absorbed_id": anon,
                               "absorbed_external_id": "anonymous:anonymous_id:web-1",
                               "source": "api"}  # fmt: skip
        audit = conn.execute(select(AuditEntry).where(AuditEntry.action == "merge")).one()
        assert (audit.target_kind, audit.target_id) == ("contact", str(ann))
        record = conn.execute(select(ContactMerge)).one()
        assert (record.survivor_id, record.absorbed_id, record.details["events"]) == (ann, anon, 1)
        assert "ann@x.io" not in str(record.details) + str(audit.details)
        kinds = {(i["kind"], i["value"]) for i in identifiers_of(conn, ann)}
        assert kinds == {("anonymous_id", "web-1"), ("external_id", "anonymous:anonymous_id:web-1")}
        # whatever named the anonymous contact names ann now
        assert resolve(conn, [("anonymous_id", "web-1")]) == {("anonymous_id", "web-1"): ann}
        found = find_contact(conn, "anonymous:anonymous_id:web-1")
        assert found is not None and found.id == ann
        assert set(contact_views(conn, [ann, anon])) == {ann}  # the tombstone has no view


def test_identify_creates_promotes_and_is_idempotent(engine: Engine) -> None:
    with engine.begin() as conn:
        made = identify(conn, [("email", "new@x.io")], T0, "api", "api", external_id="new")
        again = identify(conn, [("email", "new@x.io")], T0, "api", "api", external_id="new")
        anon = identify(conn, [("anonymous_id", "w9")], T0, "api", "api")
        promoted = identify(conn, [("anonymous_id", "w9")], T0, "api", "api", external_id="bob")
        twice = identify(conn, [("anonymous_id", "w9")], T0, "api", "api", external_id="bob")
        bob = conn.execute(select(Contact).where(Contact.id == promoted.contact_id)).one()
        merges = count(conn, ContactMerge)
    assert (made.created, made.added, again.created, again.added, again.merges) == (
        True, 1, False, 0, ())  # fmt: skip
    assert again.contact_id == made.contact_id
    assert anon.created and promoted.promoted and promoted.contact_id == anon.contact_id
    assert (bob.external_id, bob.anonymous) == ("bob", False)
    assert (twice.promoted, twice.merges, twice.added, merges) == (False, (), 0, 0)


def test_identify_merges_a_known_contact_holding_a_given_identifier(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "ann"}, {"external_id": "shop-77"})
        identify(conn, [("loyalty_card", "L-1")], T0, "pos", "import", external_id="shop-77",
                 settings=LOYALTY)  # fmt: skip
        done = identify(conn, [("loyalty_card", "L-1")], T0, "api", "api", external_id="ann",
                        settings=LOYALTY)  # fmt: skip
        tomb = conn.execute(select(Contact.merged_into).where(Contact.id == ids["shop-77"]))
        assert tomb.scalar_one() == ids["ann"]
    assert done.contact_id == ids["ann"] and len(done.merges) == 1


# ---------------------------------------------------------------- merge


def test_merge_refuses_itself_and_tombstones_changing_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a"}, {"external_id": "b"}, {"external_id": "c"})
        merge_contacts(conn, ids["a"], ids["b"], T0, "op", "cli")
    with engine.begin() as conn, pytest.raises(MergeRefused, match="itself"):
        merge_contacts(conn, ids["a"], ids["a"], T0, "op", "cli")
    with engine.begin() as conn, pytest.raises(MergeRefused, match="already merged"):
        merge_contacts(conn, ids["c"], ids["b"], T0, "op", "cli")
    with engine.connect() as conn:
        assert count(conn, ContactMerge) == 1


def test_consent_most_restrictive_wins_and_every_record_is_kept(engine: Engine) -> None:
    p = policy()
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a"}, {"external_id": "b"})
        a, b = ids["a"], ids["b"]
        record_consent(conn, a, "email", "*", "opted_in", "form", T0, policy=p, ip="10.0.0.1",
                       wording="Yes please", wording_version="v1")  # fmt: skip
        record_consent(conn, a, "email", "news", "opted_in", "form", T0, policy=p)
        record_consent(conn, b, "email", "*", "opted_out", "unsubscribe_link", T0, policy=p,
                       wording="Unsubscribe", wording_version="u2", evidence={"link": "x"})  # fmt: skip
        record_consent(conn, b, "email", "news", "opted_in", "form", T0, policy=p)
        record_consent(conn, b, "sms", "*", "opted_in", "form", T0, policy=p)
    with engine.connect() as conn:
        before = [tuple(r) for r in conn.execute(select(ConsentRecord).order_by(ConsentRecord.id))]
    with engine.begin() as conn:
        report = merge_contacts(conn, a, b, T0 + timedelta(minutes=1), "op", "cli")
    with engine.connect() as conn:
        after = [tuple(r) for r in conn.execute(select(ConsentRecord).order_by(ConsentRecord.id))]
        snap = consent_snapshot(conn, [a])[a]
        written = conn.execute(select(ConsentRecord).where(ConsentRecord.source == "merge")).all()
    assert after[: len(before)] == before  # none lost, none changed (evidence, ip, contact)
    assert snap[("email", "*")][0] == "opted_out"  # b refused: the merged contact refused
    assert snap[("email", "news")][0] == "opted_in" and snap[("sms", "*")][0] == "opted_in"
    assert report.moved["consents"] == 2 and len(written) == 2
    out = next(r for r in written if r.channel == "email")
    origin = next(r for r in before if r[1] == b and r[2] == "email" and r[3] == "*")
    assert out.evidence == {"merged_from_record": origin[0], "merge_id": report.merge_id}
    assert (out.wording, out.wording_version) == ("Unsubscribe", "u2")


def test_caps_count_both_pasts_after_a_merge(engine: Engine) -> None:
    p = policy()
    now = T0 + timedelta(days=1)
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a", "email": "a@x.io"}, {"external_id": "b"})
        for cid in ids.values():
            record_consent(conn, cid, "email", "*", "opted_in", "import", T0, policy=p)
        sent(conn, ids["a"], "one", now - timedelta(days=1), "s1")  # yesterday
        sent(conn, ids["b"], "two", now - timedelta(hours=1), "s2")  # today, another scenario

    def decision() -> Any:
        with engine.begin() as conn:
            views = contact_views(conn, [ids["a"]])
            gate = build_gate(conn, p, "Europe/Paris", views, now)
            request = SendRequest("k", 1, "three", 1, "offer", "email", "promotions",
                                  "marketing", 0)  # fmt: skip
            return gate.decide(request, views[ids["a"]], now)

    # each had one send of the week: with the cap of 1, neither may receive another
    assert decision().action == "skip"
    with engine.begin() as conn:
        conn.execute(Send.__table__.delete().where(Send.send_key == "s1"))
    assert decision().allowed  # a alone: no send this week
    with engine.begin() as conn:
        merge_contacts(conn, ids["a"], ids["b"], now, "op", "cli", policy=p)
    refused = decision()
    assert (refused.action, refused.reason.startswith("cap")) == ("skip", True), refused


def test_pressure_adds_up_both_barometers(engine: Engine) -> None:
    p = policy()
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a"}, {"external_id": "b"})
        record_sends(conn, [(ids["a"], "email", T0)], T0, p)
        record_sends(conn, [(ids["b"], "email", T0), (ids["b"], "sms", T0)], T0, p)
        later = T0 + timedelta(days=2)
        before = load_barometers(conn, list(ids.values()), later, p.pressure)
        expected = {ch: sum(b.reading(ch).score for b in before.values() if ch in b.rows)
                    for ch in ("*", "email", "sms")}  # fmt: skip
        merge_contacts(conn, ids["a"], ids["b"], later, "op", "cli", policy=p)
        after = load_barometers(conn, list(ids.values()), later, p.pressure)
    merged = after[ids["a"]]
    for channel, score in expected.items():
        assert merged.rows[channel].score == pytest.approx(score), channel
    assert after[ids["b"]].rows == {}


def test_never_two_active_enrollments_in_one_scenario(engine: Engine) -> None:
    live = scenario(engine, "promo", "other")
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a"}, {"external_id": "b"})
        enter(conn, live, "promo", ids["b"], "same-key", T0)  # absorbed entered first
        enter(conn, live, "promo", ids["a"], "same-key", T0 + timedelta(hours=1))
        enter(conn, live, "other", ids["b"], "k", T0)
        report = merge_contacts(conn, ids["a"], ids["b"], T0 + timedelta(hours=2), "op", "cli")
    with engine.connect() as conn:
        rows = conn.execute(select(Enrollment).order_by(Enrollment.id)).all()
        exits = conn.execute(select(JournalEntry).where(JournalEntry.reason == "merged",
                                                        JournalEntry.kind == "exited")).all()  # fmt: skip
    assert {r.contact_id for r in rows} == {ids["a"]}
    promo = [r for r in rows if r.scenario_id == "promo"]
    assert [(r.status, r.end_reason) for r in promo] == [("exited", "merged"), ("active", None)]
    assert promo[0].entry_key.startswith("same-key~merged:")  # the unique key did not clash
    assert [r.status for r in rows if r.scenario_id == "other"] == ["active"]
    assert [e.enrollment_id for e in exits] == [promo[0].id]
    assert report.moved["enrollments_ended"] == 1
    assert all(r.attempt >= 1 for r in rows)  # fenced: a batch holding one cannot save it


def test_chains_flatten_and_an_absorbed_id_names_the_survivor(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a"}, {"external_id": "b"}, {"external_id": "c"})
        merge_contacts(conn, ids["b"], ids["c"], T0, "op", "cli")
        merge_contacts(conn, ids["a"], ids["b"], T0, "op", "cli")
        pointers = dict(conn.execute(select(Contact.external_id, Contact.merged_into)).all())
        found = {e: find_contact(conn, e) for e in ("a", "b", "c")}
        resolved = resolve(conn, [("external_id", "c")])
    assert pointers == {"a": None, "b": ids["a"], "c": ids["a"]}
    assert {e: r.id for e, r in found.items() if r is not None} == dict.fromkeys("abc", ids["a"])
    assert resolved == {("external_id", "c"): ids["a"]}


def test_profile_tags_score_attributes_and_suppressions_merge(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "a", "tags": ["x"], "score": 2,
                            "attributes": {"city": "Lyon", "store": "A"}},
                     {"external_id": "b", "email": "b@x.io", "tags": ["y", "x"], "score": 3,
                      "attributes": {"city": "Nice", "tier": "gold", "store": "B"}})  # fmt: skip
        conn.execute(Suppression.__table__.insert().values(
            channel="*", address=f"contact:{ids['b']}", contact_id=ids["b"], reason="operator",
            source="operator", at=T0))  # fmt: skip
        settings = IdentitySettings(prefer={"store": "absorbed"})
        merge_contacts(conn, ids["a"], ids["b"], T0, "op", "cli", settings=settings)
        a = conn.execute(select(Contact).where(Contact.id == ids["a"])).one()
        twins = conn.execute(select(Suppression.address).order_by(Suppression.id)).scalars().all()
    assert (a.email, a.tags, a.score) == ("b@x.io", ["x", "y"], 5)
    assert a.attributes == {"city": "Lyon", "tier": "gold", "store": "B"}
    assert twins == [f"contact:{ids['b']}", f"contact:{ids['a']}"]


def test_newest_attributes_rule_takes_the_contact_updated_last() -> None:
    class Row:
        def __init__(self, attributes: dict[str, Any], updated_at: datetime) -> None:
            self.attributes, self.updated_at = attributes, updated_at

    old, new = Row({"a": 1, "b": 1}, T0), Row({"a": 2}, T0 + timedelta(days=1))
    assert merged_attributes(old, new, IdentitySettings(attributes="newest")) == {"a": 2, "b": 1}  # type: ignore[arg-type]
    assert merged_attributes(old, new, IdentitySettings()) == {"a": 1, "b": 1}  # type: ignore[arg-type]


# ---------------------------------------------------------------- ingest


@pytest.fixture
def workspace(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A workspace declaring the loyalty_card kind."""
    (tmp_path / "identity.yaml").write_text(
        "format_version: 1\nkinds:\n  loyalty_card: {label: Loyalty card}\n", encoding="utf-8"
    )
    monkeypatch.setenv("PARCOURS_SCENARIOS_DIR", str(tmp_path))
    return tmp_path


def test_events_name_their_contact_once_with_located_errors(workspace: Any) -> None:
    from engine.audience.contacts import RowInvalid
    from engine.audience.ingest import clean_event

    by_anon = clean_event({"anonymous_id": " w1 ", "name": "page_viewed"}, T0)
    assert (by_anon["contact"], by_anon["identifier"]) == (None, ("anonymous_id", "w1"))
    card = {"identifier": {"kind": "loyalty_card", "value": "L-1"}, "name": "store_purchase"}
    assert clean_event(card, T0)["identifier"] == ("loyalty_card", "L-1")
    for raw, field in (
        ({"contact": "a", "anonymous_id": "w1", "name": "x"}, "anonymous_id"),
        ({"name": "x"}, "contact"),
        ({"identifier": {"kind": "loyalty", "value": "L"}, "name": "x"}, "identifier.kind"),
        ({"identifier": {"kind": "email", "value": "no"}, "name": "x"}, "identifier.value"),
        ({"identifier": "L-1", "name": "x"}, "identifier"),
    ):
        with pytest.raises(RowInvalid) as caught:
            clean_event(raw, T0)
        assert caught.value.field == field, raw


def test_offline_purchases_by_loyalty_card_and_absorbed_ids_reach_the_survivor(
    engine: Engine, workspace: Any
) -> None:
    from engine.audience.ingest import clean_contact, clean_event, record_events

    with engine.begin() as conn:
        # an unlinked card at the till: an anonymous contact holds it
        record_events(conn, [clean_event({"identifier": {"kind": "loyalty_card", "value": "L-1"},
                                          "name": "store_purchase"}, T0)], T0)  # fmt: skip
        # the CRM export links the card to ann: identify merges the till's contact into ann
        upsert_contacts(conn, [clean_contact({"external_id": "ann", "email": "ann@x.io"})], T0)
        done = identify(conn, [("loyalty_card", "L-1")], T0, "import", "import",
                        external_id="ann", settings=LOYALTY)  # fmt: skip
        # a row with the card only updates ann; later purchases with the card are ann's
        upsert_contacts(
            conn, [clean_contact({"identifier:loyalty_card": "L-1", "tier": "gold"})], T0
        )
        record_events(conn, [clean_event({"identifier": {"kind": "loyalty_card", "value": "L-1"},
                                          "name": "store_purchase"}, T0),
                             clean_event({"contact": "anonymous:loyalty_card:L-1",
                                          "name": "call_outcome"}, T0)], T0)  # fmt: skip
        ann = conn.execute(select(Contact).where(Contact.external_id == "ann")).one()
        names = conn.execute(select(Event.name).where(Event.contact_id == ann.id)).scalars().all()
        anonymous = count(conn, Contact, Contact.anonymous.is_(True), Contact.merged_into.is_(None))
    assert done.contact_id == ann.id and len(done.merges) == 1
    assert ann.attributes == {"tier": "gold"}
    assert sorted(names) == ["call_outcome", "store_purchase", "store_purchase"]
    assert anonymous == 0  # the till's contact was absorbed, none was created again


def test_contacts_file_registers_identifier_columns(engine: Engine, workspace: Any) -> None:
    from engine.audience.contacts import RowInvalid
    from engine.audience.ingest import clean_contact

    row = clean_contact({"external_id": "bob", "identifier:loyalty_card": "L-9",
                         "identifier:email": "Bob@X.io"})  # fmt: skip
    assert row["identifiers"] == [("loyalty_card", "L-9"), ("email", "bob@x.io")]
    with pytest.raises(RowInvalid) as caught:
        clean_contact({"external_id": "bob", "identifier:loyalty": "L-9"})
    assert caught.value.field == "identifier:loyalty" and "loyalty_card" in caught.value.message
    with engine.begin() as conn:
        upsert_contacts(conn, [row], T0)
        bob = find_contact(conn, "bob")
        assert bob is not None
        assert {(i["kind"], i["value"]) for i in identifiers_of(conn, bob.id)} == {
            ("loyalty_card", "L-9"), ("email", "bob@x.io")}  # fmt: skip


# ---------------------------------------------------------------- command line


def test_contact_merge_and_show_on_the_command_line(
    engine: Engine, engine_url: str, workspace: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from engine.cli import cli

    monkeypatch.setenv("PARCOURS_DATABASE_URL", engine_url)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(workspace / "data"))
    with engine.begin() as conn:
        ids = people(conn, {"external_id": "ann", "email": "ann@x.io"}, {"external_id": "web"})
        identify(conn, [("loyalty_card", "L-1")], T0, "t", "api", external_id="web",
                 settings=LOYALTY)  # fmt: skip
    runner = CliRunner()
    refused = runner.invoke(cli, ["contact", "merge", "ann", "web"], input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    with engine.connect() as conn:
        assert count(conn, ContactMerge) == 0
    done = runner.invoke(cli, ["contact", "merge", "ann", "web", "--json"])
    assert done.exit_code == 0, done.output
    merged = json.loads(done.output)
    assert (merged["survivor"]["id"], merged["absorbed"]["external_id"]) == (ids["ann"], "web")
    again = runner.invoke(cli, ["contact", "merge", "ann", "web", "--yes"])
    assert again.exit_code == 1 and "itself" in again.output  # web names ann now
    missing = runner.invoke(cli, ["contact", "merge", "ann", "nobody", "--yes"])
    assert missing.exit_code == 1 and "no contact with external id 'nobody'" in missing.output
    shown = runner.invoke(cli, ["contact", "show", "web"])  # the absorbed id shows the survivor
    assert shown.exit_code == 0, shown.output
    assert "contact ann" in shown.output and "loyalty_card" in shown.output
    assert "absorbed web  by " in shown.output  # the other side by its external id
    as_json = json.loads(runner.invoke(cli, ["contact", "show", "ann", "--json"]).output)
    kinds = {i["kind"] for i in as_json["identifiers"]}
    assert kinds == {"loyalty_card", "external_id"}
    assert [m["absorbed_id"] for m in as_json["merges"]] == [ids["web"]]


def test_simulation_contacts_named_by_identifier_only_get_their_anonymous_external_id() -> None:
    from engine.insights.simulate import file_contacts

    rows = file_contacts([{"external_id": "", "identifier:loyalty_card": " L-7 "},
                          {"external_id": "ann", "identifier:loyalty_card": "L-1"}])  # fmt: skip
    assert [r["external_id"] for r in rows] == ["anonymous:loyalty_card:L-7", "ann"]


def test_identify_by_identifiers_gives_a_new_external_id_to_the_contact_found(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        bob = people(conn, {"external_id": "bob", "email": "bob@x.io"})["bob"]
        done = identify(conn, [("email", "bob@x.io")], T0, "api", "api", external_id="crm-9")
        found = find_contact(conn, "crm-9")
        again = identify(conn, [("email", "bob@x.io")], T0, "api", "api", external_id="crm-9")
    assert (done.contact_id, done.created, found is not None and found.id) == (bob, False, bob)
    assert (again.contact_id, again.added, again.merges) == (bob, 0, ())


def test_a_merge_after_a_concurrent_one_merges_what_the_contacts_became(engine: Engine) -> None:
    from engine.audience.merge import _merge_live

    with engine.begin() as conn:
        ids = people(conn, {"external_id": "s"}, {"external_id": "a"}, {"external_id": "c"})
        merge_contacts(conn, ids["c"], ids["a"], T0, "other", "api")  # committed meanwhile
        merge_id = _merge_live(conn, ids["s"], ids["a"], T0, "op", "api", None, None)
        assert _merge_live(conn, ids["s"], ids["c"], T0, "op", "api", None, None) is None
        pointers = dict(conn.execute(select(Contact.external_id, Contact.merged_into)).all())
    assert merge_id is not None
    assert pointers == {"s": None, "a": ids["s"], "c": ids["s"]}
