"""Marshmallow fields for the scenario language: durations, local times, weekdays, conditions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from jinja2 import TemplateError
from marshmallow import ValidationError, fields, validate

from engine.spec.conditions import Condition, PropertyFilter, parse_condition, parse_filters
from engine.spec.durations import format_duration, parse_duration, parse_local_time
from engine.spec.expressions import compile_expression, expression_issues
from engine.spec.problems import did_you_mean

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def compile_checked_expression(source: str, path: list[str | int]) -> Any:
    """Compile a condition expression, turning syntax errors and unknown names into field errors."""
    try:
        issues = expression_issues(source)
        compiled = compile_expression(source)
    except TemplateError as exc:
        issues = [f"Expression does not compile: {exc}"]
    if issues:
        # nested at the expression's own path, so the problem points at the `expr:` line
        errors: Any = issues
        for part in reversed(path):
            errors = {part: errors}
        raise ValidationError(errors)
    return compiled


class OneOf(validate.OneOf):
    """A value among fixed choices; a typo gets "did you mean" (the JSON Schema sees an enum)."""

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str) and value in self.choices:
            return value
        choices = [str(c) for c in self.choices]
        hint = did_you_mean(str(value), choices) or f"use one of {', '.join(choices)}"
        raise ValidationError(f"Unknown value '{value}'. {hint}")


class Duration(fields.Field[Any]):
    """``2d``, ``1h30m`` → timedelta."""

    def __init__(self, *, positive: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.positive = positive

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            delta = parse_duration(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if self.positive and delta.total_seconds() <= 0:
            raise ValidationError("Must be longer than zero, e.g. '1h'.")
        return delta

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else format_duration(value)


class LocalTime(fields.Field[Any]):
    """``09:00`` → datetime.time."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        try:
            return parse_local_time(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Weekdays(fields.Field[Any]):
    """``[mon, fri]`` → frozenset({0, 4})."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise ValidationError("Expected a list of days, e.g. [mon, wed, fri].")
        out = set()
        for day in value:
            key = str(day).lower()[:3]
            if key not in WEEKDAYS:
                hint = did_you_mean(str(day).lower(), WEEKDAYS)
                raise ValidationError(
                    f"'{day}' is not a weekday; use mon..sun." + (f" {hint}" if hint else "")
                )
            out.add(WEEKDAYS.index(key))
        return frozenset(out)


class ConditionField(fields.Field[Any]):
    """A condition (see engine.spec.conditions); errors are nested at their exact path."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Condition:
        return parse_condition(value, [], compile_checked_expression)


class Filters(fields.Field[Any]):
    """``where: [{property, op, value}]``."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[PropertyFilter, ...]:
        return parse_filters(value, [])


class Identifier(fields.String):
    """A step or scenario id: letters, digits, '_' and '-', starting with a letter or digit."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text or not (text[0].isalnum() and all(c.isalnum() or c in "_-" for c in text)):
            raise ValidationError(
                f"'{text}' is not a valid id; use letters, digits, '_' and '-' (e.g. 'wait-1h')."
            )
        if len(text) > 100:
            raise ValidationError("An id is at most 100 characters.")
        return text


class PlainMapping(fields.Dict):
    """A mapping of names to plain YAML values (text, numbers, booleans, lists, mappings)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValidationError("Expected a mapping of names to values.")
        return dict(value)


class WebUrl(fields.Url):
    """An http(s) URL with a host, written in any form the address guard reads.

    marshmallow's URL check turns down valid hosts (``[::ffff:127.0.0.1]``, ``0x7f.1``); whether
    the channel will call a host is the guard's question, asked in engine.spec.webhook_urls.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(schemes={"http", "https"}, **kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, validate.URL)]

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        example = "e.g. https://crm.example.com/hooks"
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - a bad port raises only when read
        except ValueError as exc:
            raise ValidationError(f"Not a valid URL ({exc}); {example}.") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ValidationError(f"Expected an http(s) URL, {example}.")
        if not parts.hostname:
            raise ValidationError(f"The URL has no host, {example}.")
        return text
