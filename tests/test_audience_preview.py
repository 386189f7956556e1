"""The designer's live count: the compiled query counted, with a sample, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from engine.audience.membership import rebuild
from engine.audience.preview import preview
from engine.spec.conditions import All, AttributeTest, Expression, SegmentTest, TagTest
from engine.store import db
from engine.store.models import Contact

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    eng = db.make_engine(engine_url)
    yield eng
    eng.dispose()


def test_counts_every_match_and_samples_the_first(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Contact),
            [
                {"external_id": f"c{i:02}", "attributes": {"country": "FR" if i % 3 else "BE"}}
                for i in range(30)
            ],
        )
        found = preview(conn, AttributeTest("country", "eq", "FR"), NOW, sample=3)
        assert found.count == 20 and found.error is None
        assert found.sample == ["c01", "c02", "c04"]
        rebuild(conn, "french", AttributeTest("country", "eq", "FR"), NOW)
        conn.execute(insert(Contact), [{"external_id": "late", "attributes": {"country": "FR"}}])
        # a segment node reads the stored members, as the rebuild of a composed segment does
        assert preview(conn, SegmentTest("french"), NOW).count == 20


def test_a_condition_sql_cannot_compute_says_why(engine: Engine) -> None:
    cond = All((TagTest("vip"), Expression("contact.score > 10", lambda **_: True)))
    with engine.begin() as conn:
        found = preview(conn, cond, NOW)
    assert found.count is None and found.sample == []
    assert found.error is not None and "expressions" in found.error


def test_replace_members_writes_entries_and_exits_within_its_scope(engine: Engine) -> None:
    from sqlalchemy import select

    from engine.audience.membership import count, members, replace_members
    from engine.store.models import SegmentChange

    with engine.begin() as conn:
        conn.execute(insert(Contact), [{"external_id": f"c{i}"} for i in range(6)])
        ids = list(conn.execute(select(Contact.id).order_by(Contact.id)).scalars())
        first = select(Contact.id.label("id")).where(Contact.id.in_(ids[:3]))
        assert replace_members(conn, "vip", first, NOW, reason="import").entered == 3
        # within a scope of two contacts: one stays, one leaves; the others are left alone
        scoped = select(Contact.id.label("id")).where(Contact.id.in_([ids[1]]))
        changes = replace_members(conn, "vip", scoped, NOW, scope=ids[1:3], reason="import")
        assert (changes.entered, changes.exited) == (0, 1)
        assert members(conn, "vip") == ids[:2] and count(conn, "vip") == 2
        reasons = conn.execute(select(SegmentChange.change, SegmentChange.reason)).all()
        assert sorted(reasons) == [("entered", "import")] * 3 + [("exited", "import")]
