"""Property: whatever happens in whatever order, the gate's promises hold in the ledger.

Random interleavings of clock jumps, consent changes, suppressions and trigger events, with two
workers running every pass concurrently, on SQLite and PostgreSQL. After each run, every marketing
send in the ledger is checked against the consent history, the suppression list, the quiet hours
in the contact's zone and every cap.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from engine.config import load_settings
from engine.consent import record_consent, suppress
from engine.ingest import contact_ids, record_events, upsert_contacts
from engine.policy.loader import lint_policy_text
from engine.policy.loading import full_gate_factory
from engine.runner import Worker
from engine.store.db import make_engine
from engine.store.models import ConsentRecord, Contact, Send, Suppression
from engine.versions import publish_bundle

POLICY = """\
format_version: 1
topics: {promotions: Promotions}
consent:
  defaults: {email: opt_in, sms: opt_in}
quiet_hours:
  - {id: sms-night, channels: [sms], from: "20:00", to: "08:00", days_off: [sun]}
caps:
  - {id: email-2d, channels: [email], max: 2, window: 2d}
  - {id: sms-day, channels: [sms], max: 1, per: day}
  - {id: all-day, channels: [marketing], max: 4, per: day}
outcome: {action: defer, defer_max: 1d}
pressure: {under_extra: 0, over_factor: 1}  # caps exactly as written (pressure has its own tests)
"""
NAG = """\
format_version: 1
id: {id}
name: Nag {id}
objective: other
priority: {priority}
topic: promotions
triggers:
  - event: go
entry:
  reentry: always
  concurrent: true
steps:
  first:
    type: send
    channel: {first}
    content: {{subject: Hello, text: hello, title: Hello, body: hello}}
    next: pause
  pause:
    type: wait
    duration: {pause}
    next: second
  second:
    type: send
    channel: {second}
    content: {{subject: Again, text: again, title: Again, body: again}}
    next: rest
  rest:
    type: wait
    duration: {pause}
    next: first
"""
SCENARIOS = [
    NAG.format(id="nag-a", priority=80, first="email", second="sms", pause="3h"),
    NAG.format(id="nag-b", priority=20, first="sms", second="email", pause="2h"),
]
CONTACTS = [
    ("paris", "Europe/Paris"),
    ("montreal", "America/Montreal"),
    ("tokyo", "Asia/Tokyo"),
    ("nowhere", None),  # unknown zone: the workspace zone (Europe/Paris) applies
]
START = datetime(2026, 3, 6, 18, 0, tzinfo=UTC)  # a Friday evening in Paris
TABLES = ("journal", "sends", "enrollments", "event_inbox", "events", "consent_records",
          "consent_states", "suppressions", "pressure", "contacts", "schedule_firings")  # fmt: skip

operation = st.one_of(
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=30)),
    st.tuples(
        st.just("consent"),
        st.integers(0, 3),
        st.sampled_from(["email", "sms"]),
        st.sampled_from(["opted_in", "opted_out"]),
    ),
    st.tuples(st.just("suppress"), st.integers(0, 3), st.sampled_from(["email", "sms"])),
    st.tuples(st.just("event"), st.integers(0, 3)),
)


@pytest.fixture
def world(engine_url: str) -> Engine:
    engine = make_engine(engine_url)
    with Session(engine) as session, session.begin():
        for yaml_text in SCENARIOS:
            publish_bundle(session, {"yaml": yaml_text, "templates": {}}, now=START)
    yield engine
    engine.dispose()


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DELETE FROM {table}"))
        rows = [{"external_id": name, "email": f"{name}@example.com", "phone": "+33611223344",
                 "timezone": zone, "attributes": {}} for name, zone in CONTACTS]  # fmt: skip
        upsert_contacts(conn, rows, START)


def _pass(workers: list[Worker], now: datetime) -> None:
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            worker.run_once(now)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(operation, min_size=5, max_size=25))
def test_no_send_breaks_consent_suppression_quiet_hours_or_caps(
    world: Engine, ops: list[tuple]
) -> None:  # type: ignore[type-arg]
    _reset(world)
    policy, problems = lint_policy_text(POLICY)
    assert policy is not None, problems
    base = load_settings(env={}).evolve(timezone="Europe/Paris", batch_size=50, lease_seconds=600)
    factory = full_gate_factory(base, policy)
    workers = [Worker(world, base, gate_factory=factory, worker_id=f"w{i}") for i in (1, 2)]
    now = START
    with world.begin() as conn:
        ids = contact_ids(conn, [name for name, _ in CONTACTS], now)
        for name, _ in CONTACTS:  # everyone starts opted in; the operations change that
            for channel in ("email", "sms"):
                record_consent(
                    conn, ids[name], channel, "*", "opted_in", "import", now, policy=policy
                )
    for op in ops:
        name = CONTACTS[op[1]][0] if op[0] != "advance" else ""
        # Every operation gets its own instant, so the ledger's order is the real order.
        now += timedelta(hours=op[1]) if op[0] == "advance" else timedelta(seconds=1)
        with world.begin() as conn:
            if op[0] == "advance":
                pass
            elif op[0] == "consent":
                record_consent(conn, ids[name], op[2], "*", op[3], "operator", now, policy=policy)
            elif op[0] == "suppress":
                address = f"{name}@example.com" if op[2] == "email" else "+33611223344"
                suppress(conn, op[2], address, "hard_bounce", "operator", now, contact_id=ids[name])
            else:
                record_events(conn, [{"contact": name, "name": "go", "properties": {},
                                      "occurred_at": now, "event_key": None}], now)  # fmt: skip
        _pass(workers, now)
    _check_ledger(world)


def _check_ledger(engine: Engine) -> None:
    with engine.connect() as conn:
        zones = {r.id: r.timezone for r in conn.execute(select(Contact.id, Contact.timezone))}
        phones = {r.id: r.phone for r in conn.execute(select(Contact.id, Contact.phone))}
        emails = {r.id: r.email for r in conn.execute(select(Contact.id, Contact.email))}
        consents = conn.execute(
            select(ConsentRecord.contact_id, ConsentRecord.channel, ConsentRecord.state,
                   ConsentRecord.at, ConsentRecord.id).order_by(ConsentRecord.at, ConsentRecord.id)
        ).all()  # fmt: skip
        suppressions = conn.execute(
            select(Suppression.channel, Suppression.address, Suppression.at)
        ).all()
        sends = conn.execute(
            select(Send.contact_id, Send.channel, Send.created_at, Send.kind).order_by(
                Send.created_at
            )
        ).all()
    marketing = [s for s in sends if s.kind == "marketing"]
    weights = {"email": 1.0, "sms": 3.0}
    for s in marketing:
        state = None
        for c in consents:
            if c.contact_id == s.contact_id and c.channel == s.channel and c.at <= s.created_at:
                state = c.state
        assert state == "opted_in", (
            f"marketing {s.channel} to {s.contact_id} at {s.created_at} with consent {state}"
        )
        address = emails[s.contact_id] if s.channel == "email" else phones[s.contact_id]
        assert not any(x.channel in (s.channel, "*") and x.address == address and x.at <= s.created_at
                       for x in suppressions), f"suppressed address reached at {s.created_at}"  # fmt: skip
        zone = ZoneInfo(zones[s.contact_id] or "Europe/Paris")
        local = s.created_at.astimezone(zone)
        if s.channel == "sms":
            assert local.weekday() != 6 and 8 <= local.hour < 20, f"SMS in quiet hours: {local}"
    per_contact: dict[int, list] = defaultdict(list)  # type: ignore[type-arg]
    for s in sends:
        per_contact[s.contact_id].append(s)
    for contact_id, mine in per_contact.items():
        zone = ZoneInfo(zones[contact_id] or "Europe/Paris")
        for s in mine:
            if s.kind != "marketing":
                continue
            if s.channel == "email":
                window = [
                    x
                    for x in mine
                    if x.channel == "email"
                    and s.created_at - timedelta(days=2) < x.created_at <= s.created_at
                ]
                assert len(window) <= 2, f"email cap broken for {contact_id} at {s.created_at}"
            day = s.created_at.astimezone(zone).date()
            today = [
                x
                for x in mine
                if x.created_at.astimezone(zone).date() == day and x.created_at <= s.created_at
            ]
            assert sum(1 for x in today if x.channel == "sms") <= 1 or s.channel != "sms", (
                "sms cap broken"
            )
            assert sum(weights[x.channel] for x in today) <= 4, (
                f"daily marketing cap broken on {day}"
            )
