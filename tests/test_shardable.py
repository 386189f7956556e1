"""The hot path stays shardable by contact: every statement of a worker batch that touches a
per-contact table names the contact (or the enrollment) it is about.

One batch of the real Worker with the full policy gate (claim, contact read, the gate's reads,
the per-contact lock, sends, journal, barometer) runs on SQLite and PostgreSQL with every
statement captured at the cursor. Each statement is parsed (sqlglot) and, for each per-contact
table it reads or writes, checked for a conjunctive predicate on that table's shard key
(``contact_id``; ``id`` for contacts and, as the enrollment's contact, for enrollments) in its
WHERE or JOIN; an INSERT must carry the key among its columns. That is what lets Citus route the
statement to the one shard holding the contact (README, "Past one machine"). The few statements
that are cross-contact by design are listed in EXCEPTIONS, each with its reason and a narrow
match on the statement's shape, not on its text, so a rewrite of the statements keeps passing
as long as it keeps the property.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from sqlalchemy import event

from engine.config import load_settings
from engine.policy.loader import load_policy_file
from engine.policy.loading import full_gate_factory
from engine.store.db import make_engine
from engine.store.models import Base
from engine.worker.runner import PassReport, Worker

exp = sqlglot.exp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import steps  # noqa: E402  (the benchmark's seed: the journey condition → send → wait)

CONTACTS = 20

# Per-contact tables: those whose rows belong to one contact (a contact_id column), and the
# contacts themselves. Everything else (scenarios, versions, policy, segments' definitions,
# users, keys, secrets) would be a Citus reference table, read freely.
PER_CONTACT = {
    name: "contact_id" for name, table in Base.metadata.tables.items() if "contact_id" in table.c
} | {"contacts": "id"}
# an enrollment's id names its contact's row as surely as the contact id (the enrollment's
# contact_id is its shard key; see the note for the key these statements would then carry)
ALSO_KEYED = {"enrollments": "id"}


@dataclass(frozen=True)
class Exception_:
    name: str
    reason: str
    matches: Callable[[Any, Any], bool]  # (statement, unfiltered table node) → allowed


def _is_claim(statement: Any, table: Any) -> bool:
    """The claim's inner SELECT: due enrollments, oldest first, a batch's worth."""
    select = table.find_ancestor(exp.Select)
    return (
        table.name == "enrollments"
        and isinstance(statement, exp.Update)
        and select is not None
        and select.args.get("limit") is not None
        and any(c.name == "due_at" for c in select.find_all(exp.Column))
    )


def _is_pressure_snapshot(statement: Any, table: Any) -> bool:
    """A count of barometer readings per channel, over everyone."""
    select = table.find_ancestor(exp.Select)
    group = select.args.get("group") if select is not None else None
    return (
        table.name == "pressure"
        and isinstance(statement, exp.Select)
        and group is not None
        and [c.name for c in group.find_all(exp.Column)] == ["channel"]
    )


def _is_suppression_read(statement: Any, table: Any) -> bool:
    """Suppressions looked up by the addresses of the batch's messages."""
    where = statement.args.get("where")
    return (
        table.name == "suppressions"
        and isinstance(statement, exp.Select)
        and where is not None
        and any(c.name == "address" for c in _conjuncts_columns(where))
    )


EXCEPTIONS = (
    Exception_(
        "claim",
        "the claim picks due work across contacts by design; on Citus it runs on every shard "
        "(or each worker claims from its own shards) and everything after it is per contact",
        _is_claim,
    ),
    Exception_(
        "pressure health snapshot",
        "HealthWatch records the day's over-pressured share per channel at most every "
        "SNAPSHOT (not per batch): a global aggregate, a multi-shard query on Citus",
        _is_pressure_snapshot,
    ),
    Exception_(
        "suppressions by address",
        "a suppression belongs to an address, which may have no contact yet: the table is "
        "keyed by (channel, address) and would be a reference table (or distributed by address)",
        _is_suppression_read,
    ),
)


def _conjuncts(where: Any) -> Iterator[Any]:
    """The predicates that must all hold: AND's operands, through parentheses."""
    node = where.this if isinstance(where, exp.Where) else where
    if isinstance(node, exp.Paren):
        yield from _conjuncts(node.this)
    elif isinstance(node, exp.And):
        yield from _conjuncts(node.left)
        yield from _conjuncts(node.right)
    else:
        yield node


def _conjuncts_columns(where: Any) -> Iterator[Any]:
    for predicate in _conjuncts(where):
        sides = [predicate.left, predicate.right] if isinstance(predicate, exp.EQ) else []
        sides += [predicate.this] if isinstance(predicate, exp.In) else []
        yield from (side for side in sides if isinstance(side, exp.Column))


def _keys_on(predicate: Any, names: set[str], columns: set[str]) -> bool:
    """`predicate` is `key = …`, `key IN (…)` or `key = ANY(…)` for one of the table's keys."""
    if isinstance(predicate, exp.EQ):
        sides = [predicate.left, predicate.right]
    elif isinstance(predicate, exp.In):
        sides = [predicate.this]
    else:
        return False
    return any(
        isinstance(side, exp.Column)
        and side.name in columns
        and (side.table in names or not side.table)
        for side in sides
    )


def _scope_predicates(table: Any) -> Iterator[Any]:
    """The conjunctive predicates of the statement part that reads `table`: its WHERE and the
    ON of the joins beside it."""
    scope = table.find_ancestor(exp.Select, exp.Update, exp.Delete)
    if scope is None:
        return
    where = scope.args.get("where")
    if where is not None:
        yield from _conjuncts(where)
    for join in scope.args.get("joins") or ():
        if join.args.get("on") is not None:
            yield from _conjuncts(join.args["on"])


def _inserted(statement: Any) -> Any | None:
    """The table an INSERT writes (`INSERT INTO t (columns)` parses as a schema around it)."""
    if not isinstance(statement, exp.Insert):
        return None
    target = statement.this
    return target.this if isinstance(target, exp.Schema) else target


def _written(statement: Any) -> str | None:
    table = _inserted(statement) if isinstance(statement, exp.Insert) else None
    if isinstance(statement, exp.Update):
        table = statement.this
    return table.name if isinstance(table, exp.Table) else None


def unkeyed(statement: Any) -> list[Any]:
    """The per-contact table references of a parsed statement that are not keyed."""
    found = []
    for table in statement.find_all(exp.Table):
        if table.name not in PER_CONTACT:
            continue
        if table is _inserted(statement):
            target = statement.this
            columns = [c.name for c in target.expressions] if isinstance(target, exp.Schema) else []
            if PER_CONTACT[table.name] not in columns:
                found.append(table)  # rows that do not say whose they are
            continue
        columns = {PER_CONTACT[table.name]} | {ALSO_KEYED.get(table.name, PER_CONTACT[table.name])}
        names = {table.name, table.alias_or_name}
        if not any(_keys_on(p, names, columns) for p in _scope_predicates(table)):
            found.append(table)
    return found


def batch_statements(url: str) -> tuple[list[str], PassReport]:
    """Every statement one worker batch sends to the database (the seed's excepted)."""
    version = steps.seed(url, CONTACTS)
    assert version
    engine = make_engine(url)
    settings = load_settings(env={}).evolve(batch_size=500)
    policy = load_policy_file(ROOT / "scenarios" / "policy.yaml")
    worker = Worker(engine, settings, gate_factory=full_gate_factory(settings, policy))
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    report = PassReport()
    try:
        worker.process_batch(steps.NOW, report)
    finally:
        engine.dispose()
    return seen, report


def _parse(statement: str, dialect: str) -> Any | None:
    words = statement.strip().split(None, 1)
    if not words or words[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
        return None
    return sqlglot.parse_one(statement, read=dialect)


def _violations(statements: list[str], dialect: str) -> tuple[list[str], set[str]]:
    bad, excepted = [], set()
    for text in statements:
        statement = _parse(text, dialect)
        if statement is None:
            continue
        for table in unkeyed(statement):
            allowed = [e for e in EXCEPTIONS if e.matches(statement, table)]
            if allowed:
                excepted.add(allowed[0].name)
            else:
                bad.append(f"{table.name} not keyed by {PER_CONTACT[table.name]} in: {text[:300]}")
    return bad, excepted


def test_every_batch_statement_on_a_contact_table_names_its_contact(engine_url: str) -> None:
    statements, report = batch_statements(engine_url)
    assert (report.claimed, report.sends) == (CONTACTS, CONTACTS)
    dialect = "sqlite" if engine_url.startswith("sqlite") else "postgres"
    # the batch's writes went through the captured connection (a path around it would escape
    # the check): the ledger, the journal, the enrollments and the barometer
    written = {_written(s) for s in filter(None, (_parse(s, dialect) for s in statements))}
    assert {"sends", "journal", "enrollments", "pressure"} <= written
    bad, excepted = _violations(statements, dialect)
    assert bad == []
    assert "claim" in excepted  # the exceptions are matched, not merely listed


@pytest.mark.parametrize(
    ("statement", "keyed"),
    [
        ("SELECT * FROM sends WHERE sends.contact_id IN (1, 2) AND created_at > 0", True),
        ("SELECT * FROM sends WHERE contact_id = ANY (%(ids)s::BIGINT[])", True),
        ("SELECT * FROM sends WHERE created_at > 0", False),
        ("SELECT * FROM sends WHERE contact_id = 1 OR created_at > 0", False),
        ("UPDATE enrollments SET step_id = 'a' WHERE id = 1 AND attempt = 2", True),
        ("UPDATE enrollments SET step_id = 'a' WHERE attempt = 2", False),
        ("INSERT INTO journal (at, kind, contact_id) VALUES (1, 'x', 3)", True),
        ("INSERT INTO journal (at, kind) VALUES (1, 'x')", False),
        ("SELECT c.id FROM contacts c JOIN pressure p ON p.contact_id = c.id WHERE c.id = 1", True),
        (
            "SELECT c.id FROM contacts c JOIN pressure p ON p.channel = 'email' WHERE c.id = 1",
            False,
        ),
        ("SELECT bundle FROM scenario_versions WHERE id = 1", True),
    ],
)
def test_the_check_tells_keyed_statements_from_the_others(statement: str, keyed: bool) -> None:
    assert (unkeyed(sqlglot.parse_one(statement, read="postgres")) == []) is keyed
