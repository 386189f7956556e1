"""A manual segment's members imported from a list of external ids (a CSV file, an API call).

The ids are read as a stream and staged in a temporary table of the connection in batches;
the import then runs a fixed number of set-based statements whatever the size of the list:
unknown ids are reported with their line (never dropped silently), the known ones resolved to
contacts, and the members changed through engine.audience.membership, which writes each entry
and exit to the history and updates the day's count:

- ``replace``: the members become exactly the listed contacts (one `replace_members`);
- ``add`` / ``remove``: the listed contacts join or leave; the others stay as they are.

A segment whose file names its list (``manual: {source: vip.csv}``) remembers the SHA-256 of
the file last imported from it, in the ``cursors`` table, so `parcours up` imports a list again
only when its file changed.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    Select,
    Table,
    Text,
    exists,
    false,
    func,
    insert,
    select,
    text,
    update,
)

from engine.audience.membership import Changes, members_table, replace_members
from engine.errors import ParcoursError
from engine.spec.segments import CONTACT_COLUMN, Segment
from engine.store.models import Contact, Cursor

MODES = ("replace", "add", "remove")
STAGE_BATCH = 10_000  # ids per INSERT while staging
SCOPED_LIMIT = 1_000  # an add or remove of at most this many contacts touches only them
SOURCE_CURSOR = "segment-source:"  # + segment id: the hash of the list file last imported
# Columns a rejects file adds; ignored on import, so a fixed rejects file imports as it is.
REJECT_COLUMNS = ("_rejected_row", "_rejected_field", "_rejected_because")
UNKNOWN = "no contact has this external id (import the contact first)"
EMPTY = f"{CONTACT_COLUMN} is empty"

_staged = Table(
    "segment_import_ids",
    MetaData(),
    Column("line", BigInteger, nullable=False),
    Column("external_id", Text, nullable=False),
)
_resolved = Table(
    "segment_import_contacts", MetaData(), Column("contact_id", BigInteger, primary_key=True)
)
_CREATE = {
    "postgresql": (
        "CREATE TEMP TABLE IF NOT EXISTS segment_import_ids "
        "(line bigint NOT NULL, external_id text NOT NULL) ON COMMIT DELETE ROWS",
        "CREATE TEMP TABLE IF NOT EXISTS segment_import_contacts "
        "(contact_id bigint PRIMARY KEY) ON COMMIT DELETE ROWS",
    ),
    "sqlite": (
        "CREATE TEMP TABLE IF NOT EXISTS segment_import_ids "
        "(line INTEGER NOT NULL, external_id TEXT NOT NULL)",
        "CREATE TEMP TABLE IF NOT EXISTS segment_import_contacts (contact_id INTEGER PRIMARY KEY)",
    ),
}


_COPY = "COPY segment_import_ids (line, external_id) FROM STDIN"


class SegmentImportError(ParcoursError):
    """The list cannot be imported at all (no external_id column, a condition segment...)."""


@dataclass(frozen=True)
class Rejected:
    """A line of the list that names no contact."""

    line: int
    external_id: str
    message: str


@dataclass(frozen=True)
class ImportResult:
    """What an import did: rows read, contacts matched, entries, exits, rejects, members now."""

    read: int
    matched: int
    entered: int
    exited: int
    rejected: int
    members: int


def check_importable(segment: Segment) -> None:
    """Refuse a condition segment: its members follow its condition, not a list."""
    if not segment.is_manual:
        raise SegmentImportError(
            f"segment '{segment.id}' is a condition segment: its members follow its condition "
            f"and cannot be imported; write manual: {{}} instead of condition: in its file "
            f"to keep a list"
        )


def csv_ids(path: Path) -> Iterator[tuple[int, str]]:
    """(line, external id) of each data row of a CSV whose header names `external_id`."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            yield from _csv_ids(handle, str(path))
    except UnicodeDecodeError as exc:
        message = f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8 CSV"
        raise SegmentImportError(message) from None
    except csv.Error as exc:
        raise SegmentImportError(f"{path}: not readable as CSV ({exc})") from None


def _csv_ids(handle: TextIO, name: str) -> Iterator[tuple[int, str]]:
    reader = csv.reader(handle)
    header = [column.strip() for column in next(reader, [])]
    if CONTACT_COLUMN not in header:
        shown = ", ".join(header) or "none"
        raise SegmentImportError(
            f"{name}:1: no {CONTACT_COLUMN} column (the first line names the columns: {shown}); "
            f"add an {CONTACT_COLUMN} column with the contacts' external ids"
        )
    at = header.index(CONTACT_COLUMN)
    for row in reader:
        if not row:
            continue  # a blank line
        yield reader.line_num, row[at].strip() if at < len(row) else ""


def import_members(
    conn: Connection,
    segment: Segment,
    ids: Iterable[tuple[int, str]],
    mode: str,
    now: datetime,
    *,
    reason: str,
    on_reject: Callable[[Rejected], None],
    scoped_limit: int = SCOPED_LIMIT,
) -> ImportResult:
    """Change a manual segment's members to, by or without the contacts `ids` name.

    `ids` gives (line, external id) pairs; each line naming no contact goes to `on_reject`, in
    line order. Runs in the caller's transaction: all of it, or nothing.
    """
    check_importable(segment)
    if mode not in MODES:
        raise SegmentImportError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
    dialect = conn.dialect.name
    for statement in _CREATE[dialect]:
        conn.execute(text(statement))
    read = _stage(conn, ids)
    contacts = Contact.__table__.c
    s = _staged.c
    known_id = contacts.external_id == s.external_id
    known = exists().where(known_id)
    unknown = conn.execute(
        select(s.line, s.external_id).where(~known).order_by(s.line)
    ).all()  # rejects are few next to the list; read before the next statement reuses the cursor
    for line, external_id in unknown:
        on_reject(Rejected(int(line), str(external_id), UNKNOWN if external_id else EMPTY))
    # from the list into the contacts' unique index: the list itself has no index
    listed = select(contacts.id).join_from(_staged, Contact.__table__, known_id).distinct()
    conn.execute(insert(_resolved).from_select(["contact_id"], listed))
    matched = int(conn.execute(select(func.count()).select_from(_resolved)).scalar_one())
    changes = _apply(conn, segment.id, mode, matched, now, reason, scoped_limit)
    for table in ("segment_import_ids", "segment_import_contacts"):
        conn.execute(text(f"DELETE FROM {table}"))
    members = int(
        conn.execute(
            select(func.count()).where(members_table.c.segment_id == segment.id)
        ).scalar_one()
    )
    return ImportResult(read, matched, changes.entered, changes.exited, len(unknown), members)


def _stage(conn: Connection, ids: Iterable[tuple[int, str]]) -> int:
    """Insert the ids (COPY on PostgreSQL, batches of inserts on SQLite); returns the rows read."""
    if conn.dialect.name == "postgresql":
        return _copy(conn, ids)
    read, batch = 0, []
    for line, external_id in ids:
        read += 1
        batch.append({"line": line, "external_id": external_id})
        if len(batch) >= STAGE_BATCH:
            conn.execute(insert(_staged), batch)
            batch = []
    if batch:
        conn.execute(insert(_staged), batch)
    return read


def _copy(conn: Connection, ids: Iterable[tuple[int, str]]) -> int:
    # the driver's COPY, on the connection's own transaction: a third of the time of inserts
    driver: Any = conn.connection.driver_connection
    read = 0
    with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
        for row in ids:
            read += 1
            copy.write_row(row)
    return read


def _apply(
    conn: Connection,
    segment_id: str,
    mode: str,
    matched: int,
    now: datetime,
    reason: str,
    scoped_limit: int,
) -> Changes:
    m, r = members_table.c, _resolved.c
    listed: Select[Any] = select(r.contact_id.label("id"))
    if mode == "replace":
        return replace_members(conn, segment_id, listed, now, reason=reason)
    if matched <= scoped_limit:
        # a handful of contacts: only their own membership is looked at
        scope: Sequence[int] = list(conn.execute(select(r.contact_id)).scalars())
        query = listed if mode == "add" else select(r.contact_id.label("id")).where(false())
        return replace_members(conn, segment_id, query, now, scope=scope, reason=reason)
    # a large list: the new member set in one query, set-based like a rebuild
    current = select(m.contact_id.label("id")).where(m.segment_id == segment_id)
    if mode == "add":
        union = current.union(listed).subquery()
        return replace_members(conn, segment_id, select(union.c.id), now, reason=reason)
    staying = current.where(~exists().where(r.contact_id == m.contact_id))
    return replace_members(conn, segment_id, staying, now, reason=reason)


# ------------------------------------------------------------------ the list's file


def file_hash(path: Path) -> int:
    """The file's SHA-256, cut to 60 bits so it fits the cursors table's integer."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return int(digest.hexdigest()[:15], 16)


def imported_hash(conn: Connection, segment_id: str) -> int | None:
    """The hash of the list file last imported into the segment from its source, if any."""
    found = conn.execute(
        select(Cursor.value).where(Cursor.name == SOURCE_CURSOR + segment_id)
    ).scalar()
    return None if found is None else int(found)


def remember_hash(conn: Connection, segment_id: str, value: int, now: datetime) -> None:
    name = SOURCE_CURSOR + segment_id
    moved = conn.execute(
        update(Cursor).where(Cursor.name == name).values(value=value, updated_at=now)
    ).rowcount
    if not moved:
        conn.execute(insert(Cursor).values(name=name, value=value, updated_at=now))


def source_path(folder: Path, segment: Segment) -> Path:
    """The list file a manual segment names, in the segments folder."""
    if segment.manual_source is None:
        raise SegmentImportError(
            f"segment '{segment.id}' names no list file: give one (parcours segment import "
            f"{segment.id} FILE.csv), or write manual: {{source: FILE.csv}} in its file"
        )
    return folder / segment.manual_source


def rejects_path(path: Path) -> Path:
    """Where the rejected lines of `path` go by default: FILE.rejects.csv beside it."""
    return path.with_name(path.stem + ".rejects" + path.suffix)


class RejectsFile:
    """Rejected lines written as CSV, ready to fix and import again; opened at the first one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: TextIO | None = None
        self._writer: Any = None

    def __call__(self, rejected: Rejected) -> None:
        if self._handle is None:
            self._handle = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._handle)
            self._writer.writerow([CONTACT_COLUMN, *REJECT_COLUMNS])
        self.count += 1
        self._writer.writerow(
            [rejected.external_id, rejected.line, CONTACT_COLUMN, rejected.message]
        )

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def import_file(
    engine: Engine,
    segment: Segment,
    path: Path,
    mode: str,
    now: datetime,
    *,
    on_reject: Callable[[Rejected], None],
    from_source: bool = False,
) -> ImportResult:
    """Import a CSV list into a manual segment in one transaction; `from_source`: the file is
    the segment's own list, whose hash is then remembered."""
    check_importable(segment)
    reason = f"import:{mode}"
    with engine.begin() as conn:
        result = import_members(
            conn, segment, csv_ids(path), mode, now, reason=reason, on_reject=on_reject
        )
        if from_source:
            remember_hash(conn, segment.id, file_hash(path), now)
    return result


def changed_sources(
    engine: Engine, folder: Path, segments: Iterable[Segment]
) -> list[tuple[Segment, Path]]:
    """The manual segments whose list file differs from the one last imported from it."""
    out = []
    with engine.connect() as conn:
        for segment in segments:
            if not segment.is_manual or segment.manual_source is None:
                continue
            path = source_path(folder, segment)
            if path.is_file() and imported_hash(conn, segment.id) != file_hash(path):
                out.append((segment, path))
    return out
