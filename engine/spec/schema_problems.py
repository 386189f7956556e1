"""Turn marshmallow's nested error messages into Problems, each at its document path.

Unknown fields get a "did you mean" over the names the schema at that path declares (the names
written in YAML, e.g. ``if`` and ``else``), found by walking the same schemas the loader used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields

from engine.spec.graph import KEY
from engine.spec.model import Step
from engine.spec.nodes import NODE_TYPES
from engine.spec.problems import Problem, did_you_mean
from engine.spec.schema import KindField, StepsField, scenario_schema

Path = tuple[str | int, ...]
_HINT = re.compile(r"^(?P<message>.*?)[.;]?\s+(?P<hint>did you mean '[^']*'\?|use one of .*)$")
_MISSING = "Missing data for required field."
# messages that have a code of their own rather than schema.invalid, by how they start
_CODES = {
    "expression reads the private attribute": "expression.private_attribute",
    "expression is over its budget": "expression.limit",
}


def _unwrap(node: Schema | fields.Field[Any], raw: Any) -> Schema | fields.Field[Any]:
    if isinstance(node, fields.Nested) and isinstance(node.schema, Schema):
        return node.schema
    if isinstance(node, KindField):
        return node.schema_for(raw) or node
    return node


def _field_named(schema: Schema, key: str | int) -> fields.Field[Any] | None:
    return next((f for n, f in schema.fields.items() if (f.data_key or n) == key), None)


def node_at(path: Path, data: Any, root: Schema | None = None) -> Schema | fields.Field[Any] | None:
    """The schema (for a mapping) or field that reads the document at `path`, if known;
    `root` is the document's schema (a scenario's by default)."""
    node: Schema | fields.Field[Any] | None = root or scenario_schema()
    raw = data
    for part in path:
        node = child_node(node, raw, part) if node is not None else None
        if node is None:
            return None
        raw = _child(raw, part)
    return _unwrap(node, raw) if node is not None else None


def child_node(
    node: Schema | fields.Field[Any], raw: Any, part: str | int
) -> Schema | fields.Field[Any] | None:
    """The schema or field that reads `raw[part]`, where `node` reads `raw`; None if unknown."""
    node = _unwrap(node, raw)
    if isinstance(node, Schema):
        return _field_named(node, part)
    if isinstance(node, fields.List) and isinstance(part, int):
        return node.inner
    if isinstance(node, StepsField):
        step = raw.get(part) if isinstance(raw, Mapping) else None
        kind = step.get("type") if isinstance(step, Mapping) else None
        return NODE_TYPES[kind].loader if isinstance(kind, str) and kind in NODE_TYPES else None
    if isinstance(node, fields.Dict) and node.value_field is not None:
        return node.value_field
    return None


def _child(raw: Any, part: str | int) -> Any:
    if isinstance(raw, Mapping):
        return raw.get(part)
    if isinstance(raw, list) and isinstance(part, int) and 0 <= part < len(raw):
        return raw[part]
    return None


def declared_names(path: Path, data: Any, root: Schema | None = None) -> list[str]:
    """Field names (as written in YAML) the mapping at `path` accepts; empty when unknown."""
    node = node_at(path, data, root)
    if not isinstance(node, Schema):
        return []
    return [f.data_key or name for name, f in node.fields.items()]


def _walk(
    messages: Any, path: Path, data: Any, root: Schema | None = None
) -> Iterator[tuple[Path, str, bool]]:
    """(path, message, on_key) for every leaf message."""
    if isinstance(messages, Mapping):
        is_dict_entry = set(messages) <= {"key", "value"} and isinstance(
            node_at(path[:-1], data, root), fields.Dict
        )
        for key, value in messages.items():
            if key == "_schema":
                yield from _walk(value, path, data, root)
            elif key == "_id":  # a step id that is not valid: the key itself is wrong
                yield from ((p, m, True) for p, m, _ in _walk(value, path, data, root))
            elif is_dict_entry:  # fields.Dict reports {'<k>': {'key': [...], 'value': [...]}}
                yield from ((p, m, key == "key") for p, m, _ in _walk(value, path, data, root))
            else:
                yield from _walk(value, (*path, key), data, root)
    elif isinstance(messages, list | tuple):
        for item in messages:
            yield from _walk(item, path, data, root)
    else:
        yield path, str(messages), False


def schema_problems(error: ValidationError, data: Any, root: Schema | None = None) -> list[Problem]:
    """One Problem per marshmallow message, with code, step id, path and hint; `root` is the
    schema that raised `error` when it is not a scenario's (the policy file's, for one)."""
    problems = []
    for path, text, on_key in _walk(error.messages, (), data, root):
        message, hint = text, None
        found = _HINT.match(text)
        if found:
            message, hint = found["message"].rstrip(".") + ".", found["hint"]
        step = str(path[1]) if len(path) >= 2 and path[0] == "steps" else None
        name = str(path[-1]) if path else ""
        if message.startswith("Unknown field"):
            code, on_key = "schema.unknown_field", True
            if hint is None:
                hint = did_you_mean(name, declared_names(path[:-1], data, root))
            message = f"Unknown field '{name}'."
        elif text == _MISSING:
            code, message = "schema.required", f"Missing required field '{name}'."
        else:
            prefix = next((k for k in _CODES if message.startswith(k)), None)
            code = _CODES[prefix] if prefix else "schema.invalid"
        extra = dict(KEY) if on_key else {}
        problems.append(Problem(code, message, path=path, step=step, hint=hint, extra=extra))
    return problems


def loadable_steps(data: Any) -> dict[str, Step]:
    """The steps of a document that failed the schema which still load on their own."""
    raw_steps = data.get("steps") if isinstance(data, Mapping) else None
    steps: dict[str, Step] = {}
    for step_id, raw in raw_steps.items() if isinstance(raw_steps, Mapping) else ():
        kind = raw.get("type") if isinstance(raw, Mapping) else None
        if isinstance(kind, str) and kind in NODE_TYPES:
            try:
                steps[str(step_id)] = NODE_TYPES[kind].loader.build(str(step_id), raw)
            except ValidationError:
                continue  # already reported by the schema pass
    return steps
