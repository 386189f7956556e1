"""The worker keeps segment membership live: it builds the segments of the folder, refreshes the
contacts whose data changed, follows the clock of event windows, and fires segment triggers and
exit rules from the history, once, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, func, insert, select, text
from sqlalchemy.orm import Session

from engine.audience.changes import PROFILE, mark_changed
from engine.audience.ingest import record_events, upsert_contacts
from engine.audience.membership import members, replace_members
from engine.audience.segment_sql import contacts as contacts_table
from engine.config import load_settings
from engine.policy.consent import record_consent
from engine.store.db import make_engine
from engine.store.models import (
    Contact,
    ContactChange,
    Enrollment,
    JournalEntry,
    SegmentBuild,
    SegmentChange,
    SegmentDue,
)
from engine.worker.enroll import contact_views
from engine.worker.runner import Worker
from engine.worker.versions import publish_bundle

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SEGMENTS = {
    "buyers": """\
format_version: 1
id: buyers
name: Buyers
condition: {event: order_placed, count: {op: gte, value: 1}}
""",
    "lapsed": """\
format_version: 1
id: lapsed
name: Lapsed
condition:
  all:
    - segment: buyers
    - {event: order_placed, within: 90d, count: {op: eq, value: 0}}
""",
    "french": """\
format_version: 1
id: french
name: French
condition: {attribute: country, op: eq, value: FR}
""",
    "french-buyers": """\
format_version: 1
id: french-buyers
name: French buyers
condition: {all: [{segment: french}, {segment: buyers}]}
""",
    "readers": """\
format_version: 1
id: readers
name: Newsletter readers
condition: {consent: {channel: email, topic: newsletter}}
""",
    "vip": """\
format_version: 1
id: vip
name: VIP
manual: {}
""",
    "vip-buyers": """\
format_version: 1
id: vip-buyers
name: VIP buyers
condition: {all: [{segment: vip}, {segment: buyers}]}
""",
}


def scenario(sid: str, triggers: str, extra: str = "") -> str:
    return f"""\
format_version: 1
id: {sid}
name: {sid}
objective: loyalty
triggers:
{triggers}
{extra}
steps:
  wait:
    type: wait
    duration: 30d
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "scenarios" / "segments"
    folder.mkdir(parents=True)
    for name, text_ in SEGMENTS.items():
        (folder / f"{name}.yaml").write_text(text_)
    return tmp_path / "scenarios"


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = make_engine(engine_url)
    yield eng
    eng.dispose()


def worker(engine: Engine, workspace: Path, rebuild_hours: int = 24) -> Worker:
    settings = load_settings(env={}, scenarios_dir=workspace, segments_rebuild_hours=rebuild_hours)
    return Worker(engine, settings)


def add_contacts(engine: Engine, *rows: dict[str, object], now: datetime = NOW) -> dict[str, int]:
    with engine.begin() as conn:
        cleaned = [
            {"external_id": r["external_id"],
             "attributes": {k: v for k, v in r.items() if k != "external_id"}}
            for r in rows
        ]  # fmt: skip
        upsert_contacts(conn, cleaned, now)
        found = conn.execute(select(Contact.external_id, Contact.id)).all()
    return {str(e): int(i) for e, i in found}


def order(engine: Engine, contact: str, at: datetime, now: datetime | None = None) -> None:
    row = {"contact": contact, "name": "order_placed", "properties": {}, "occurred_at": at,
           "event_key": None}  # fmt: skip
    with engine.begin() as conn:
        record_events(conn, [row], now or at)


def in_segment(engine: Engine, segment_id: str) -> set[int]:
    with engine.connect() as conn:
        return set(members(conn, segment_id, limit=1000))


def publish(engine: Engine, *texts: str) -> None:
    with Session(engine) as session, session.begin():
        for yaml in texts:
            publish_bundle(session, {"yaml": yaml, "templates": {}}, now=NOW - DAY)


# ------------------------------------------------------------------ membership in contact views


def test_contact_views_carry_membership_and_audiences_answer_from_it(
    engine: Engine, workspace: Path
) -> None:
    ids = add_contacts(engine, {"external_id": "a", "country": "FR"}, {"external_id": "b"})
    audience = "audience: {segment: french}"
    publish(engine, scenario("welcome", "  - event: signed_up", audience))
    w = worker(engine, workspace)
    w.run_once(NOW)  # builds the segments
    with engine.connect() as conn:
        views = contact_views(conn, ids.values())
    assert views[ids["a"]].segments == frozenset({"french"})
    assert views[ids["b"]].segments == frozenset()
    for who in "ab":
        row = {"contact": who, "name": "signed_up", "properties": {}, "occurred_at": NOW,
               "event_key": None}  # fmt: skip
        with engine.begin() as conn:
            record_events(conn, [row], NOW)
    report = w.run_once(NOW + timedelta(seconds=1))
    with engine.connect() as conn:
        entered = conn.execute(select(Enrollment.contact_id)).scalars().all()
        reasons = conn.execute(select(JournalEntry.reason)).scalars().all()
    assert entered == [ids["a"]]
    assert report.triggers["audience"] == 1 and "audience_failed" not in reasons


# ------------------------------------------------------------------ definitions and rebuilds


def test_segments_are_built_once_then_again_when_their_definition_changes(
    engine: Engine, workspace: Path
) -> None:
    ids = add_contacts(engine, {"external_id": "a", "country": "FR"}, {"external_id": "b"})
    w = worker(engine, workspace)
    first = w.run_once(NOW)
    assert first.triggers["segments_rebuilt"] == 6, "every condition segment, not the manual one"
    assert in_segment(engine, "french") == {ids["a"]}
    again = w.run_once(NOW + timedelta(seconds=1))
    assert "segments_rebuilt" not in again.triggers
    # a new worker (a restart) finds the definitions built: nothing to rebuild
    assert "segments_rebuilt" not in worker(engine, workspace).run_once(NOW + DAY / 2).triggers
    path = workspace / "segments" / "french.yaml"
    path.write_text(path.read_text().replace("value: FR", "value: DE"))
    changed = w.run_once(NOW + timedelta(seconds=2))
    assert changed.triggers["segments_rebuilt"] == 1
    assert in_segment(engine, "french") == set()
    with engine.connect() as conn:
        built = dict(conn.execute(select(SegmentBuild.segment_id, SegmentBuild.built_at)).all())
    assert "vip" not in built and built["french"] == NOW + timedelta(seconds=2)


def test_every_segment_is_rebuilt_on_schedule(engine: Engine, workspace: Path) -> None:
    w = worker(engine, workspace)
    w.run_once(NOW)
    assert "segments_rebuilt" not in w.run_once(NOW + timedelta(hours=23)).triggers
    assert w.run_once(NOW + timedelta(hours=24)).triggers["segments_rebuilt"] == 6


def test_a_broken_segment_is_skipped_and_the_others_go_on(
    engine: Engine, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = add_contacts(engine, {"external_id": "a", "country": "FR"})
    (workspace / "segments" / "buyers.yaml").write_text("format_version: 1\nid: buyers\nname: [")
    w = worker(engine, workspace)
    report = w.run_once(NOW)
    w.run_once(NOW + timedelta(seconds=1))
    # buyers is broken; lapsed, french-buyers and vip-buyers compose it: left out too
    assert report.triggers["segments_rebuilt"] == 2
    assert in_segment(engine, "french") == {ids["a"]}
    broken = str(workspace / "segments" / "buyers.yaml")
    logged = [r.getMessage() for r in caplog.records if f"{broken}:" in r.getMessage()]
    assert len(logged) == 1, "logged once, not at every pass"


def test_a_manual_segment_is_never_rebuilt(engine: Engine, workspace: Path) -> None:
    ids = add_contacts(engine, {"external_id": "a"}, {"external_id": "b"})
    with engine.begin() as conn:
        chosen = select(contacts_table.c.id).where(contacts_table.c.external_id == "a")
        replace_members(conn, "vip", chosen, NOW, reason="import")
    w = worker(engine, workspace)
    w.run_once(NOW)
    w.run_once(NOW + timedelta(days=2))
    assert in_segment(engine, "vip") == {ids["a"]}


# ------------------------------------------------------------------ incremental refresh


def test_an_event_refreshes_its_contact_in_the_segments_reading_it_and_those_composing_them(
    engine: Engine, workspace: Path
) -> None:
    ids = add_contacts(engine, {"external_id": "a", "country": "FR"}, {"external_id": "b"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    order(engine, "a", NOW)
    report = w.run_once(NOW + timedelta(seconds=1))
    assert in_segment(engine, "buyers") == {ids["a"]}
    assert in_segment(engine, "french-buyers") == {ids["a"]}
    assert report.triggers["segment_refreshed"] >= 2
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(ContactChange)).scalar_one()
        reasons = set(conn.execute(select(SegmentChange.reason)).scalars())
    assert left == 0 and "refresh" in reasons


def test_profile_and_consent_changes_refresh_the_segments_reading_them(
    engine: Engine, workspace: Path
) -> None:
    ids = add_contacts(engine, {"external_id": "a"}, {"external_id": "b"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    assert in_segment(engine, "french") == set()
    add_contacts(engine, {"external_id": "b", "country": "FR"})
    with engine.begin() as conn:
        record_consent(conn, ids["a"], "email", "newsletter", "opted_in", "api", NOW)
    w.run_once(NOW + timedelta(seconds=1))
    assert in_segment(engine, "french") == {ids["b"]}
    assert in_segment(engine, "readers") == {ids["a"]}


def test_a_refresh_reads_only_the_changed_contacts(engine: Engine, workspace: Path) -> None:
    ids = add_contacts(engine, {"external_id": "a"}, {"external_id": "b"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    # b becomes French behind the feed's back: only a, whose change is noted, is refreshed
    with engine.begin() as conn:
        conn.execute(
            Contact.__table__.update()
            .where(Contact.id.in_([ids["a"], ids["b"]]))
            .values(attributes={"country": "FR"})
        )
        mark_changed(conn, [(ids["a"], PROFILE)], NOW)
    report = w.run_once(NOW + timedelta(seconds=1))
    assert in_segment(engine, "french") == {ids["a"]}
    assert report.triggers["segment_refreshed"] == 2, "a, in french and in french-buyers"


# ------------------------------------------------------------------ the clock


def test_a_window_closing_moves_the_contact_with_no_new_event(
    engine: Engine, workspace: Path
) -> None:
    ids = add_contacts(engine, {"external_id": "a"})
    w = worker(engine, workspace, rebuild_hours=24 * 365)
    w.run_once(NOW)
    order(engine, "a", NOW)
    w.run_once(NOW + timedelta(seconds=1))
    assert in_segment(engine, "lapsed") == set()
    with engine.connect() as conn:
        due = conn.execute(
            select(SegmentDue.due_at).where(SegmentDue.segment_id == "lapsed")
        ).scalar_one()
    assert due == NOW + timedelta(days=90), "the instant the order leaves the window"
    w.run_once(NOW + timedelta(days=89))
    assert in_segment(engine, "lapsed") == set()
    report = w.run_once(NOW + timedelta(days=90, seconds=1))
    assert in_segment(engine, "lapsed") == {ids["a"]}
    assert "segments_rebuilt" not in report.triggers, "the clock, not the nightly rebuild"


def test_a_rebuild_schedules_the_clock_of_every_contact(engine: Engine, workspace: Path) -> None:
    add_contacts(engine, {"external_id": "a"}, {"external_id": "b"})
    order(engine, "a", NOW - timedelta(days=10))
    order(engine, "b", NOW - timedelta(days=80))
    order(engine, "b", NOW - timedelta(days=30))
    worker(engine, workspace).run_once(NOW)
    with engine.connect() as conn:
        due = sorted(
            conn.execute(
                select(SegmentDue.due_at).where(SegmentDue.segment_id == "lapsed")
            ).scalars()
        )
    assert due == [NOW + timedelta(days=10), NOW + timedelta(days=80)]


# ------------------------------------------------------------------ triggers and exits


TRIGGERED = scenario("welcome-buyer", "  - segment_entered: buyers", "entry: {reentry: always}")
EXITING = scenario("french-club", "  - event: joined", "exit_on:\n  - segment_exited: french")
STAYING = scenario("plain-club", "  - event: joined")


def test_entries_and_exits_fire_once(engine: Engine, workspace: Path) -> None:
    publish(engine, TRIGGERED, EXITING, STAYING)
    ids = add_contacts(engine, {"external_id": "a", "country": "FR"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    joined = {"contact": "a", "name": "joined", "properties": {}, "occurred_at": NOW,
              "event_key": None}  # fmt: skip
    with engine.begin() as conn:
        record_events(conn, [joined], NOW)
    order(engine, "a", NOW)
    report = w.run_once(NOW + timedelta(seconds=1))
    w.run_once(NOW + timedelta(seconds=2))
    worker(engine, workspace).run_once(NOW + timedelta(seconds=3))  # a second worker: nothing new
    with engine.connect() as conn:
        rows = conn.execute(select(Enrollment.scenario_id, Enrollment.status)).all()
    assert sorted(rows) == [
        ("french-club", "active"), ("plain-club", "active"), ("welcome-buyer", "active"),
    ]  # fmt: skip
    assert report.triggers["segment_changes"] >= 1
    add_contacts(engine, {"external_id": "a", "country": "DE"})
    report = w.run_once(NOW + timedelta(seconds=4))
    with engine.connect() as conn:
        rows = conn.execute(select(Enrollment.scenario_id, Enrollment.status)).all()
        exit_rows = conn.execute(
            select(JournalEntry.reason, JournalEntry.data).where(JournalEntry.kind == "exited")
        ).all()
    assert sorted(rows) == [
        ("french-club", "exited"), ("plain-club", "active"), ("welcome-buyer", "active"),
    ]  # fmt: skip
    assert report.triggers["segment_left"] == 1
    assert [r.reason for r in exit_rows] == ["segment_exited:french"]
    assert exit_rows[0].data["segment"] == "french"
    assert ids["a"] in in_segment(engine, "buyers")


def test_a_manual_import_fires_and_refreshes_what_composes_it(
    engine: Engine, workspace: Path
) -> None:
    publish(engine, scenario("vip-welcome", "  - segment_entered: vip"))
    ids = add_contacts(engine, {"external_id": "a"}, {"external_id": "b"})
    order(engine, "a", NOW)
    w = worker(engine, workspace)
    w.run_once(NOW)
    with engine.begin() as conn:
        replace_members(conn, "vip", select(contacts_table.c.id), NOW, reason="import")
    w.run_once(NOW + timedelta(seconds=1))
    w.run_once(NOW + timedelta(seconds=2))
    with engine.connect() as conn:
        entered = set(conn.execute(select(Enrollment.contact_id)).scalars())
    assert entered == {ids["a"], ids["b"]}
    assert in_segment(engine, "vip-buyers") == {ids["a"]}


def test_the_entry_rules_apply_to_segment_entries(engine: Engine, workspace: Path) -> None:
    publish(engine, scenario("vip-welcome", "  - segment_entered: vip"))
    add_contacts(engine, {"external_id": "a"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    everyone, nobody = select(contacts_table.c.id), select(contacts_table.c.id).where(text("1=0"))
    with engine.begin() as conn:  # in, out, in again: two entries
        hour = timedelta(hours=1)
        for at, query in [(NOW, everyone), (NOW + hour, nobody), (NOW + 2 * hour, everyone)]:
            replace_members(conn, "vip", query, at, reason="import")
    report = w.run_once(NOW + 2 * hour)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(Enrollment)).scalar_one()
        skipped = (
            conn.execute(select(JournalEntry.reason).where(JournalEntry.kind == "skipped_entry"))
            .scalars()
            .all()
        )
    assert count == 1
    assert report.triggers["already_active"] == 1 and skipped == ["already_active"]


# ------------------------------------------------------------------ an idle pass


def test_an_idle_pass_asks_a_few_questions_whatever_the_number_of_segments(
    engine: Engine, workspace: Path
) -> None:
    add_contacts(engine, {"external_id": "a"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    w.run_once(NOW + timedelta(seconds=1))
    seen: list[str] = []
    listener = lambda *args: seen.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        w.run_once(NOW + timedelta(seconds=2))
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    about_segments = [s for s in seen if "segment" in s or "contact_changes" in s]
    assert len(about_segments) <= 3, about_segments


# ------------------------------------------------------------------ several workers (PostgreSQL)


# SQLite has one writer at a time (nothing to put off) and commits history ids in order.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_refresh_puts_off_a_segment_another_worker_holds(engine: Engine, workspace: Path) -> None:
    ids = add_contacts(engine, {"external_id": "a"})
    w = worker(engine, workspace)
    w.run_once(NOW)
    order(engine, "a", NOW)
    with engine.connect() as other, other.begin():  # another worker rebuilding buyers
        other.execute(
            select(SegmentBuild).where(SegmentBuild.segment_id == "buyers").with_for_update()
        )
        report = w.run_once(NOW + timedelta(seconds=1))  # does not wait for it
    assert report.triggers["segment_refresh_deferred"] >= 1
    assert in_segment(engine, "buyers") == set()
    w.run_once(NOW + timedelta(seconds=2))
    assert in_segment(engine, "buyers") == {ids["a"]}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_changes_are_fired_only_once_their_writer_has_committed(
    engine: Engine, workspace: Path
) -> None:
    publish(engine, scenario("vip-welcome", "  - segment_entered: vip"))
    ids = add_contacts(engine, {"external_id": "a"}, {"external_id": "b"})
    w = worker(engine, workspace)
    w.run_once(NOW)

    def entry(contact: str) -> dict[str, object]:
        return {"segment_id": "vip", "contact_id": ids[contact], "change": "entered", "at": NOW,
                "reason": "import"}  # fmt: skip

    slow = engine.connect()
    slow_txn = slow.begin()
    slow.execute(insert(SegmentChange).values(entry("a")))  # the lower id, not committed yet
    with engine.begin() as conn:
        conn.execute(insert(SegmentChange).values(entry("b")))
    w.run_once(NOW + timedelta(seconds=1))  # b's change is committed, a's is not
    with engine.connect() as conn:
        early = set(conn.execute(select(Enrollment.contact_id)).scalars())
    slow_txn.commit()
    slow.close()
    w.run_once(NOW + timedelta(seconds=2))
    with engine.connect() as conn:
        entered = sorted(conn.execute(select(Enrollment.contact_id)).scalars())
    assert early == set(), "the cursor must not pass a's uncommitted change"
    assert entered == sorted(ids.values())
