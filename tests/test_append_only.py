"""The audit log and the consent ledger refuse UPDATE and DELETE in the database itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from engine.store import db
from engine.store.models import AuditEntry, ConsentRecord, Contact

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    found = db.make_engine(engine_url)
    with found.begin() as conn:
        contact = conn.execute(
            insert(Contact).values(external_id="c1").returning(Contact.id)
        ).scalar_one()
        conn.execute(
            insert(ConsentRecord).values(
                contact_id=contact, channel="email", topic="*", state="opted_in",
                source="form", at=T0,
            )
        )  # fmt: skip
        conn.execute(
            insert(AuditEntry).values(
                username="anne", action="publish", target_kind="scenario", target_id="x"
            )
        )
    yield found
    found.dispose()


@pytest.mark.parametrize("table", [AuditEntry, ConsentRecord], ids=["audit_log", "consent"])
def test_update_and_delete_are_refused(engine: Engine, table: type) -> None:
    column, before = {AuditEntry: ("action", "publish"), ConsentRecord: ("state", "opted_in")}[
        table
    ]
    statements = [update(table).values({column: "changed"}), delete(table)]
    if engine.dialect.name == "postgresql":  # SQLite has no TRUNCATE
        statements.append(text(f"TRUNCATE {table.__tablename__} CASCADE"))
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    with engine.connect() as conn:
        assert conn.execute(select(getattr(table, column))).scalars().all() == [before]


def test_appending_still_works(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(AuditEntry).values(username="bob", action="pause", target_kind="scenario")
        )
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one() == 2
