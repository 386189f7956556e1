"""The pressure barometer: decay, states, incremental updates, the database round trip, and the
policy-aware conditions (consent, pressure) that scenarios branch on."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from sqlalchemy import delete, event, insert, select
from sqlalchemy.engine import Connection, Engine

from engine.policy.model import Policy, PressureConfig
from engine.policy.pressure import (
    EQUILIBRIUM,
    KEEP,
    OVER,
    UNDER,
    Barometer,
    caps_factor,
    decayed,
    event_channel,
    explain,
    load_barometers,
    load_policy_views,
    record_sends,
    record_signals,
    save_barometers,
    send_state,
    send_weight,
    state_of,
)
from engine.runtime.state import ContactView, EventView
from engine.spec.conditions import (
    ConsentTest,
    Not,
    PressureTest,
    consent_state,
    parse_condition,
    reads_policy,
)
from engine.spec.loader import lint_text
from engine.store.db import make_engine
from engine.store.models import ConsentState, Contact, Pressure

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CFG = PressureConfig()  # half-life 7d, under 1, over 6, over_factor 0.5, under_extra 1
SIGNALS = {"email_opened": -0.5, "email_clicked": -1.0, "unsubscribed": 5.0, "returned": 2.0}
POLICY = Policy(pressure=PressureConfig(signals=SIGNALS), weights={"push": 1.5})


# ---------------------------------------------------------------- pure: decay and states


def test_decay_halves_every_half_life() -> None:
    week = timedelta(days=7)
    assert decayed(8.0, T0, T0 + week, week) == 4.0
    assert decayed(8.0, T0, T0 + 2 * week, week) == 2.0
    assert decayed(-2.0, T0, T0 + week, week) == -1.0
    assert math.isclose(decayed(8.0, T0, T0 + DAY, week), 8.0 * 0.5 ** (1 / 7))


def test_decay_never_grows() -> None:
    week = timedelta(days=7)
    assert decayed(8.0, T0, T0, week) == 8.0
    assert decayed(8.0, T0, T0 - DAY, week) == 8.0  # a clock behind the row: left as it is
    assert decayed(8.0, None, T0, week) == 8.0


@pytest.mark.parametrize(
    ("score", "state"),
    [(-3.0, UNDER), (0.0, UNDER), (0.999, UNDER), (1.0, EQUILIBRIUM), (3.5, EQUILIBRIUM),
     (6.0, EQUILIBRIUM), (6.001, OVER), (40.0, OVER)],
)  # fmt: skip
def test_state_thresholds(score: float, state: str) -> None:
    assert state_of(score, CFG) == state


def test_custom_thresholds() -> None:
    cfg = PressureConfig(under=-1.0, over=2.0)
    assert [state_of(s, cfg) for s in (-1.5, -1.0, 0.0, 2.0, 2.5)] == [
        UNDER, EQUILIBRIUM, EQUILIBRIUM, EQUILIBRIUM, OVER,
    ]  # fmt: skip


# ---------------------------------------------------------------- pure: the barometer


def test_a_send_raises_overall_and_its_channel() -> None:
    b = Barometer(1)
    b.add("email", 1.0, "send", "email", T0, CFG)
    b.add("sms", 3.0, "send", "sms", T0, CFG)
    assert {ch: r.score for ch, r in b.rows.items()} == {"*": 4.0, "email": 1.0, "sms": 3.0}
    assert {ch: r.state for ch, r in b.rows.items()} == {
        "*": EQUILIBRIUM, "email": EQUILIBRIUM, "sms": EQUILIBRIUM,
    }  # fmt: skip
    assert b.touched == {"*", "email", "sms"}
    assert [s["channel"] for s in b.rows["*"].signals] == ["email", "sms"]
    assert [s["name"] for s in b.rows["sms"].signals] == ["sms"]


def test_an_event_without_channel_moves_only_the_overall_score() -> None:
    b = Barometer(1)
    b.add("email", 3.0, "send", "email", T0, CFG)
    b.add(None, -1.0, "event", "order_placed", T0, CFG)
    b.add("*", -0.5, "event", "email_opened", T0, CFG)
    assert b.rows["*"].score == 1.5 and b.rows["email"].score == 3.0
    assert set(b.rows) == {"*", "email"}
    assert b.rows["*"].signals[-1] == {
        "at": "2026-03-02T09:00:00+00:00", "kind": "event", "name": "email_opened",
        "channel": "*", "delta": -0.5,
    }  # fmt: skip


def test_scores_decay_between_contributions() -> None:
    b = Barometer(1)
    b.add("sms", 4.0, "send", "sms", T0, CFG)
    b.add("sms", 4.0, "send", "sms", T0 + 7 * DAY, CFG)
    assert b.rows["sms"].score == 6.0 and b.rows["sms"].state == EQUILIBRIUM
    b.add("sms", 4.0, "send", "sms", T0 + 7 * DAY, CFG)
    assert b.rows["sms"].state == OVER
    b.decay_to(T0 + 21 * DAY, CFG)
    assert b.rows["sms"].score == 2.5 and b.rows["sms"].state == EQUILIBRIUM
    assert b.rows["sms"].at == T0 + 21 * DAY


def test_a_late_contribution_counts_what_it_has_decayed_to() -> None:
    in_order, late = Barometer(1), Barometer(1)
    in_order.add("email", 2.0, "send", "email", T0, CFG)
    in_order.add("email", 1.0, "send", "email", T0 + 7 * DAY, CFG)
    late.add("email", 1.0, "send", "email", T0 + 7 * DAY, CFG)
    late.add("email", 2.0, "send", "email", T0, CFG)
    assert in_order.rows["email"].score == late.rows["email"].score == 2.0
    assert in_order.rows["email"].signals == late.rows["email"].signals
    assert late.rows["email"].at == T0 + 7 * DAY


def test_signals_keep_the_latest_twenty_by_instant() -> None:
    b = Barometer(1)
    for i in reversed(range(30)):  # newest first: every later one is a late arrival
        b.add("email", 1.0, "send", f"s{i}", T0 + i * timedelta(hours=1), CFG)
    assert len(b.rows["*"].signals) == len(b.rows["email"].signals) == KEEP == 20
    assert [s["name"] for s in b.rows["*"].signals] == [f"s{i}" for i in range(10, 30)]
    for i in range(30, 35):
        b.add("email", 1.0, "send", f"s{i}", T0 + i * timedelta(hours=1), CFG)
    assert [s["name"] for s in b.rows["email"].signals] == [f"s{i}" for i in range(15, 35)]


def test_caps_factor_follows_the_state() -> None:
    b = Barometer(1)
    assert caps_factor(b, "email", CFG) == (1.0, 0.0)  # never contacted: no reading, equilibrium
    assert caps_factor(None, "email", CFG) == (1.0, 0.0)
    b.add("email", 0.5, "send", "email", T0, CFG)
    assert caps_factor(b, "email", CFG) == (1.0, 1.0)  # under-pressure
    b.add("email", 2.5, "send", "email", T0, CFG)
    assert caps_factor(b, "email", CFG) == (1.0, 0.0)
    b.add("sms", 5.0, "send", "sms", T0, CFG)  # overall 8: over; email alone still 3
    assert send_state(b, "email") == OVER  # over-pressured overall: over for every send
    assert caps_factor(b, "email", CFG) == (0.5, 0.0)
    assert caps_factor(b, "push", CFG) == (0.5, 0.0)  # no push row: the overall one
    assert caps_factor(b, "marketing", CFG) == (0.5, 0.0)
    cfg = PressureConfig(over_factor=0.25, under_extra=2.0)
    assert caps_factor(b, "push", cfg) == (0.25, 0.0)
    quiet = Barometer(2)
    quiet.add("email", 0.5, "send", "email", T0, cfg)
    assert caps_factor(quiet, "push", cfg) == (1.0, 2.0)  # no push row: the overall one, under


def test_explain_shows_score_state_thresholds_and_signals() -> None:
    b = Barometer(7)
    b.add("sms", 3.0, "send", "sms", T0, CFG)
    b.add("sms", 3.0, "send", "sms", T0 + DAY, CFG)
    b.add(None, 2.0, "event", "returned", T0 + DAY, CFG)
    b.decay_to(T0 + DAY, CFG)
    shown = explain(b, Policy(pressure=PressureConfig(block_over=True)))
    assert shown["contact_id"] == 7
    assert shown["thresholds"] == {
        "under": 1.0, "over": 6.0, "half_life": "1w", "over_factor": 0.5, "under_extra": 1.0,
        "block_over": True, "block_over_min_weight": 1.0,
    }  # fmt: skip
    assert shown["rule"] == "pressure:over:weight>=1"
    overall = shown["overall"]
    assert overall["state"] == OVER and overall["blocks_marketing"] is True
    assert overall["blocks"] == ["email", "sms", "push", "mail", "call"]  # not the banner
    assert overall["score"] == round(3.0 * 0.5 ** (1 / 7) + 5.0, 3)
    assert overall["caps"] == {"factor": 0.5, "extra": 0.0}
    assert overall["as_of"] == "2026-03-03T09:00:00+00:00"
    assert [s["name"] for s in overall["signals"]] == ["returned", "sms", "sms"]  # latest first
    assert list(shown["channels"]) == ["sms"]
    assert shown["channels"]["sms"]["state"] == EQUILIBRIUM
    assert shown["channels"]["sms"]["blocks"] == []
    assert explain(Barometer(8), Policy())["overall"] == {
        "score": 0.0, "state": EQUILIBRIUM, "as_of": None, "caps": {"factor": 1.0, "extra": 0.0},
        "blocks_marketing": False, "blocks": [], "signals": [],
    }  # fmt: skip
    lenient = Policy(weights={"sms": 0.8}, pressure=PressureConfig(block_over=True))
    b.add("sms", 9.0, "send", "sms", T0 + DAY, CFG)
    shown = explain(b, lenient)
    assert "sms" not in shown["overall"]["blocks"] and shown["channels"]["sms"]["blocks"] == []
    assert explain(b, POLICY)["overall"]["blocks"] == []  # block_over off


def test_send_weight_and_event_channel() -> None:
    assert send_weight(POLICY, "sms") == 3.0  # channel intrusiveness
    assert send_weight(POLICY, "push") == 1.5  # the policy's override
    assert send_weight(POLICY, "pigeon") == 1.0
    assert event_channel({"channel": "sms"}) == "sms"
    assert event_channel({"channel": "web"}) is None  # not a channel: the overall score only
    assert event_channel({"channel": 3}) is None
    assert event_channel(None) is None


# ---------------------------------------------------------------- incremental = from scratch

CHANNELS = [None, "email", "sms", "push"]


@dataclass(frozen=True)
class Contribution:
    contact: int
    channel: str | None
    delta: float
    at: datetime
    kind: str = "send"
    name: str = "x"


@dataclass
class Expected:
    """From scratch: every contribution, decayed from its own instant to the end."""

    done: list[tuple[Contribution, datetime]] = field(default_factory=list)

    def score(self, contact: int, channel: str, end: datetime) -> float:
        return math.fsum(
            c.delta * math.pow(0.5, (end - at) / CFG.half_life)
            for c, at in self.done
            if c.contact == contact and (channel == "*" or c.channel == channel)
        )

    def signals(self, contact: int, channel: str) -> list[tuple[str, float]]:
        mine = [
            (at.isoformat(timespec="seconds"), c.delta)
            for c, at in self.done
            if c.contact == contact and (channel == "*" or c.channel == channel)
        ]
        return sorted(mine, key=lambda s: s[0])[-KEEP:]


def _batches() -> st.SearchStrategy[list[tuple[int, list[tuple[int, int, float, int]]]]]:
    # (seconds the clock moves, [(contact, channel index, delta, seconds before now)])
    contribution = st.tuples(
        st.integers(1, 3),
        st.integers(0, len(CHANNELS) - 1),
        st.sampled_from([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0, 5.0]) | st.floats(-5, 5),
        st.integers(-3600, 20 * 86400),  # negative: a future instant (clock skew)
    )
    batch = st.tuples(st.integers(0, 10 * 86400), st.lists(contribution, max_size=12))
    return st.lists(batch, min_size=1, max_size=10)


def _replay(
    batches: list[tuple[int, list[tuple[int, int, float, int]]]],
) -> Iterator[tuple[datetime, list[Contribution]]]:
    now = T0
    for advance, items in batches:
        now += timedelta(seconds=advance)
        yield (
            now,
            [
                Contribution(cid, CHANNELS[ch], delta, now - timedelta(seconds=back))
                for cid, ch, delta, back in items
            ],
        )


def _assert_matches(barometers: dict[int, Barometer], expected: Expected, end: datetime) -> None:
    for cid in (1, 2, 3):
        b = barometers.get(cid, Barometer(cid))
        for channel in ("*", "email", "sms", "push"):
            want = expected.score(cid, channel, end)
            row = b.rows.get(channel)
            got = row.score if row else 0.0
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (cid, channel, got, want)
            if row is None:
                continue
            if min(abs(want - CFG.under), abs(want - CFG.over)) > 1e-9:
                assert row.state == state_of(want, CFG)
            assert [(s["at"], s["delta"]) for s in row.signals] == expected.signals(cid, channel)


@given(_batches())
@settings(max_examples=200, deadline=None)
def test_incremental_updates_equal_a_computation_from_scratch(
    batches: list[tuple[int, list[tuple[int, int, float, int]]]],
) -> None:
    barometers: dict[int, Barometer] = {}
    expected, end = Expected(), T0
    for now, items in _replay(batches):
        end = now
        for b in barometers.values():
            b.decay_to(now, CFG)
        for c in items:  # in arrival order, not by instant: late arrivals must land right
            at = min(c.at, now)
            barometers.setdefault(c.contact, Barometer(c.contact)).add(
                c.channel, c.delta, c.kind, c.name, at, CFG
            )
            expected.done.append((c, at))
    for b in barometers.values():
        b.decay_to(end, CFG)
    _assert_matches(barometers, expected, end)


# ---------------------------------------------------------------- database


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = make_engine(engine_url)
    yield eng
    eng.dispose()


def _contacts(conn: Connection, n: int) -> list[int]:
    conn.execute(insert(Contact), [{"external_id": f"c{i}"} for i in range(n)])
    return list(conn.execute(select(Contact.id).order_by(Contact.id)).scalars())


@dataclass
class Statements:
    """Counts the statements sent to the database that touch our tables."""

    seen: list[str] = field(default_factory=list)

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "pressure" in statement or "consent_states" in statement:
            self.seen.append(statement)

    def take(self) -> int:
        n, self.seen = len(self.seen), []
        return n


@pytest.fixture
def statements(engine: Engine) -> Iterator[Statements]:
    counter = Statements()
    event.listen(engine, "before_cursor_execute", counter)
    yield counter
    event.remove(engine, "before_cursor_execute", counter)


def test_db_round_trip_in_one_query_each(engine: Engine, statements: Statements) -> None:
    with engine.begin() as conn:
        ids = _contacts(conn, 600)
    sends = [(cid, "email", T0) for cid in ids] + [(cid, "sms", T0) for cid in ids[::2]]
    statements.take()
    with engine.begin() as conn:
        changed = record_sends(conn, sends, T0, POLICY)
    # read and one upsert, whatever the batch size; on PostgreSQL first the overall rows that
    # serve as locks are made sure of, then locked, then read
    assert statements.take() == (4 if engine.dialect.name == "postgresql" else 2)
    assert set(changed) == set(ids)
    later = T0 + 7 * DAY
    with engine.begin() as conn:
        loaded = load_barometers(conn, ids, later, CFG)
        assert statements.take() == 1
        assert loaded[ids[0]].rows["*"].score == 2.0  # (1 + 3) halved over a week
        assert loaded[ids[0]].rows["sms"].score == 1.5 and loaded[ids[0]].rows["sms"].at == later
        assert loaded[ids[1]].rows["*"].score == 0.5 and "sms" not in loaded[ids[1]].rows
        assert [s["name"] for s in loaded[ids[0]].rows["*"].signals] == ["email", "sms"]
        for b in loaded.values():
            b.add("push", 1.5, "send", "push", later, CFG)
            b.decay_to(later, CFG)
        assert save_barometers(conn, loaded.values(), later) == 2 * len(ids)
        assert statements.take() == 1
        assert save_barometers(conn, loaded.values(), later) == 0  # nothing touched since
        assert statements.take() == 0
    with engine.begin() as conn:
        rows = {
            (r.contact_id, r.channel): r
            for r in conn.execute(select(Pressure).where(Pressure.contact_id == ids[0]))
        }
    assert {k[1] for k in rows} == {"*", "email", "sms", "push"}
    assert rows[(ids[0], "*")].score == 3.5 and rows[(ids[0], "*")].state == EQUILIBRIUM
    assert rows[(ids[0], "*")].updated_at == later
    assert [s["name"] for s in rows[(ids[0], "*")].signals] == ["email", "sms", "push"]
    email = rows[(ids[0], "email")]  # untouched by the second batch: stored as of T0
    assert (email.score, email.state, email.updated_at) == (1.0, EQUILIBRIUM, T0)


def test_db_signals_by_event_name_and_channel(engine: Engine, statements: Statements) -> None:
    with engine.begin() as conn:
        ids = _contacts(conn, 300)
    events: list[tuple[int, str, dict[str, Any] | None, datetime]] = []
    for cid in ids:
        events += [
            (cid, "unsubscribed", {"channel": "email"}, T0),
            (cid, "returned", {"order": 12}, T0),
            (cid, "email_clicked", {"channel": "email"}, T0),
            (cid, "page_viewed", {"channel": "email"}, T0),  # not a signal
        ]
    statements.take()
    with engine.begin() as conn:
        record_signals(conn, events, T0, POLICY)
        assert statements.take() == (4 if engine.dialect.name == "postgresql" else 2)
        assert record_signals(conn, [(ids[0], "page_viewed", None, T0)], T0, POLICY) == {}
        assert statements.take() == 0  # nothing to add: no query at all
        loaded = load_barometers(conn, ids, T0, CFG)
    for b in loaded.values():
        assert b.rows["*"].score == 6.0 and b.rows["*"].state == EQUILIBRIUM
        assert b.rows["email"].score == 4.0
        assert set(b.rows) == {"*", "email"}
        assert [s["name"] for s in b.rows["*"].signals] == [
            "unsubscribed", "returned", "email_clicked",
        ]  # fmt: skip
    with engine.begin() as conn:
        record_sends(conn, [(ids[0], "sms", T0 + DAY), (ids[0], "webhook", T0 + DAY)], T0 + DAY,
                     POLICY)  # fmt: skip
        b = load_barometers(conn, [ids[0]], T0 + DAY, CFG)[ids[0]]
    assert b.rows["*"].state == OVER and set(b.rows) == {"*", "email", "sms"}  # webhook weighs 0
    assert b.rows["*"].signals[-1]["kind"] == "send"


def test_db_old_events_count_what_they_have_decayed_to(engine: Engine) -> None:
    with engine.begin() as conn:
        (cid,) = _contacts(conn, 1)
        record_signals(conn, [(cid, "unsubscribed", {}, T0 - 14 * DAY)], T0, POLICY)
        record_sends(conn, [(cid, "sms", T0 + DAY)], T0, POLICY)  # from the future: counts now
        b = load_barometers(conn, [cid], T0, CFG)[cid]
    assert b.rows["*"].score == 1.25 + 3.0
    assert b.rows["*"].at == T0


@given(_batches())
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_db_incremental_updates_equal_a_computation_from_scratch(
    engine: Engine, batches: list[tuple[int, list[tuple[int, int, float, int]]]]
) -> None:
    with engine.begin() as conn:
        conn.execute(delete(Pressure))
        if not conn.execute(select(Contact.id)).first():
            _contacts(conn, 3)
        ids = list(conn.execute(select(Contact.id).order_by(Contact.id)).scalars())
    cfg = PressureConfig(signals={"x": 1.0})  # the event's delta is set per contribution below
    expected, end = Expected(), T0
    for now, items in _replay(batches):
        end = now
        with engine.begin() as conn:
            for c in items:  # one contribution per call: the sign and size vary
                ch = c.channel or "email"
                policy = Policy(weights={ch: c.delta}, pressure=cfg)
                if c.channel is None:
                    signals = PressureConfig(signals={"x": c.delta})
                    event_policy = Policy(pressure=signals)
                    record_signals(conn, [(ids[c.contact - 1], "x", {}, c.at)], now, event_policy)
                else:
                    record_sends(conn, [(ids[c.contact - 1], ch, c.at)], now, policy)
                if c.delta != 0.0:  # a zero contribution is not recorded at all
                    expected.done.append((c, min(c.at, now)))
    with engine.begin() as conn:
        loaded = load_barometers(conn, ids, end, CFG)
    _assert_matches({i + 1: loaded[cid] for i, cid in enumerate(ids)}, expected, end)


def test_concurrent_workers_lose_no_contribution(engine: Engine) -> None:
    with engine.begin() as conn:
        ids = _contacts(conn, 40)
    errors: list[BaseException] = []

    def worker(channel: str) -> None:
        try:
            for _ in range(8):
                with engine.begin() as conn:
                    record_sends(conn, [(cid, channel, T0) for cid in ids], T0, POLICY)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(ch,)) for ch in ("email", "sms", "email")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.begin() as conn:
        loaded = load_barometers(conn, ids, T0, CFG)
    for b in loaded.values():
        assert b.rows["*"].score == 8 * (1.0 + 3.0 + 1.0)
        assert b.rows["email"].score == 16.0 and b.rows["sms"].score == 24.0


def test_load_policy_views(engine: Engine, statements: Statements) -> None:
    with engine.begin() as conn:
        a, b, c = _contacts(conn, 3)
        record_sends(conn, [(a, "sms", T0), (a, "sms", T0), (b, "email", T0)], T0, POLICY)
        consent = {"since": T0, "record_id": 1}
        conn.execute(
            insert(ConsentState),
            [
                {"contact_id": a, "channel": "email", "topic": "promotions", "state": "opted_in",
                 "expires_at": T0 + 30 * DAY, **consent},
                {"contact_id": a, "channel": "sms", "topic": "promotions", "state": "opted_in",
                 "expires_at": T0 + DAY, **consent},
                {"contact_id": a, "channel": "sms", "topic": "*", "state": "opted_out",
                 "expires_at": T0, **consent},
                {"contact_id": b, "channel": "email", "topic": "newsletter", "state": "pending",
                 "expires_at": T0, **consent},
                {"contact_id": b, "channel": "sms", "topic": "*", "state": "opted_in",
                 "expires_at": None, **consent},
            ],
        )  # fmt: skip
    views = {cid: ContactView(cid, f"c{cid}") for cid in (a, b, c)}
    statements.take()
    with engine.begin() as conn:
        load_policy_views(conn, views, T0 + 2 * DAY, CFG)
        assert statements.take() == 2
    assert views[a].consents == {
        ("email", "promotions"): "opted_in",
        ("sms", "promotions"): "expired",
        ("sms", "*"): "opted_out",  # only an opt-in lapses (engine.policy.consent.derived_state)
    }
    assert views[b].consents == {("email", "newsletter"): "pending", ("sms", "*"): "opted_in"}
    assert views[c].consents == {}
    assert views[a].pressure == {"*": EQUILIBRIUM, "sms": EQUILIBRIUM}  # 6 decayed over 2 days
    assert views[b].pressure == {"*": UNDER, "email": UNDER}
    assert views[c].pressure == {"*": EQUILIBRIUM}  # no row: no reading, as caps read it
    with engine.begin() as conn:
        load_policy_views(conn, views, T0 + 2 * DAY)  # no config: the states as stored
    assert views[a].pressure == {"*": EQUILIBRIUM, "sms": EQUILIBRIUM}
    assert views[b].pressure == {"*": EQUILIBRIUM, "email": EQUILIBRIUM} and views[c].pressure == {}
    statements.take()
    with engine.begin() as conn:
        load_policy_views(conn, {}, T0)
    assert statements.take() == 0


# ---------------------------------------------------------------- conditions


@dataclass
class Ctx:
    contact: ContactView
    now: datetime = T0
    entered_at: datetime | None = None
    event: EventView | None = None

    def events(self, name: str) -> Sequence[EventView]:
        return ()

    def expression_vars(self) -> dict[str, Any]:
        return {}


def _no_expr(source: str, path: list[str | int]) -> Any:
    raise AssertionError("no expression here")


def cond(raw: Any) -> Any:
    return parse_condition(raw, [], _no_expr)


def person(consents: dict[tuple[str, str], str] | None = None, **pressure: str) -> Ctx:
    view = ContactView(1, "c1", consents=consents or {})
    view.pressure = {("*" if k == "overall" else k): v for k, v in pressure.items()}
    return Ctx(view)


def test_consent_condition() -> None:
    test = cond({"consent": {"channel": "email", "topic": "promotions"}})
    assert test == ConsentTest("email", "promotions", "opted_in")
    assert test.evaluate(person({("email", "promotions"): "opted_in"}))
    assert not test.evaluate(person({("email", "newsletter"): "opted_in"}))
    assert not test.evaluate(person({("sms", "promotions"): "opted_in"}))
    unknown = cond({"consent": {"channel": "email", "topic": "promotions", "state": "unknown"}})
    assert unknown.evaluate(person())
    assert not unknown.evaluate(person({("email", "promotions"): "pending"}))
    out = cond({"consent": {"channel": "email", "topic": "promotions", "state": "opted_out"}})
    everything_off = {("email", "promotions"): "opted_in", ("email", "*"): "opted_out"}
    assert out.evaluate(person(everything_off)) and not test.evaluate(person(everything_off))
    assert test.evaluate(person({("email", "promotions"): "opted_in", ("email", "*"): "opted_in"}))
    expired = cond({"consent": {"channel": "sms", "topic": "promotions", "state": "expired"}})
    assert expired.evaluate(person({("sms", "promotions"): "expired"}))
    assert consent_state({("sms", "*"): "opted_out"}, "email", "promotions") == "unknown"
    # Like the gate: the topic's own record first, then the channel-wide one.
    channel_wide = {("email", "*"): "opted_in", ("email", "partners"): "opted_out"}
    assert test.evaluate(person(channel_wide))
    assert consent_state(channel_wide, "email", "partners") == "opted_out"
    assert consent_state({("email", "*"): "expired"}, "email", "promotions") == "expired"


def test_pressure_condition() -> None:
    over = cond({"pressure": {"state": "over"}})
    assert over == PressureTest("over", "*")
    assert over.evaluate(person(overall="over"))
    assert not over.evaluate(person(overall="equilibrium", email="over"))
    email_over = cond({"pressure": {"state": "over", "channel": "email"}})
    assert email_over.evaluate(person(overall="equilibrium", email="over"))
    calm = cond({"pressure": {"state": "equilibrium", "channel": "sms"}})
    assert calm.evaluate(person(overall="over"))  # no reading on the channel: equilibrium
    assert cond({"pressure": {"state": "equilibrium"}}).evaluate(person())
    shift = cond({"all": [{"pressure": {"state": "over", "channel": "email"}},
                          {"not": {"pressure": {"state": "over", "channel": "push"}}},
                          {"consent": {"channel": "push", "topic": "*"}}]})  # fmt: skip
    assert shift.evaluate(person({("push", "*"): "opted_in"}, email="over"))
    assert not shift.evaluate(person({("push", "*"): "opted_in"}, email="over", push="over"))


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"consent": {"channel": "email", "topic": "promotions", "state": "opted-in"}},
         ["consent", "state"], "Unknown consent state 'opted-in'. did you mean 'opted_in'?"),
        ({"consent": {"channel": "emial", "topic": "promotions"}},
         ["consent", "channel"], "Unknown channel 'emial'. did you mean 'email'?"),
        ({"consent": {"channel": "email", "topic": "promotions", "sate": "opted_in"}},
         ["consent", "sate"], "Unknown field. did you mean 'state'?"),
        ({"consent": {"channel": "email"}},
         ["consent", "topic"], "A consent test needs the topic, e.g. topic: promotions."),
        ({"consent": {"channel": "email", "topic": ""}},
         ["consent", "topic"], "Expected a topic name, e.g. promotions (or * for all)."),
        ({"consent": "email"},
         ["consent"],
         "Expected a mapping such as {channel: email, topic: promotions, state: opted_in}."),
        ({"consent": {"channel": "email", "topic": "x"}, "state": "opted_in"},
         ["state"], "Unknown field."),
        ({"pressure": {"state": "ovr"}},
         ["pressure", "state"], "Unknown pressure state 'ovr'. did you mean 'over'?"),
        ({"pressure": {"state": "high"}},
         ["pressure", "state"],
         "Unknown pressure state 'high'; use one of under, equilibrium, over."),
        ({"pressure": {"channel": "email"}},
         ["pressure", "state"], "A pressure test needs a state: under, equilibrium or over."),
        ({"pressure": {"state": "over", "channel": "all"}},
         ["pressure", "channel"], "Unknown channel 'all'. did you mean '*'?"),
        ({"pressure": {"state": "over", "channel": "pidgeon"}},
         ["pressure", "channel"], "Unknown channel 'pidgeon'; use one of *, email, sms"),
        ({"presure": {"state": "over"}}, ["presure"], "did you mean 'pressure'?"),
        ({"consnet": {"channel": "email"}}, ["consnet"], "did you mean 'consent'?"),
    ],
)  # fmt: skip
def test_condition_errors(raw: Any, path: list[str], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        cond(raw)
    errors: Any = caught.value.messages
    for part in path:
        errors = errors[part]
    assert message in errors[0]


SCENARIO = """\
format_version: 1
id: pressure-aware
name: Pressure aware
objective: other
topic: promotions
triggers: [{manual: true}]
audience:
  not: {pressure: {state: over}}
steps:
  check:
    type: condition
    if: {consent: {channel: email, topic: promotions}}
    then: pick
    else: done
  pick:
    type: switch
    cases:
      - when: {pressure: {state: over, channel: email}}
        next: done
      - when: {consent: {channel: sms, topic: promotions, state: opted_out}}
        next: done
    default: done
  done:
    type: exit
"""


def test_reads_policy_finds_nested_policy_conditions() -> None:
    assert reads_policy(cond({"any": [{"tag": "vip"}, {"not": {"pressure": {"state": "over"}}}]}))
    assert reads_policy(cond({"consent": {"channel": "sms", "topic": "*"}}))
    assert not reads_policy(cond({"all": [{"tag": "vip"}, {"event": "order_placed"}]}))


def test_a_scenario_using_policy_conditions_lints_clean() -> None:
    scenario, problems = lint_text(SCENARIO, "pressure-aware.yaml")
    assert [p.format() for p in problems if p.severity == "error"] == []
    assert scenario is not None
    assert scenario.audience == Not(PressureTest("over", "*"))


@pytest.mark.parametrize(
    ("old", "new", "field", "hint"),
    [
        ("not: {pressure:", "not: {presure:", "audience.not.presure", "did you mean 'pressure'?"),
        ("if: {consent:", "if: {consnet:", "steps.check.if.consnet", "did you mean 'consent'?"),
        ("state: over, channel: email", "state: ovre, channel: email",
         "steps.pick.cases.0.when.pressure.state", "did you mean 'over'?"),
        ("state: opted_out", "state: opted_ot", "steps.pick.cases.1.when.consent.state",
         "did you mean 'opted_out'?"),
        ("{channel: email, topic: promotions}", "{chanel: email, topic: promotions}",
         "steps.check.if.consent.chanel", "did you mean 'channel'?"),
        ("{channel: sms,", "{channel: smss,", "steps.pick.cases.1.when.consent.channel",
         "did you mean 'sms'?"),
    ],
)  # fmt: skip
def test_misspelled_policy_conditions_get_a_did_you_mean(
    old: str, new: str, field: str, hint: str
) -> None:
    assert old in SCENARIO
    scenario, problems = lint_text(SCENARIO.replace(old, new), "pressure-aware.yaml")
    assert scenario is None
    matching = [p for p in problems if p.field == field]
    assert matching, [p.format() for p in problems]
    assert hint in (matching[0].hint or ""), [p.format() for p in problems]


def test_the_json_schema_accepts_the_policy_conditions() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from engine.spec.jsonschema import scenario_json_schema
    from engine.spec.yamlio import parse_yaml

    validator = jsonschema.Draft202012Validator(scenario_json_schema())
    data, _ = parse_yaml(SCENARIO)
    assert [e.message for e in validator.iter_errors(data)] == []
    data, _ = parse_yaml(SCENARIO.replace("state: over}}", "state: high}}"))
    assert list(validator.iter_errors(data))


# ---------------------------------------------------------------- the policy's rules, end to end

RULES = """\
format_version: 1
topics: {promotions: Promotions}
consent: {defaults: {email: opt_out, onsite: opt_out}}
caps: [{id: email-week, channels: [email], max: 1, window: 7d}]
outcome: {action: skip}
pressure:
  under: 0.5
  over: 1.5
  block_over: true
  signals: {email_opened: -0.5}
"""
JOURNEY = """\
format_version: 1
id: {id}
name: {id}
objective: other
kind: {kind}
topic: promotions
triggers: [{{event: {event}}}]
entry: {{reentry: always, concurrent: true}}
steps:
  mail:
    type: send
    channel: email
{extra}    content: {{subject: Hello, text: Hello, title: Hello, body: Hello}}
"""
RECEIPT = JOURNEY.format(id="receipt", kind="transactional", event="ordered", extra="")
PROMO = JOURNEY.format(  # an email that falls back to the on-site banner when blocked
    id="promo", kind="marketing", event="promo",
    extra="    on_blocked: fallback\n    fallback: onsite\n",
)  # fmt: skip


@dataclass
class World:
    """A database with the two journeys published, one contact and a worker under RULES."""

    engine: Engine
    worker: Any
    contact_id: int
    policy: Policy

    def event(self, name: str, at: datetime) -> None:
        from engine.audience.ingest import record_events

        with self.engine.begin() as conn:
            record_events(conn, [{"contact": "c1", "name": name, "properties": {},
                                  "occurred_at": at, "event_key": None}], at)  # fmt: skip
        self.worker.run_once(at)

    def sends(self) -> list[tuple[str, str, str]]:
        from engine.store.models import Send

        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Send.scenario_id, Send.channel, Send.status).order_by(Send.id)
            )
            return [tuple(r) for r in rows]

    def barometer(self, at: datetime) -> Barometer:
        with self.engine.connect() as conn:
            return load_barometers(conn, [self.contact_id], at, self.policy.pressure)[
                self.contact_id
            ]


@pytest.fixture
def world(engine: Engine) -> World:
    from sqlalchemy.orm import Session

    from engine.audience.ingest import upsert_contacts
    from engine.config import load_settings
    from engine.policy.loader import lint_policy_text
    from engine.policy.loading import full_gate_factory
    from engine.worker.runner import Worker
    from engine.worker.versions import publish_bundle

    policy, problems = lint_policy_text(RULES)
    assert policy is not None, problems
    with Session(engine) as session, session.begin():
        for text in (RECEIPT, PROMO):
            publish_bundle(session, {"yaml": text, "templates": {}}, now=T0)
    with engine.begin() as conn:
        upsert_contacts(conn, [{"external_id": "c1", "email": "c1@example.com",
                                "timezone": "Europe/Paris", "attributes": {}}], T0)  # fmt: skip
        (cid,) = conn.execute(select(Contact.id)).scalars()
    settings = load_settings(env={}).evolve(timezone="Europe/Paris")
    worker = Worker(engine, settings, gate_factory=full_gate_factory(settings, policy))
    return World(engine, worker, cid, policy)


def test_transactional_sends_count_in_the_barometer_and_are_never_blocked(world: World) -> None:
    world.event("ordered", T0)
    assert world.barometer(T0).rows["email"].score == 1.0
    # The second receipt goes out although the email cap is full and the contact over-pressured.
    world.event("ordered", T0 + timedelta(minutes=1))
    assert world.sends() == [("receipt", "email", "sent"), ("receipt", "email", "sent")]
    barometer = world.barometer(T0 + timedelta(minutes=1))
    assert barometer.rows["email"].state == OVER
    assert [s["kind"] for s in barometer.rows["*"].signals] == ["send", "send"]


def test_a_declared_fallback_to_a_quiet_channel_escapes_over_pressure(world: World) -> None:
    from engine.store.models import JournalEntry

    with world.engine.begin() as conn:
        record_sends(conn, [(world.contact_id, "sms", T0)], T0, world.policy)  # 3: over
    world.event("promo", T0 + timedelta(minutes=1))
    assert world.sends() == [("promo", "onsite", "sent")]
    with world.engine.connect() as conn:
        decided = conn.execute(
            select(JournalEntry.reason, JournalEntry.data).where(JournalEntry.kind == "decision")
        ).all()
    assert [(r.reason, r.data["to"]) for r in decided] == [("pressure:over:weight>=1", "onsite")]


def test_engagement_lowers_its_own_channel_and_the_overall_reading(world: World) -> None:
    from engine.policy.engagement import record_open
    from engine.store.models import Send

    world.event("promo", T0)
    assert world.sends() == [("promo", "email", "sent")]
    with world.engine.begin() as conn:
        key = conn.execute(select(Send.send_key)).scalar_one()
        assert record_open(conn, key, T0)
    world.worker.run_once(T0)
    barometer = world.barometer(T0)
    assert (barometer.rows["*"].score, barometer.rows["email"].score) == (0.5, 0.5)
    assert barometer.rows["email"].signals[-1]["name"] == "email_opened"


def test_a_never_contacted_contact_reads_equilibrium_everywhere(world: World) -> None:
    from designer.pressure_board import barometer_counts
    from engine.policy.loading import build_gate

    cfg = world.policy.pressure
    view = ContactView(world.contact_id, "c1", email="c1@example.com")
    with world.engine.begin() as conn:
        load_policy_views(conn, {world.contact_id: view}, T0, cfg)
        gate = build_gate(conn, world.policy, "Europe/Paris", {world.contact_id: view}, T0)
        counts = barometer_counts(conn, T0, cfg)["counts"]["*"]
    data = gate.contacts[world.contact_id]
    assert data.pressure_state is not None and data.caps_factor is not None
    for channel in ("*", "email", "sms"):
        assert PressureTest(EQUILIBRIUM, channel).evaluate(Ctx(view)), channel
        assert data.pressure_state(channel) == EQUILIBRIUM
        assert data.caps_factor(channel) == (1.0, 0.0)  # what caps_for_state gives equilibrium
    assert explain(world.barometer(T0), world.policy)["overall"]["state"] == EQUILIBRIUM
    assert counts == {UNDER: 0, EQUILIBRIUM: 1, OVER: 0}


def test_contact_show_names_the_channels_over_pressure_blocks(
    world: World, engine_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from designer.cli import cli

    (tmp_path / "policy.yaml").write_text(RULES, encoding="utf-8")
    for key, value in {"SCENARIOS_DIR": tmp_path, "DATA_DIR": tmp_path / "data",
                       "DATABASE_URL": engine_url}.items():  # fmt: skip
        monkeypatch.setenv(f"PARCOURS_{key}", str(value))
    with world.engine.begin() as conn:  # contact show decays the score to the present
        record_sends(conn, [(world.contact_id, "sms", datetime.now(UTC))], datetime.now(UTC),
                     world.policy)  # fmt: skip
    result = CliRunner().invoke(cli, ["contact", "show", "c1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "over-pressure blocks channels of weight >= 1 (pressure:over:weight>=1)" in result.output
    assert "blocks email, sms, push, mail, call)" in result.output
    shown = json.loads(CliRunner().invoke(cli, ["contact", "show", "c1", "--json"]).output)[
        "pressure"
    ]
    assert shown["overall"]["blocks"] == ["email", "sms", "push", "mail", "call"]
    assert shown["channels"]["sms"]["blocks"] == ["sms"]


def test_concurrent_first_contributions_to_one_channel_all_count(engine: Engine) -> None:
    # The contact has a barometer but no email row yet: a worker that waited for the contact's
    # lock must still see the email row the other one inserted, or its upsert replaces it.
    rounds, workers = 12, 4
    with engine.begin() as conn:
        ids = _contacts(conn, rounds * 10)
        record_sends(conn, [(cid, "sms", T0) for cid in ids], T0, POLICY)
    batches = [ids[r * 10 : (r + 1) * 10] for r in range(rounds)]
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def worker() -> None:
        try:
            for batch in batches:
                start.wait(timeout=30)
                with engine.begin() as conn:
                    record_sends(conn, [(cid, "email", T0) for cid in batch], T0, POLICY)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engine.begin() as conn:
        loaded = load_barometers(conn, ids, T0, CFG)
    lost = [cid for cid, b in loaded.items() if b.rows["email"].score != float(workers)]
    assert lost == []
    assert all(b.rows["*"].score == workers + 3.0 for b in loaded.values())
