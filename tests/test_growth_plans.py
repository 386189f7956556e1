"""The tables that grow without bound stay fast as they grow: every statement the worker's pass
and the retention purge send to them finds an index on PostgreSQL.

Each statement is captured as the driver receives it (text and parameters) while the real worker
runs a journey through the full policy gate, triggers and all, then explained with sequential
scans and whole-table joins priced out: a statement that still reads one of these tables without
an index condition would read all of it, and a journal of 50 million rows makes that minutes. A statement added later without an index fails
here with its text and plan.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from engine.audience.ingest import clean_contact, clean_event, record_events, upsert_contacts
from engine.audience.retention import purge
from engine.config import load_settings
from engine.policy.loader import load_policy_file
from engine.policy.loading import full_gate_factory
from engine.store.db import make_engine
from engine.worker.enroll import Candidate, enroll
from engine.worker.runner import Worker
from engine.worker.versions import VersionCache, publish_bundle

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

# The tables a busy workspace grows by millions of rows a month. The queues (event_inbox,
# contact_changes, segment_due) are not among them: each pass drains them oldest first, and
# their depth is a gauge of /metrics.
GROWING = ("journal", "sends", "enrollments", "events", "consent_records", "segment_history")

JOURNEY = """\
format_version: 1
id: growth
name: Growth
objective: other
triggers:
  - event: order_placed
  - manual: true
steps:
  check:
    type: condition
    if:
      attribute: score
      op: gte
      value: 0
    then: mail
    else: null
  mail:
    type: send
    channel: email
    content:
      subject: "Hello {{ contact.first_name }}"
      text: "Your score is {{ contact.score }}."
    next: pause
  pause:
    type: wait
    duration: 3d
    next: again
  again:
    type: send
    channel: email
    content:
      subject: Again
      text: again
"""


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = make_engine(engine_url)
    yield eng
    eng.dispose()


def _workspace(engine: Engine, contacts: int) -> list[int]:
    with Session(engine) as session, session.begin():
        publish_bundle(session, {"yaml": JOURNEY, "templates": {}}, now=NOW)
    rows = [
        clean_contact({"external_id": f"c{i}", "email": f"c{i}@example.com", "first_name": "N"})
        for i in range(contacts)
    ]
    with engine.begin() as conn:
        upsert_contacts(conn, rows, NOW - timedelta(days=1))
        ids = list(conn.execute(text("SELECT id FROM contacts ORDER BY id")).scalars())
        conn.execute(
            text(
                "INSERT INTO consent_states (contact_id, channel, topic, state, since, record_id)"
                " VALUES (:c, 'email', '*', 'opted_in', :at, 0)"
            ),
            [{"c": c, "at": NOW - timedelta(days=1)} for c in ids],
        )
    return ids


def _captured(engine: Engine) -> tuple[list[tuple[str, Any]], Any]:
    seen: list[tuple[str, Any]] = []

    def listener(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", listener)
    return seen, listener


def _indexes(cursor: Any) -> dict[str, tuple[str, set[str]]]:
    """Index name → its table and the first columns of every index of that table."""
    cursor.execute(
        "SELECT i.relname, t.relname, a.attname FROM pg_index x"
        " JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]"
        " WHERE t.relnamespace = 'public'::regnamespace"
    )
    rows = cursor.fetchall()
    leading: dict[str, set[str]] = {}
    for _index, table, column in rows:
        leading.setdefault(table, set()).add(column)
    return {index: (table, leading[table]) for index, table, _column in rows}


def _unindexed(node: dict[str, Any], indexes: dict[str, tuple[str, set[str]]]) -> list[str]:
    """What this plan node (or one below it) reads of a growing table without narrowing it by
    the first column of one of its indexes: a table scanned, or an index read whole (on a few
    rows the planner may read another index than the one a large table would take: what counts
    is that one exists). An index read in order under a LIMIT counts too: the LIMIT stops it
    early only when rows match, and the last batch of a purge finds none."""
    found: list[str] = []
    if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in GROWING:
        found.append(f"{node['Relation Name']}: sequential scan")
    table, leading = indexes.get(node.get("Index Name", ""), ("", set()))
    if table in GROWING:
        condition = node.get("Index Cond", "")
        if not any(re.search(rf"\b{column}\b", condition) for column in leading):
            found.append(
                f"{table}: {node['Index Name']} read whole ({condition or 'no condition'})"
            )
    for child in node.get("Plans", ()):
        found += _unindexed(child, indexes)
    return found


def _scans(engine: Engine, statements: list[tuple[str, Any]]) -> dict[str, str]:
    """Each statement reading a growing table without an index condition → what it reads so."""
    found: dict[str, str] = {}
    touching = re.compile(r"\b(FROM|JOIN|UPDATE|DELETE FROM)\s+(" + "|".join(GROWING) + r")\b")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        # On a test's few rows any plan is cheap: price out what a large table would not take
        # (reading all of it, or hashing it whole), so that the plan shows the index it needs.
        for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
            cursor.execute(f"SET {setting} = off")
        cursor.execute("SET work_mem = '64kB'")
        indexes = _indexes(cursor)
        for statement, params in statements:
            head = statement.lstrip().split(None, 1)[0].upper()
            if head not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
                continue
            if not touching.search(statement):
                continue
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            plan = cursor.fetchone()[0][0]["Plan"]
            wrong = _unindexed(plan, indexes)
            if wrong:
                found[statement] = ", ".join(wrong)
        raw.rollback()
    finally:
        raw.close()
    return found


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # a PostgreSQL plan only
def test_the_worker_pass_and_the_purge_read_growing_tables_through_indexes(
    engine: Engine,
) -> None:
    ids = _workspace(engine, 40)
    policy = load_policy_file(ROOT / "scenarios" / "policy.yaml")
    settings = load_settings(env={}).evolve(batch_size=10)
    worker = Worker(engine, settings, gate_factory=full_gate_factory(settings, policy))
    statements, listener = _captured(engine)
    try:
        with engine.begin() as conn:  # half enter by hand, half on an event
            live = {sc.id: (vid, sc) for vid, sc in VersionCache().live(conn)}
            vid, scenario = live["growth"]
            enroll(conn, [Candidate(vid, scenario, c, "once", NOW, None, "manual")
                          for c in ids[:20]], NOW)  # fmt: skip
            orders = [{"contact": f"c{i}", "name": "order_placed"} for i in range(20, 40)]
            record_events(conn, [clean_event(o, NOW) for o in orders], NOW)
        worker.run_once(NOW)
        worker.run_once(NOW + timedelta(days=4))  # the wait is over: the second send
        purge(engine, NOW + timedelta(days=400), events_days=30, journal_days=30, batch=7)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    with engine.connect() as conn:
        sent = conn.execute(text("SELECT count(*) FROM sends")).scalar_one()
    assert sent == 80  # the journey ran for everyone: its statements were all exercised
    touching = [s for s, _ in statements if any(f" {t}" in s for t in GROWING)]
    assert len(touching) > 20, touching
    scans = _scans(engine, statements)
    assert not scans, "\n\n".join(f"{s}\n--\n{p}" for s, p in scans.items())


@pytest.mark.pg
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # PostgreSQL's autovacuum
def test_the_hot_tables_are_vacuumed_after_a_small_share_of_changes(engine: Engine) -> None:
    """The server's default waits for a fifth of a table to be dead: 200,000 dead enrollments
    in the due index the claim walks, at a million contacts."""
    with engine.connect() as conn:
        options = {
            table: dict(o.split("=", 1) for o in (found or []))
            for table, found in conn.execute(
                text("SELECT relname, reloptions FROM pg_class WHERE relkind = 'r'"
                     " AND relnamespace = 'public'::regnamespace")
            )
        }  # fmt: skip
    for table in ("enrollments", "pressure"):
        assert float(options[table]["autovacuum_vacuum_scale_factor"]) <= 0.02, table
    for queue in ("event_inbox", "contact_changes", "segment_due"):
        assert float(options[queue]["autovacuum_vacuum_scale_factor"]) == 0, queue
        assert int(options[queue]["autovacuum_vacuum_threshold"]) <= 5000, queue
    for ledger in ("sends", "journal", "events"):
        assert float(options[ledger]["autovacuum_vacuum_insert_scale_factor"]) <= 0.05, ledger
