"""KPI rollups and reports on real databases: a hand count on a small fixture, the worker's
incremental pass, exactly-once cursors, and equality with a rebuild from empty."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from channels.registry import channel_info
from engine.audience.ingest import clean_event, record_events, upsert_contacts
from engine.config import load_settings
from engine.insights import rollups
from engine.insights.kpis import period_bounds, report, target_met
from engine.insights.reports import record_outcome
from engine.insights.rollups import rebuild, update_rollups
from engine.policy.engagement import record_click, record_open
from engine.store.db import make_engine
from engine.store.models import Contact, Send
from engine.worker.enroll import Candidate, enroll
from engine.worker.runner import Worker
from engine.worker.versions import VersionCache, publish_bundle

ZONE = "Europe/Paris"
# 23:30 UTC on 1 March is already 2 March in Paris: the day is the workspace's.
NOW = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)

REMINDER = """\
format_version: 1
id: reminder
name: Reminder
objective: basket
triggers:
  - manual: true
goal:
  event: order_placed
  within: 7d
  value: total
cost:
  fixed: 100
steps:
  mail:
    type: send
    channel: email
    content:
      subject: Hello
      text: Your cart
    next: text
  text:
    type: send
    channel: sms
    content:
      text: Your cart
    next: wait
  wait:
    type: wait
    duration: 7d
"""


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = make_engine(engine_url)
    yield eng
    eng.dispose()


def _setup(engine: Engine, contacts: int) -> None:
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": REMINDER, "templates": {}}, now=NOW)
    rows = [{"external_id": f"c{i}", "email": f"c{i}@example.com", "phone": f"+3360000{i:04d}"}
            for i in range(contacts)]  # fmt: skip
    with engine.begin() as conn:
        upsert_contacts(conn, rows, NOW)


def _enroll(engine: Engine, externals: list[str], now: datetime) -> None:
    with engine.begin() as conn:
        vid, scenario = VersionCache().live(conn)[0]
        ids = conn.execute(
            select(Contact.id).where(Contact.external_id.in_(externals)).order_by(Contact.id)
        ).scalars()
        key = now.isoformat()
        enroll(conn, [Candidate(vid, scenario, c, key, now, None, "manual") for c in ids], now)


def _event(engine: Engine, contact: str, name: str, at: datetime, **properties: Any) -> None:
    with engine.begin() as conn:
        raw = {"contact": contact, "name": name, "properties": properties, "occurred_at": at}
        record_events(conn, [clean_event(raw, at)], at)


def _sends(engine: Engine, channel: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(Send.send_key, Send.contact_id).where(Send.channel == channel)
                .order_by(Send.id)
            )
        )  # fmt: skip


def _outcome(engine: Engine, channel: str, send_key: str, status: str, at: datetime) -> None:
    with engine.begin() as conn:
        contact = conn.execute(
            text("SELECT c.id, c.external_id FROM sends s JOIN contacts c ON c.id = s.contact_id "
                 "WHERE s.send_key = :k"), {"k": send_key}
        ).one()  # fmt: skip
        record_outcome(conn, channel, send_key, contact.id, contact.external_id, {}, status,
                       None, at)  # fmt: skip


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    order = "scenario_id, day, step_id, channel, arm"
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT * FROM kpi_daily ORDER BY {order}"))
        # money adds up in another order in a rebuild: equal to the last few binary digits
        return [tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows]


def _worker(engine: Engine) -> Worker:
    return Worker(engine, load_settings({}, timezone=ZONE))


def test_kpis_equal_a_hand_count_on_a_small_fixture(engine: Engine) -> None:
    """Four contacts enter; two emails are opened, one clicked, one bounced, one delivered; one
    SMS is delivered; two contacts order (80 and 20) within the window, a third after it."""
    _setup(engine, 4)
    _enroll(engine, ["c0", "c1", "c2", "c3"], NOW)
    worker = _worker(engine)
    worker.run_once(NOW)  # enters, sends the email and the SMS, waits
    emails, texts = _sends(engine, "email"), _sends(engine, "sms")
    assert len(emails) == 4 and len(texts) == 4
    later = NOW + timedelta(hours=2)  # 2 March, Paris
    with engine.begin() as conn:
        assert record_open(conn, emails[0].send_key, later)
        assert record_open(conn, emails[1].send_key, later)
        assert not record_open(conn, emails[1].send_key, later)  # once per send
        assert record_click(conn, emails[0].send_key, "https://shop/c", later)
    _outcome(engine, "email", emails[2].send_key, "bounced", later)
    _outcome(engine, "email", emails[3].send_key, "delivered", later)
    _outcome(engine, "sms", texts[0].send_key, "delivered", later)
    next_day = NOW + timedelta(days=1)  # 3 March, Paris
    _event(engine, "c0", "order_placed", next_day, total=80)
    _event(engine, "c1", "order_placed", next_day, total=20)
    _event(engine, "c2", "order_placed", NOW + timedelta(days=9), total=500)  # out of window
    _event(engine, "c3", "unsubscribed", next_day)  # about no message: not attributed
    worker.run_once(next_day)
    worker.run_once(NOW + timedelta(days=9))

    with engine.connect() as conn:
        totals = report(conn, scenarios=["reminder"], fixed_costs={"reminder": 100}).totals
        by_day = {r["day"]: r for r in report(conn, by="day").rows}
        by_channel = {r["channel"]: r for r in report(conn, by="channel").rows}
        by_step = {r["step"]: r for r in report(conn, by="step").rows}
    email_cost, sms_cost = channel_info("email").cost, channel_info("sms").cost
    assert totals["entries"] == 4
    assert totals["conversions"] == 2
    assert totals["revenue"] == pytest.approx(100.0)
    assert totals["sends"] == 8
    assert (totals["opens"], totals["clicks"], totals["bounces"], totals["delivered"]) == (
        2, 1, 1, 2,
    )  # fmt: skip
    assert totals["unsubscribes"] == 0
    cost = 4 * email_cost + 4 * sms_cost + 100
    assert totals["cost"] == pytest.approx(cost)
    assert totals["conversion_rate"] == pytest.approx(2 / 8)
    assert totals["cost_per_conversion"] == pytest.approx(cost / 2)
    assert totals["return_on_spend"] == pytest.approx(100 / cost)
    # days in Paris: entries and sends on 2 March (23:30 UTC on the 1st), orders on the 3rd
    assert set(by_day) == {date(2026, 3, 2), date(2026, 3, 3)}
    assert by_day[date(2026, 3, 2)]["entries"] == 4 and by_day[date(2026, 3, 2)]["sends"] == 8
    assert by_day[date(2026, 3, 3)]["conversions"] == 2
    assert by_channel["email"]["sends"] == 4 and by_channel["email"]["opens"] == 2
    assert by_channel["sms"]["delivered"] == 1 and by_channel["sms"]["cost"] == pytest.approx(
        4 * sms_cost
    )
    assert by_step["mail"]["entries"] == 4 and by_step["wait"]["entries"] == 4
    assert by_step["mail"]["scenarios"] == ["reminder"]
    # a range leaves the other days out
    with engine.connect() as conn:
        only = report(conn, start=date(2026, 3, 3), end=date(2026, 3, 3)).totals
    assert (only["entries"], only["conversions"]) == (0, 2)


def test_the_incremental_pass_reads_each_row_once_and_equals_a_rebuild(engine: Engine) -> None:
    _setup(engine, 3)
    _enroll(engine, ["c0", "c1", "c2"], NOW)
    worker = _worker(engine)
    worker.run_once(NOW)
    first = _rows(engine)
    assert first
    # nothing new: no row read, nothing changes (a second pass adds nothing twice)
    assert update_rollups(engine, ZONE, NOW) == 0
    assert _rows(engine) == first
    _event(engine, "c0", "order_placed", NOW + timedelta(hours=1), total=12.5)
    worker.run_once(NOW + timedelta(hours=1))
    incremental = _rows(engine)
    assert incremental != first
    rebuild(engine, ZONE, NOW)
    assert _rows(engine) == incremental


def test_periods_and_targets() -> None:
    now = datetime(2026, 5, 17, 22, 30, tzinfo=UTC)  # 18 May in Paris, a Monday
    assert period_bounds("day", now, ZONE) == (date(2026, 5, 18), date(2026, 5, 18))
    assert period_bounds("week", now, ZONE) == (date(2026, 5, 18), date(2026, 5, 24))
    assert period_bounds("month", now, ZONE) == (date(2026, 5, 1), date(2026, 5, 31))
    assert period_bounds("quarter", now, ZONE) == (date(2026, 4, 1), date(2026, 6, 30))
    december = datetime(2026, 12, 5, tzinfo=UTC)
    assert period_bounds("quarter", december, ZONE) == (date(2026, 10, 1), date(2026, 12, 31))
    assert period_bounds("month", december, ZONE) == (date(2026, 12, 1), date(2026, 12, 31))
    assert target_met("conversion_rate", 0.06, 0.05) is True
    assert target_met("cost_per_conversion", 3.0, 2.5) is False
    assert target_met("revenue", None, 10) is None


ACTIONS = st.one_of(
    st.tuples(st.just("enroll"), st.integers(1, 3)),
    st.tuples(st.just("order"), st.integers(0, 8), st.integers(1, 200)),
    st.tuples(st.just("open"), st.integers(0, 8)),
    st.tuples(st.just("worker"), st.integers(0, 30)),
    st.tuples(st.just("rollup"), st.just(0)),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(ACTIONS, min_size=3, max_size=12))
def test_rollups_stay_equal_to_a_rebuild_after_random_interleavings(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, steps: list[tuple[Any, ...]]
) -> None:
    """Random ingest, worker passes and rollup passes, with batches of 3 rows so that cursors
    stop mid-source: the incremental rows equal a rebuild from empty, and the entries equal a
    direct count of the journal."""
    monkeypatch.setattr(rollups, "BATCH", 3)
    with engine.connect() as conn:
        fresh = conn.execute(text("SELECT count(*) FROM scenarios")).scalar() == 0
        known = conn.execute(text("SELECT count(*) FROM contacts")).scalar() or 0
    if fresh:
        _setup_scenario(engine)
    clock = [NOW + timedelta(days=known)]  # each example moves on from the last one's time
    worker = _worker(engine)
    for action in steps:
        _apply(engine, worker, clock, action)
    update_rollups(engine, ZONE, clock[0], max_batches=10_000)
    incremental = _rows(engine)
    rebuild(engine, ZONE, clock[0])
    assert _rows(engine) == incremental
    with engine.connect() as conn:
        entered = conn.execute(text("SELECT count(*) FROM journal WHERE kind = 'entered'")).scalar()
        assert report(conn).totals["entries"] == entered


def _setup_scenario(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": REMINDER, "templates": {}}, now=NOW)


def _apply(engine: Engine, worker: Worker, clock: list[datetime], action: tuple[Any, ...]) -> None:
    kind, *args = action
    now = clock[0]
    with engine.connect() as conn:
        known = conn.execute(text("SELECT count(*) FROM contacts")).scalar() or 0
    if kind == "enroll":
        rows = [{"external_id": f"c{known + i}", "email": f"c{known + i}@example.com"}
                for i in range(args[0])]  # fmt: skip
        with engine.begin() as conn:
            upsert_contacts(conn, rows, now)
        _enroll(engine, [r["external_id"] for r in rows], now)
    elif kind == "order" and known:
        _event(engine, f"c{args[0] % known}", "order_placed", now, total=args[1])
    elif kind == "open":
        emails = _sends(engine, "email")
        if emails:
            with engine.begin() as conn:
                record_open(conn, emails[args[0] % len(emails)].send_key, now)
    elif kind == "worker":
        clock[0] = now + timedelta(hours=args[0])
        worker.run_once(clock[0])
    elif kind == "rollup":
        update_rollups(engine, ZONE, now, max_batches=1)
