"""What a condition's left side is in SQL: a JSON value (an attribute, an event property, the tag
list) or a plain column (a profile field, an aggregate), read the same way on both databases.

The Python evaluator compares Python values, so each operand says which kind of JSON value it
holds (missing, null, boolean, number, string, array, object) and gives its string, its number
and its `str()`; the operators (engine.audience.segment_sql) combine those under kind guards.
Every predicate here is TRUE or FALSE, never NULL, so NOT keeps its meaning.

PostgreSQL never sees a cast of a value of the wrong kind: casts sit inside CASE branches (its
AND does not promise an evaluation order).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import DateTime

KINDS = ("missing", "null", "boolean", "number", "string", "array", "object")
_SQLITE_TYPES = {
    "null": ("null",),
    "boolean": ("true", "false"),
    "number": ("integer", "real"),
    "string": ("text",),
    "array": ("array",),
    "object": ("object",),
}
# The ISO 8601 forms both databases parse the way datetime.fromisoformat does.
ISO_INSTANT = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_WITH_OFFSET = r"(Z|[+-][0-9]{2}:[0-9]{2})$"
_SQLITE_INSTANT = "%Y-%m-%d %H:%M:%f"


def sure(predicate: ColumnElement[bool]) -> ColumnElement[bool]:
    """The predicate, FALSE where it would be NULL."""
    return func.coalesce(predicate, false(), type_=Boolean)


class Operand(ABC):
    """A value read from each contact (or event, or group of events)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    @abstractmethod
    def kind_in(self, *kinds: str) -> ColumnElement[bool]:
        """TRUE where the value is of one of `kinds` (string, number, boolean, array, object or
        missing)."""

    @abstractmethod
    def text(self) -> ColumnElement[str]:
        """The string, where the kind is string."""

    @abstractmethod
    def number(self, booleans: bool = True) -> ColumnElement[float]:
        """The number (booleans as 0/1 unless told otherwise), NULL for other kinds."""

    @abstractmethod
    def python_str(self) -> ColumnElement[str]:
        """`str(value)` for strings, numbers and booleans; NULL otherwise."""

    def array_has(self, value: Any) -> ColumnElement[bool]:
        return false()

    def has_key(self, key: str) -> ColumnElement[bool]:
        return false()

    def ordered_text(self) -> ColumnElement[str]:
        """The string, compared by code point like Python (PostgreSQL's collation may not)."""
        return self.text().collate("C") if self.dialect == "postgresql" else self.text()

    def instant_compare(self, op: str, threshold: datetime) -> ColumnElement[bool]:
        """The string read as an ISO 8601 instant (naive: UTC), compared with `threshold`."""
        value = self.text()
        valid = and_(self.kind_in("string"), value.regexp_match(ISO_INSTANT))
        if self.dialect == "postgresql":
            instant: ColumnElement[Any] = case(
                (value.regexp_match(_WITH_OFFSET), cast(value, DateTime(timezone=True))),
                else_=func.timezone("UTC", cast(value, DateTime())),
            )
            bound: Any = bindparam(None, threshold, type_=DateTime(timezone=True))
        else:
            instant = func.strftime(_SQLITE_INSTANT, value)
            utc = threshold.astimezone(UTC)
            bound = utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"
        compared = instant < bound if op == "<" else instant >= bound
        return sure(case((valid, compared), else_=false()))


class JsonOperand(Operand):
    """A value inside a JSON column, at a path of keys (empty: the whole document)."""

    def __init__(self, dialect: str, column: ColumnElement[Any], path: tuple[str, ...]) -> None:
        super().__init__(dialect)
        self.column = column
        self.path = path

    def _pg(self, path: tuple[str, ...] | None = None) -> ColumnElement[Any]:
        path = self.path if path is None else path
        if not path:
            return self.column
        return self.column.op("#>", return_type=JSONB)(
            bindparam(None, list(path), type_=ARRAY(Text))
        )

    def _sqlite_path(self, path: tuple[str, ...] | None = None) -> str:
        path = self.path if path is None else path
        return "$" + "".join(f'."{part}"' for part in path)

    def _type(self, path: tuple[str, ...] | None = None) -> ColumnElement[str]:
        if self.dialect == "postgresql":
            return func.jsonb_typeof(self._pg(path), type_=String)
        return func.json_type(self.column, self._sqlite_path(path), type_=String)

    def kind_in(self, *kinds: str) -> ColumnElement[bool]:
        names: list[str] = []
        for kind in kinds:
            if kind != "missing":
                names += _SQLITE_TYPES[kind] if self.dialect == "sqlite" else [kind]
        missing = "missing" in kinds
        if not names:
            return self._type().is_(None) if missing else false()
        return func.coalesce(self._type().in_(names), missing, type_=Boolean)

    def text(self) -> ColumnElement[str]:
        if self.dialect == "postgresql":
            if not self.path:
                return cast(self.column, Text)  # pragma: no cover - a document is never a string
            return self.column.op("#>>", return_type=Text)(
                bindparam(None, list(self.path), type_=ARRAY(Text))
            )
        return func.json_extract(self.column, self._sqlite_path(), type_=Text)

    def number(self, booleans: bool = True) -> ColumnElement[float]:
        kind = self._type()
        if self.dialect == "postgresql":
            whens: list[Any] = [(kind == "number", cast(self.text(), Float))]
            if booleans:
                whens.append((kind == "boolean", case((self.text() == "true", 1.0), else_=0.0)))
            return case(*whens, else_=null())
        kinds = ("integer", "real", "true", "false") if booleans else ("integer", "real")
        raw = func.json_extract(self.column, self._sqlite_path(), type_=Float)
        return case((kind.in_(kinds), raw), else_=null())

    def python_str(self) -> ColumnElement[str]:
        kind = self._type()
        if self.dialect == "postgresql":
            return case(
                (kind.in_(("string", "number")), self.text()),
                (kind == "boolean", case((self.text() == "true", "True"), else_="False")),
                else_=null(),
            )
        raw = func.json_extract(self.column, self._sqlite_path())
        return case(
            (kind == "text", cast(raw, Text)),
            (kind.in_(("integer", "real")), cast(raw, Text)),
            (kind == "true", "True"),
            (kind == "false", "False"),
            else_=null(),
        )

    def array_has(self, value: Any) -> ColumnElement[bool]:
        """`value in array`, for a string, number or boolean value."""
        if value is None or not isinstance(value, str | int | float):
            return false()
        is_array = self.kind_in("array")
        if self.dialect == "postgresql":
            if isinstance(value, str):
                wanted = bindparam(None, json.dumps([value]), type_=Text)
                return and_(is_array, self._pg().op("@>", return_type=Boolean)(cast(wanted, JSONB)))
            element = func.jsonb_array_elements(self._pg()).table_valued("value").alias("elem")
            item = JsonOperand(self.dialect, element.c.value, ())
            match = and_(item.kind_in("number", "boolean"), item.number() == float(value))
            # CASE, not AND: jsonb_array_elements fails on anything but an array.
            found = exists(select(literal(1)).select_from(element).where(match))
            return sure(case((is_array, found), else_=false()))
        each = func.json_each(self.column, self._sqlite_path()).table_valued("value", "type")
        each = each.alias("each")
        if isinstance(value, str):
            match = and_(each.c.type == "text", each.c.value == value)
        else:
            kinds = ("integer", "real", "true", "false")
            match = and_(each.c.type.in_(kinds), each.c.value == float(value))
        return and_(is_array, exists(select(literal(1)).select_from(each).where(match)))

    def has_key(self, key: str) -> ColumnElement[bool]:
        inner = JsonOperand(self.dialect, self.column, (*self.path, key))
        return and_(self.kind_in("object"), not_(inner.kind_in("missing")))


class ColumnOperand(Operand):
    """A plain column: a nullable string profile field, or a number that is never NULL."""

    def __init__(self, dialect: str, column: ColumnElement[Any], kind: str) -> None:
        super().__init__(dialect)
        self.column = column
        self.kind = kind  # string | number | float (a number Python holds as a float)

    def kind_in(self, *kinds: str) -> ColumnElement[bool]:
        if self.kind != "string":
            return true() if "number" in kinds else false()
        present = self.column.is_not(None)
        if "missing" in kinds and "string" in kinds:
            return true()
        if "missing" in kinds:
            return self.column.is_(None)
        return present if "string" in kinds else false()

    def text(self) -> ColumnElement[str]:
        return self.column if self.kind == "string" else cast(null(), Text)

    def number(self, booleans: bool = True) -> ColumnElement[float]:
        return cast(null(), Float) if self.kind == "string" else self.column

    def python_str(self) -> ColumnElement[str]:
        if self.kind == "string":
            return self.column
        if self.kind == "float":  # str(2.0) is "2.0"
            whole = cast(cast(self.column, BigInteger), Text) + ".0"
            return case(
                (self.column == func.round(self.column), whole), else_=cast(self.column, Text)
            )
        return cast(self.column, Text)


def or_all(items: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """OR of the items; FALSE for none (an empty OR is deprecated in SQLAlchemy)."""
    return or_(*items) if items else false()
