"""Manual segments imported from a list of external ids, on SQLite and PostgreSQL: unknown ids
rejected with their line, replace / add / remove applied set-based with their history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, select

from engine.audience.ingest import clean_contact, upsert_contacts
from engine.audience.membership import count_trend, members
from engine.audience.segment_import import (
    ImportResult,
    Rejected,
    SegmentImportError,
    changed_sources,
    csv_ids,
    import_file,
    import_members,
)
from engine.spec.conditions import AttributeTest
from engine.spec.segments import Segment
from engine.store.db import make_engine
from engine.store.models import Contact, SegmentChange

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VIP = Segment(id="vip", name="VIP", format_version=1, manual_source="vip.csv")


@pytest.fixture
def engine(engine_url: str) -> Iterator[Engine]:
    engine = make_engine(engine_url)
    with engine.begin() as conn:
        rows = [clean_contact({"external_id": f"c{i}"}) for i in range(1, 8)]
        upsert_contacts(conn, rows, NOW)
    yield engine
    engine.dispose()


def _ids(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(select(Contact.external_id, Contact.id)).all())  # type: ignore[arg-type]


def _members(conn: Connection, segment_id: str = "vip") -> list[str]:
    names = {v: k for k, v in _ids(conn).items()}
    return sorted(names[i] for i in members(conn, segment_id, limit=1000))


def _import(
    conn: Connection, lines: list[str], mode: str = "replace", **kwargs: Any
) -> tuple[ImportResult, list[Rejected]]:
    rejected: list[Rejected] = []
    given = [(n, line) for n, line in enumerate(lines, start=2)]
    result = import_members(
        conn, VIP, given, mode, kwargs.pop("now", NOW), reason=f"import:{mode}",
        on_reject=rejected.append, **kwargs,
    )  # fmt: skip
    return result, rejected


def _history(conn: Connection) -> list[tuple[str, str, str]]:
    names = {v: k for k, v in _ids(conn).items()}
    rows = conn.execute(
        select(SegmentChange.contact_id, SegmentChange.change, SegmentChange.reason)
        .where(SegmentChange.segment_id == "vip")
        .order_by(SegmentChange.id)
    )
    return [(names[r.contact_id], r.change, r.reason) for r in rows]


def test_replace_rejects_unknown_and_empty_ids_with_their_line(engine: Engine) -> None:
    with engine.begin() as conn:
        result, rejected = _import(conn, ["c1", "nobody", "c2", "", "c1", "ghost"])
        assert _members(conn) == ["c1", "c2"]
        assert (result.read, result.matched, result.entered, result.exited) == (6, 2, 2, 0)
        assert (result.rejected, result.members) == (3, 2)
        # lines as the file numbers them (header on line 1), each with its reason
        assert [(r.line, r.external_id) for r in rejected] == [(3, "nobody"), (5, ""), (7, "ghost")]
        assert "no contact" in rejected[0].message and "empty" in rejected[1].message
        assert count_trend(conn, "vip") == [(NOW.date(), 2)]


def test_replace_again_writes_entries_and_exits(engine: Engine) -> None:
    later = NOW + timedelta(days=1)
    with engine.begin() as conn:
        _import(conn, ["c1", "c2", "c3"])
        result, _ = _import(conn, ["c3", "c4"], now=later)
        assert (result.entered, result.exited, result.members) == (1, 2, 2)
        assert _members(conn) == ["c3", "c4"]
        assert _history(conn)[3:] == [
            ("c4", "entered", "import:replace"),
            ("c1", "exited", "import:replace"),
            ("c2", "exited", "import:replace"),
        ]
        assert count_trend(conn, "vip") == [(NOW.date(), 3), (later.date(), 2)]


@pytest.mark.parametrize("scoped_limit", [1000, 0], ids=["scoped", "whole"])
def test_add_and_remove_leave_the_other_members_alone(engine: Engine, scoped_limit: int) -> None:
    with engine.begin() as conn:
        _import(conn, ["c1", "c2", "c3"])
        added, _ = _import(conn, ["c3", "c4", "c5", "c5"], "add", scoped_limit=scoped_limit)
        assert (added.matched, added.entered, added.exited, added.members) == (3, 2, 0, 5)
        assert _members(conn) == ["c1", "c2", "c3", "c4", "c5"]
        removed, rejected = _import(
            conn, ["c2", "c4", "c7", "x"], "remove", scoped_limit=scoped_limit
        )
        assert (removed.entered, removed.exited, removed.members) == (0, 2, 3)
        assert _members(conn) == ["c1", "c3", "c5"]
        assert [r.external_id for r in rejected] == ["x"]
        assert _history(conn)[3:] == [
            ("c4", "entered", "import:add"),
            ("c5", "entered", "import:add"),
            ("c2", "exited", "import:remove"),
            ("c4", "exited", "import:remove"),
        ]
        assert count_trend(conn, "vip") == [(NOW.date(), 3)]


def test_a_condition_segment_is_refused(engine: Engine) -> None:
    rule = Segment(
        id="fr", name="FR", format_version=1, condition=AttributeTest("country", "eq", "FR")
    )
    with engine.begin() as conn, pytest.raises(SegmentImportError, match="condition segment"):
        import_members(conn, rule, [(2, "c1")], "replace", NOW, reason="x", on_reject=print)


def _statements(conn: Connection, lines: list[str], mode: str) -> int:
    seen: list[str] = []

    def count_it(*args: Any) -> None:
        seen.append(args[2])

    event.listen(conn, "before_cursor_execute", count_it)
    try:
        _import(conn, lines, mode, scoped_limit=0)
    finally:
        event.remove(conn, "before_cursor_execute", count_it)
    return len(seen)


@pytest.mark.parametrize("mode", ["replace", "add", "remove"])
def test_statement_count_does_not_grow_with_the_list(engine: Engine, mode: str) -> None:
    with engine.begin() as conn:
        upsert_contacts(conn, [clean_contact({"external_id": f"d{i}"}) for i in range(80)], NOW)
    with engine.begin() as conn:
        small = _statements(conn, ["c1", "c2", "nobody"], mode)
    with engine.begin() as conn:
        large = _statements(conn, [f"d{i}" for i in range(80)] + ["nobody"], mode)
    assert small == large


def test_csv_ids_reads_the_external_id_column_and_checks_the_header(tmp_path: Path) -> None:
    good = tmp_path / "list.csv"
    good.write_text("email, external_id\na@x.io, c1 \n\nb@x.io\nc@x.io,c3\n", encoding="utf-8")
    assert list(csv_ids(good)) == [(2, "c1"), (4, ""), (5, "c3")]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,email\nc1,a@x.io\n", encoding="utf-8")
    with pytest.raises(SegmentImportError, match=r"bad.csv:1: no external_id column.*id, email"):
        list(csv_ids(bad))


def test_a_list_file_is_imported_again_only_when_it_changed(engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "vip.csv"
    source.write_text("external_id\nc1\nc2\n", encoding="utf-8")
    assert changed_sources(engine, tmp_path, [VIP]) == [(VIP, source)]
    result = import_file(engine, VIP, source, "replace", NOW, on_reject=print, from_source=True)
    assert result.members == 2
    assert changed_sources(engine, tmp_path, [VIP]) == []
    source.write_text("external_id\nc1\nc2\nc3\n", encoding="utf-8")
    assert changed_sources(engine, tmp_path, [VIP]) == [(VIP, source)]
