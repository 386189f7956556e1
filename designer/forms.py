"""Form and query-string parsing for the designer's HTML pages, through small marshmallow schemas.

A field's error messages are keys (`date`, `integer`, `choice`...), put into words in the
page's language when the form is parsed: `parse` gives the fields' messages for a page that
shows them next to its fields, `query` answers 400 with them on a page that has no form.
Unknown fields are left out, as a browser sends buttons and tokens along.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import abort
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from designer.i18n import gettext as _


class Form(Schema):
    """A page's fields. Declare ``words()`` to put a validator's own error keys into words."""

    class Meta:
        unknown = EXCLUDE


def _words() -> dict[str, str]:
    return {
        "date": _("Enter a date as YYYY-MM-DD, e.g. 2026-03-31."),
        "integer": _("Enter a whole number."),
        "positive": _("Enter a number from 1 up."),
        "choice": _("Choose one of: %(choices)s."),
        "required": _("This field is required."),
        "text": _("Enter some text."),
        "long": _("At most %(max)s characters."),
        "flag": _("Choose yes or no."),
        "identifier": _("Letters, digits, '-' and '_' only; start with a letter or digit."),
        "name": _("Give a name (at most 200 characters)."),
    }


def _messages(kwargs: dict[str, Any], **defaults: str) -> dict[str, Any]:
    """`kwargs` with the field's error keys: the defaults, then the caller's own."""
    return {**kwargs, "error_messages": {**defaults, **kwargs.get("error_messages", {})}}


def Date(**kwargs: Any) -> Any:
    """``2026-03-31`` → datetime.date; an empty value is no value."""
    return fields.Date(format="%Y-%m-%d", **_messages(kwargs, invalid="date"))


def Integer(**kwargs: Any) -> Any:
    return fields.Integer(**_messages(kwargs, invalid="integer"))


def Choice(choices: tuple[str, ...], error: str = "choice", **kwargs: Any) -> Any:
    """One of `choices`; `error` names the message for anything else."""
    return fields.String(validate=validate.OneOf(choices, error=error), **kwargs)


def Secret(**kwargs: Any) -> Any:
    """A password or a token: taken as typed, never trimmed."""
    return fields.String(**_messages(kwargs, invalid="text"))


def Flag(**kwargs: Any) -> Any:
    """A yes/no field sent as ``1`` or ``0`` (a checkbox or a button's value)."""
    return fields.Boolean(truthy={"1", "on"}, falsy={"0", "off"},
                          **_messages(kwargs, invalid="flag"))  # fmt: skip


def Text(max_length: int | None = None, **kwargs: Any) -> Any:
    """Trimmed text, cut to `max_length` (a search box takes what fits)."""
    return _Trimmed(max_length, **_messages(kwargs, invalid="text"))


def Identifier(**kwargs: Any) -> Any:
    """A scenario's or a segment's id, as its file is named."""
    from designer.workspace import SCENARIO_ID

    check = validate.Regexp(SCENARIO_ID, error="identifier")
    return Text(required=True, validate=check, error_messages={"required": "identifier"}, **kwargs)


def Name(**kwargs: Any) -> Any:
    """A scenario's or a segment's name: 1 to 200 characters."""
    check = validate.Length(max=200, error="name")
    return Text(required=True, validate=check, error_messages={"required": "name"}, **kwargs)


class _Trimmed(fields.String):
    def __init__(self, max_length: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not text and self.required:  # only spaces: nothing was typed
            raise self.make_error("required")
        return text[: self.max_length] if self.max_length else text


def Several(inner: Any, **kwargs: Any) -> Any:
    """Every value sent under the name (checkboxes of the same name), each parsed by `inner`."""
    return fields.List(inner, **kwargs)


def _plain(schema: Schema, source: Mapping[str, Any]) -> dict[str, Any]:
    """One value per field (the first; every one for a `Several` field), and no empty ones: an
    empty box means the default."""
    several = {f.data_key or n for n, f in schema.fields.items() if isinstance(f, fields.List)}
    if isinstance(source, MultiDict):
        items = [(k, source.getlist(k) if k in several else source.get(k)) for k in source]
    else:
        items = list(source.items())
    return {k: v for k, v in items if v not in ("", None)}


def _explain(schema: Schema, messages: Any) -> dict[str, str]:
    # A form may name its own messages (a validator's error key → words) with `words()`.
    words = {**_words(), **(schema.words() if hasattr(schema, "words") else {})}
    out: dict[str, str] = {}
    for name, found in messages.items() if isinstance(messages, dict) else ():
        key = found[0] if isinstance(found, list) and found else str(found)
        if key == "Missing data for required field.":
            key = "required"
        text = words.get(key, key)
        declared = next((f for f in schema.fields.values() if f.data_key == name), None)
        declared = declared or schema.fields.get(name)
        checks = declared.validators if declared is not None else []
        choices = next((c.choices for c in checks if isinstance(c, validate.OneOf)), ())
        out[name] = text % {"choices": ", ".join(map(str, choices)),
                            "max": getattr(declared, "max_length", "")}  # fmt: skip
    return out


def parse(schema: Schema, source: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The parsed values and, per field (its name in the form), the message to show next to it;
    on errors the values hold the fields that parsed."""
    try:
        return schema.load(_plain(schema, source)), {}
    except ValidationError as exc:
        valid = exc.valid_data if isinstance(exc.valid_data, dict) else {}
        return valid, _explain(schema, exc.messages)


def query(schema: Schema, source: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed values, or a 400 page that names each wrong field and says what it takes."""
    values, errors = parse(schema, source)
    if errors:
        abort(400, description=" ".join(f"{name}: {text}" for name, text in errors.items()))
    return values
