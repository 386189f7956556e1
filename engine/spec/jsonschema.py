"""JSON Schema (draft 2020-12) of the scenario and segment files, for editors and the designer.

Generated from ScenarioSchema, SegmentSchema, the trigger schemas and the node-type registry:
each marshmallow field type maps to a JSON Schema fragment, its validators to keywords and its
``help`` metadata to the description. The marshmallow schemas stay the authority; this is a guide
for editors (cross-field rules such as "template or content" are not expressed).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import time, timedelta
from typing import Any

from marshmallow import Schema, fields, missing, validate

from engine.spec import conditions
from engine.spec.durations import _TIME, _WHOLE, format_duration
from engine.spec.fields import (
    WEEKDAYS,
    ConditionField,
    Duration,
    Filters,
    Identifier,
    LocalTime,
    PlainMapping,
    Weekdays,
)
from engine.spec.nodes import NODE_TYPES
from engine.spec.schema import (
    EXIT_SCHEMAS,
    FORMAT_VERSION,
    TRIGGER_SCHEMAS,
    ExitRuleField,
    ScenarioSchema,
    StepsField,
    TriggerField,
)
from engine.spec.segments import SegmentSchema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
JSON = dict[str, Any]
# Identifier accepts what str.isalnum() does; \w is the closest portable regex
IDENTIFIER_PATTERN = r"^[^\W_][\w-]*$"
_IDENTIFIER: JSON = {"type": "string", "pattern": IDENTIFIER_PATTERN, "maxLength": 100}


def _ref(name: str) -> JSON:
    return {"$ref": f"#/$defs/{name}"}


def _weekday_pattern() -> str:
    # Weekdays reads the first three letters, any case: "Mon", "monday", "FRI"
    either = ("".join(f"[{c}{c.upper()}]" for c in day) for day in WEEKDAYS)
    return "^(?:" + "|".join(either) + ")"


# Custom fields first: several subclass the marshmallow ones below them.
_FIELD_TYPES: list[tuple[type[fields.Field[Any]], Callable[[Any], JSON]]] = [
    (StepsField, lambda f: {
        "type": "object", "minProperties": 1,
        "propertyNames": {"pattern": IDENTIFIER_PATTERN, "maxLength": 100},
        "additionalProperties": _ref("step"),
    }),
    (TriggerField, lambda f: _ref("trigger")),
    (ExitRuleField, lambda f: _ref("exit_rule")),
    (ConditionField, lambda f: _ref("condition")),
    (Filters, lambda f: _ref("filters")),
    (Duration, lambda f: _ref("duration")),
    (LocalTime, lambda f: {"type": "string", "pattern": _TIME.pattern}),
    (Weekdays, lambda f: {
        "type": "array", "minItems": 1, "items": {"type": "string", "pattern": _weekday_pattern()},
    }),
    (Identifier, lambda f: dict(_IDENTIFIER)),
    (PlainMapping, lambda f: {"type": "object"}),
    (fields.Url, lambda f: {"type": "string", "format": "uri"}),
    (fields.String, lambda f: {"type": "string"}),
    (fields.Integer, lambda f: {"type": "integer"}),
    (fields.Float, lambda f: {"type": "number"}),
    (fields.Boolean, lambda f: {"type": "boolean"}),
    (fields.List, lambda f: {"type": "array", "items": field_schema(f.inner)}),
    (fields.Nested, lambda f: object_schema(f.schema)),
    (fields.Dict, lambda f: {
        "type": "object",
        **({"propertyNames": field_schema(f.key_field)} if f.key_field else {}),
        **({"additionalProperties": field_schema(f.value_field)} if f.value_field else {}),
    }),
    (fields.Raw, lambda f: {}),
]  # fmt: skip


def _validators(field: fields.Field[Any], out: JSON) -> None:
    array = out.get("type") == "array"
    for v in field.validators:
        if isinstance(v, validate.OneOf):
            out["enum"] = list(v.choices)
        elif isinstance(v, validate.Equal):
            out["const"] = v.comparable
        elif isinstance(v, validate.Length):
            if v.min is not None:
                out["minItems" if array else "minLength"] = v.min
            if v.max is not None:
                out["maxItems" if array else "maxLength"] = v.max
        elif isinstance(v, validate.Regexp):
            out["pattern"] = v.regex.pattern
        elif isinstance(v, validate.URL) and v.schemes:
            out["pattern"] = f"^(?:{'|'.join(sorted(v.schemes))})://"
        elif isinstance(v, validate.Range):
            if v.min is not None:
                out["minimum" if v.min_inclusive else "exclusiveMinimum"] = v.min
            if v.max is not None:
                out["maximum" if v.max_inclusive else "exclusiveMaximum"] = v.max


def _default(value: Any) -> Any:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, str | int | float | bool | list):
        return value
    return missing


def field_schema(field: fields.Field[Any]) -> JSON:
    """JSON Schema of one marshmallow field (TypeError for a field type with no mapping)."""
    convert = next((fn for cls, fn in _FIELD_TYPES if isinstance(field, cls)), None)
    if convert is None:
        raise TypeError(f"no JSON Schema mapping for field type {type(field).__name__}")
    out = convert(field)
    _validators(field, out)
    if field.allow_none and out:
        out = {"anyOf": [out, {"type": "null"}]}
    if field.metadata.get("help"):
        out["description"] = field.metadata["help"]
    if field.metadata.get("edge"):
        out["x-edge"] = True  # a link to another step: the designer draws it as an exit
    default = field.load_default
    if default is not missing and not callable(default) and _default(default) is not missing:
        out["default"] = _default(default)
    return out


def object_schema(schema: Schema) -> JSON:
    """A closed object with one property per field (named as written in YAML)."""
    properties: JSON = {}
    required: list[str] = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        properties[key] = field_schema(field)
        if field.required:
            required.append(key)
    out: JSON = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _step_defs() -> JSON:
    defs: JSON = {}
    for node in NODE_TYPES.values():
        step = object_schema(node.schema())
        step["properties"]["type"] = {"const": node.type}
        defs[f"step_{node.type}"] = {"title": node.label, "description": node.help, **step}
    defs["step"] = {"oneOf": [_ref(name) for name in list(defs)]}
    return defs


def _kinds_def(schemas: dict[str, type[Schema]], what: str) -> JSON:
    options = [
        {"title": f"{kind} {what}", **object_schema(schema_class())}
        for kind, schema_class in schemas.items()
    ]
    return {"oneOf": options}


def condition_forms() -> dict[str, JSON]:
    """One object schema per condition form (see engine.spec.conditions), keyed by form."""
    ref, op = _ref("condition"), {"enum": list(conditions.ALL_OPERATORS)}
    measure: JSON = {"op": op, "value": {}}
    name: JSON = {"type": "string", "minLength": 1}
    props: dict[str, JSON] = {
        "all": {"all": {"type": "array", "minItems": 1, "items": ref}},
        "any": {"any": {"type": "array", "minItems": 1, "items": ref}},
        "not": {"not": ref},
        "attribute": {"attribute": {"type": "string"}, **measure},
        "tag": {"tag": {"type": "string"}},
        "event": {
            "event": {"type": "string"},
            "where": _ref("filters"),
            "within": _ref("duration"),
            "since": {"const": "entry"},
            "count": _closed(measure),
            "sum": _closed({**measure, "property": {"type": "string"}}, ["property"]),
            "recency": _closed(measure),
        },
        "expr": {"expr": {"type": "string", "minLength": 1}},
        "consent": {
            "consent": _closed(
                {
                    "channel": name,
                    "topic": name,
                    "state": {"enum": list(conditions.CONSENT_STATES)},
                },
                ["channel", "topic"],
            )
        },
        "pressure": {
            "pressure": _closed(
                {"state": {"enum": list(conditions.PRESSURE_STATES)}, "channel": name},
                ["state"],
            )
        },
        "segment": {"segment": _IDENTIFIER},
    }
    return {form: _closed(p, [form]) for form, p in props.items()}


def _closed(properties: JSON, required: list[str] | None = None) -> JSON:
    out: JSON = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = required
    return out


def _condition_defs() -> JSON:
    """The condition language and what it is made of, shared by scenarios and segments."""
    op = {"enum": list(conditions.ALL_OPERATORS)}
    item = _closed({"property": {"type": "string"}, "op": op, "value": {}}, ["property"])
    return {
        "condition": {"oneOf": list(condition_forms().values())},
        "filters": {"anyOf": [{"type": "array", "items": item}, {"type": "null"}]},
        "duration": {
            "description": "A duration such as 30m, 1h30m, 2d or 1w (or a number of seconds).",
            "anyOf": [{"type": "string", "pattern": _WHOLE.pattern}, {"type": "integer"}],
        },
    }


def scenario_json_schema() -> JSON:
    """The JSON Schema of a scenario file."""
    defs: JSON = {
        **_step_defs(),
        "trigger": _kinds_def(TRIGGER_SCHEMAS, "trigger"),
        "exit_rule": _kinds_def(EXIT_SCHEMAS, "exit rule"),
        **_condition_defs(),
    }
    root = object_schema(ScenarioSchema())
    root["properties"]["format_version"]["const"] = FORMAT_VERSION
    return {
        "$schema": DIALECT,
        "title": "Parcours scenario",
        "description": "A customer journey: triggers, audience, steps, goal and exit rules.",
        **root,
        "$defs": defs,
    }


def segment_json_schema() -> JSON:
    """The JSON Schema of a segment file (scenarios/segments/ID.yaml)."""
    root = object_schema(SegmentSchema())
    return {
        "$schema": DIALECT,
        "title": "Parcours segment",
        "description": "A named audience: a condition, or a manual list imported from CSV.",
        **root,
        # exactly one way to say who is in
        "oneOf": [{"required": ["condition"]}, {"required": ["manual"]}],
        "$defs": _condition_defs(),
    }
