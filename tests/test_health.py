"""Pressure health (engine.policy.health), on SQLite and PostgreSQL: the rates equal a hand
count; a signal is raised by its threshold and not below it, never before `min_sends`; a raised
signal tightens the caps of its channel in a real gate decision, and stops once it clears."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from engine.audience.ingest import clean_contact, upsert_contacts
from engine.config import load_settings
from engine.policy.base import SendRequest
from engine.policy.health import health, health_lines, record_health_day
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.policy.model import Policy
from engine.store.db import make_engine
from engine.store.models import Contact, Event, Pressure, Send
from engine.worker.enroll import contact_views

NOW = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
RECENT = NOW - timedelta(days=2)  # in the recent span (7 days)
BASE = NOW - timedelta(days=20)  # in the baseline (the 28 days before)
_keys = count()


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    made = make_engine(engine_url)
    yield made
    made.dispose()


def policy(health_yaml: str, extra: str = "") -> Policy:
    text = f"format_version: 1\nconsent: {{defaults: {{email: opt_out, sms: opt_out}}}}\n{extra}"
    text += "pressure:\n  health:\n" + "".join(f"    {line}\n" for line in health_yaml.splitlines())
    found, problems = lint_policy_text(text, "policy.yaml")
    assert found is not None, problems
    return found


def contacts(conn: Connection, n: int) -> list[int]:
    rows = [clean_contact({"external_id": f"c{i}", "email": f"c{i}@x.io"}) for i in range(n)]
    upsert_contacts(conn, rows, BASE - timedelta(days=1))
    return list(conn.execute(select(Contact.id).order_by(Contact.id)).scalars())


def sends(
    conn: Connection, ids: list[int], n: int, at: datetime, channel: str = "email",
    scenario: str = "promo", status: str = "sent",
) -> list[str]:  # fmt: skip
    keys = [f"k{next(_keys)}" for _ in range(n)]
    conn.execute(insert(Send), [
        {"send_key": k, "contact_id": ids[i % len(ids)], "scenario_id": scenario,
         "step_id": "offer", "channel": channel, "kind": "marketing", "status": status,
         "payload": {}, "attempts": 1, "created_at": at, "sent_at": at}
        for i, k in enumerate(keys)
    ])  # fmt: skip
    return keys


def events(
    conn: Connection, ids: list[int], name: str, n: int, at: datetime,
    channel: str | None = "email", keys: list[str] | None = None,
) -> None:  # fmt: skip
    rows = []
    for i in range(n):
        props: dict[str, Any] = {} if channel is None else {"channel": channel}
        if keys:
            props["send_key"] = keys[i]
        rows.append({"contact_id": ids[i % len(ids)], "name": name, "properties": props,
                     "occurred_at": at, "received_at": at})  # fmt: skip
    conn.execute(insert(Event), rows)


def fixture_counts(conn: Connection) -> list[int]:
    """The hand-counted fixture: email 100 sends in the baseline, 50 recent; SMS 20 recent."""
    ids = contacts(conn, 10)
    sends(conn, ids, 100, BASE)
    events(conn, ids, "email_opened", 40, BASE)
    events(conn, ids, "unsubscribed", 1, BASE)
    promo = sends(conn, ids, 30, RECENT)
    sends(conn, ids, 20, RECENT, scenario="welcome")
    sends(conn, ids, 7, RECENT, status="cancelled")  # never left: not a send
    events(conn, ids, "email_opened", 10, RECENT, keys=promo)
    events(conn, ids, "email_clicked", 5, RECENT, keys=promo)
    events(conn, ids, "unsubscribed", 3, RECENT, keys=promo)
    events(conn, ids, "email_complained", 1, RECENT, keys=promo)
    events(conn, ids, "email_bounced", 2, RECENT, channel=None)  # channel from the name
    sends(conn, ids, 20, RECENT, channel="sms", scenario="sms-promo")
    events(conn, ids, "unsubscribed", 1, RECENT, channel="sms")
    events(conn, ids, "email_opened", 99, NOW - timedelta(days=40))  # before the baseline
    events(conn, ids, "order_placed", 5, RECENT)  # not a health signal
    return ids


def test_rates_equal_a_hand_count(engine: Engine) -> None:
    p = policy("min_sends: 10\nsignals: {open_rate: {fall: 0.7}, unsubscribe_rate: {max: 0.05}}")
    with engine.begin() as conn:
        fixture_counts(conn)
        result = health(conn, NOW, p)
    email, sms = result.channels["email"], result.channels["sms"]
    assert email.recent["sends"] == 50 and email.baseline["sends"] == 100
    s = email.signals
    assert (s["open_rate"].value, s["open_rate"].baseline) == (10 / 50, 40 / 100)
    assert s["click_rate"].value == 5 / 50 and s["click_rate"].baseline == 0
    assert (s["unsubscribe_rate"].value, s["unsubscribe_rate"].baseline) == (3 / 50, 1 / 100)
    assert s["complaint_rate"].value == 1 / 50 and s["bounce_rate"].value == 2 / 50
    assert s["open_rate"].ratio == pytest.approx(0.5)
    assert s["open_rate"].difference == pytest.approx(-0.2)
    assert sms.recent["sends"] == 20 and sms.signals["unsubscribe_rate"].value == 1 / 20
    # opens fell to half their baseline (below 0.7 of it); unsubscribes above 5%
    assert [(c, r.name, r.crossed) for c, r in result.raised()] == [
        ("email", "open_rate", "fall"), ("email", "unsubscribe_rate", "max"),
    ]  # fmt: skip
    # the series: per day, the rate over the 7 days ending that day
    day = result.days.index(RECENT.date())
    assert email.series["open_rate"][day] == 10 / 50
    assert email.series["open_rate"][result.days.index(BASE.date())] == 40 / 100
    assert len(result.days) == 36 and email.series["open_rate"][0] is None
    lines = "\n".join(health_lines(result))
    assert "email: 50 sends (baseline 100)" in lines and "RAISED (fall)" in lines


def test_scenario_filter_counts_only_its_sends_and_their_events(engine: Engine) -> None:
    p = policy("min_sends: 10")
    with engine.begin() as conn:
        fixture_counts(conn)
        result = health(conn, NOW, p, scenarios=["promo"])
    email = result.channels["email"]
    assert email.recent["sends"] == 30 and email.baseline["sends"] == 100
    # the recent events that name a promo send; the baseline ones name none, bounces neither
    assert email.recent.get("opens") == 10 and email.recent.get("bounces", 0) == 0
    assert email.signals["unsubscribe_rate"].value == 3 / 30
    assert "sms" not in result.channels  # no promo SMS, no over-pressure reading


def test_a_rise_over_the_baseline_raises_and_a_lower_one_does_not(engine: Engine) -> None:
    p = policy("min_sends: 10\nsignals: {unsubscribe_rate: {rise: 1.5}}")
    with engine.begin() as conn:
        ids = contacts(conn, 5)
        sends(conn, ids, 100, BASE)
        events(conn, ids, "unsubscribed", 2, BASE)  # 2%
        sends(conn, ids, 50, RECENT)
        events(conn, ids, "unsubscribed", 1, RECENT)  # 2%: as before
        calm = health(conn, NOW, p).channels["email"].signals["unsubscribe_rate"]
        events(conn, ids, "unsubscribed", 1, RECENT)  # 4%: 2 x the baseline
        rising = health(conn, NOW, p).channels["email"].signals["unsubscribe_rate"]
    assert calm.value == 0.02 and not calm.raised
    assert rising.value == 0.04 and rising.crossed == "rise" and rising.ratio == 2.0


def test_min_sends_is_respected(engine: Engine) -> None:
    strict = policy("min_sends: 51\nsignals: {unsubscribe_rate: {max: 0.01}}")
    loose = policy("min_sends: 50\nsignals: {unsubscribe_rate: {max: 0.01}}")
    rise = policy("min_sends: 50\nsignals: {unsubscribe_rate: {rise: 1.5}}")
    with engine.begin() as conn:
        ids = contacts(conn, 5)
        sends(conn, ids, 49, BASE)  # a baseline too small to compare with
        events(conn, ids, "unsubscribed", 1, BASE)
        sends(conn, ids, 50, RECENT)
        events(conn, ids, "unsubscribed", 5, RECENT)  # 10%
        assert health(conn, NOW, strict).raised() == []  # 50 sends: not enough
        assert [s.crossed for _, s in health(conn, NOW, loose).raised()] == ["max"]
        assert health(conn, NOW, rise).raised() == []  # the baseline had 49


def test_over_pressured_share_against_its_recorded_days(engine: Engine) -> None:
    p = policy("min_sends: 4\nsignals: {over_pressured: {rise: 1.5, max: 0.9}}")
    cfg = p.pressure
    with engine.begin() as conn:
        ids = contacts(conn, 10)
        rows = [{"contact_id": cid, "channel": "email", "score": 10.0 if i < 1 else 0.5,
                 "state": "equilibrium", "updated_at": BASE, "signals": []}
                for i, cid in enumerate(ids)]  # fmt: skip
        conn.execute(insert(Pressure), rows)
        assert record_health_day(conn, BASE, cfg, UTC) == 1  # 1 of 10 over, twenty days ago
        conn.execute(Pressure.__table__.update().values(score=10.0, updated_at=NOW)
                     .where(Pressure.contact_id.in_(ids[:3])))  # fmt: skip
        result = health(conn, NOW, p)
    share = result.channels["email"].signals["over_pressured"]
    assert (share.value, share.baseline) == (0.3, 0.1) and share.crossed == "rise"
    series = result.channels["email"].series["over_pressured"]
    assert series[result.days.index(BASE.date())] == 0.1 and series[-1] == 0.3


# --- tightening --------------------------------------------------------------------------------


def _decision(engine: Engine, factory: Any, contact_id: int, now: datetime) -> Any:
    with engine.begin() as conn:
        views = contact_views(conn, [contact_id])
        gate = factory(conn, views, now)
        request = SendRequest(f"new{next(_keys)}", 1, "promo", 1, "offer", "email", None,
                              "marketing", 0, on_blocked="skip")  # fmt: skip
        return gate.decide(request, views[contact_id], now)


def test_a_raised_signal_halves_the_cap_in_a_real_gate_decision(engine: Engine) -> None:
    caps = "caps:\n  - {id: email-week, channels: [email], max: 2, window: 7d}\n"
    p = policy(
        "min_sends: 10\nsignals: {unsubscribe_rate: {max: 0.01}}\ntighten: {factor: 0.5}", caps
    )
    with engine.begin() as conn:
        ids = contacts(conn, 20)
        sends(conn, ids[1:], 20, RECENT)
        events(conn, ids[1:], "unsubscribed", 2, RECENT)  # 2 of 21 sends: raised
        sends(conn, ids[:1], 1, NOW - timedelta(hours=1))  # the contact has 1 of its 2
    factory = full_gate_factory(load_settings(env={}), p)
    tightened = _decision(engine, factory, ids[0], NOW)
    assert (tightened.action, tightened.reason) == ("skip", "cap:email-week:tightened")
    with engine.begin() as conn:  # many more quiet sends: 2 of 221, below 1%
        sends(conn, ids[1:], 200, RECENT)
    later = NOW + timedelta(minutes=1)
    assert _decision(engine, factory, ids[0], later).reason == "cap:email-week:tightened"  # read
    # at most every 5 minutes: then the signal has cleared and the cap is 2 again
    assert _decision(engine, factory, ids[0], NOW + timedelta(minutes=6)).allowed
    # without `tighten`, the same raised signal changes no cap
    untouched = policy("min_sends: 10\nsignals: {unsubscribe_rate: {max: 0.001}}", caps)
    assert health_raised(engine, untouched)
    assert _decision(engine, full_gate_factory(load_settings(env={}), untouched), ids[0],
                     NOW).allowed  # fmt: skip


def health_raised(engine: Engine, p: Policy) -> bool:
    with engine.connect() as conn:
        return bool(health(conn, NOW, p).raised())


def test_health_settings_are_checked_with_their_lines() -> None:
    text = (
        "format_version: 1\npressure:\n  health:\n    min_sends: 0\n"
        "    signals: {unsubscribe_rte: {max: 0.1}, open_rate: {fall: 1.5}}\n"
        "    tighten: {factor: 2}\n"
    )
    found, problems = lint_policy_text(text, "policy.yaml")
    assert found is None
    where = {(p.path, p.line) for p in problems}
    assert (("pressure", "health", "min_sends"), 4) in where
    assert (("pressure", "health", "signals", "unsubscribe_rte"), 5) in where
    assert (("pressure", "health", "signals", "open_rate", "fall"), 5) in where
    assert (("pressure", "health", "tighten", "factor"), 6) in where
    defaults, _ = lint_policy_text("format_version: 1\n", "policy.yaml")
    assert defaults is not None and defaults.pressure.health.tighten is None
    assert defaults.pressure.health.signals["unsubscribe_rate"].rise == 1.5
