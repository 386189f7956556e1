"""Structure of a scenario document (first validation pass). Graph checks come after, in graph.py.

`load_document(data)` returns the keyword arguments of `model.Scenario` (steps built through the
node-type registry) or raises a marshmallow ValidationError whose nested messages follow the
document's paths, so the loader can place each one on its line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time, timedelta
from functools import cache
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from engine.spec import model
from engine.spec.fields import (
    ConditionField,
    Duration,
    Filters,
    Identifier,
    LocalTime,
    OneOf,
    PlainMapping,
)
from engine.spec.nodes import NODE_TYPES
from engine.spec.problems import did_you_mean

FORMAT_VERSION = 1
TRIGGER_KINDS = ("event", "schedule", "anniversary", "manual", "segment_entered", "segment_exited")
EXIT_KINDS = ("event", "segment_exited")
# metadata of a field whose value is a segment id (lint checks it names a segment file)
SEGMENT_REF = {"segment": True}


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class SenderSchema(_Strict):
    from_address = fields.Email(load_default=None, metadata={"help": "From address of emails."})
    from_name = fields.String(
        load_default=None, validate=validate.Length(max=100), metadata={"help": "From name."}
    )
    reply_to = fields.Email(load_default=None, metadata={"help": "Reply-To address."})

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, str]:
        return {k: v for k, v in data.items() if v}


class EntrySchema(_Strict):
    reentry = fields.String(load_default="never", validate=OneOf(model.REENTRY))
    cooldown = Duration(load_default=None)
    concurrent = fields.Boolean(load_default=False)

    @validates_schema
    def _cooldown(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("reentry") == "cooldown" and data.get("cooldown") is None:
            raise ValidationError("reentry: cooldown needs 'cooldown', e.g. 30d.", "cooldown")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.EntryRules:
        return model.EntryRules(**data)


class GoalSchema(_Strict):
    event = fields.String(required=True)
    where = Filters(load_default=())
    within = Duration(load_default=None)
    value = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=128),
        metadata={"help": "The goal event's property holding the revenue (e.g. total)."},
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.Goal:
        return model.Goal(**data)


class CostSchema(_Strict):
    fixed = fields.Float(
        required=True,
        allow_nan=False,
        validate=validate.Range(min=0),
        metadata={"help": "What the journey costs beyond its messages, in the workspace currency."},
    )


class ExitRuleSchema(_Strict):
    event = fields.String(required=True)
    where = Filters(load_default=())

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.ExitRule:
        return model.ExitRule(**data)


class SegmentExitRuleSchema(_Strict):
    segment_exited = Identifier(
        required=True, metadata={"help": "Leaving this segment ends the journey.", **SEGMENT_REF}
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.SegmentExitRule:
        return model.SegmentExitRule(data["segment_exited"])


class EventTriggerSchema(_Strict):
    event = fields.String(required=True)
    where = Filters(load_default=())

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.EventTrigger:
        return model.EventTrigger(**data)


class ScheduleTriggerSchema(_Strict):
    schedule = fields.String(
        required=True, metadata={"help": "Cron: minute hour day month weekday."}
    )
    timezone = fields.String(load_default="UTC")

    @validates_schema
    def _cron(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        from engine.spec.cron import cron_for

        try:
            cron_for(model.ScheduleTrigger(data["schedule"], data.get("timezone", "UTC")))
        except (ValueError, LookupError) as exc:
            field = (
                "timezone"
                if "timezone" in str(exc).lower() or isinstance(exc, LookupError)
                else "schedule"
            )
            raise ValidationError(f"{exc}", field) from None

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.ScheduleTrigger:
        return model.ScheduleTrigger(cron=data["schedule"], timezone=data["timezone"])


class AnniversaryTriggerSchema(_Strict):
    anniversary = fields.String(required=True, metadata={"help": "Date attribute, e.g. birthday."})
    at = LocalTime(load_default=time(9, 0))
    offset = Duration(positive=False, load_default=timedelta(0))

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.AnniversaryTrigger:
        return model.AnniversaryTrigger(
            attribute=data["anniversary"], at=data["at"], offset=data["offset"]
        )


class ManualTriggerSchema(_Strict):
    manual = fields.Boolean(required=True, validate=validate.Equal(True))

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.ManualTrigger:
        return model.ManualTrigger()


class SegmentEnteredTriggerSchema(_Strict):
    segment_entered = Identifier(
        required=True, metadata={"help": "A contact who joins this segment enters.", **SEGMENT_REF}
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.SegmentEnteredTrigger:
        return model.SegmentEnteredTrigger(data["segment_entered"])


class SegmentExitedTriggerSchema(_Strict):
    segment_exited = Identifier(
        required=True, metadata={"help": "A contact who leaves this segment enters.", **SEGMENT_REF}
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.SegmentExitedTrigger:
        return model.SegmentExitedTrigger(data["segment_exited"])


TRIGGER_SCHEMAS: dict[str, type[Schema]] = {
    "event": EventTriggerSchema,
    "schedule": ScheduleTriggerSchema,
    "anniversary": AnniversaryTriggerSchema,
    "manual": ManualTriggerSchema,
    "segment_entered": SegmentEnteredTriggerSchema,
    "segment_exited": SegmentExitedTriggerSchema,
}
EXIT_SCHEMAS: dict[str, type[Schema]] = {
    "event": ExitRuleSchema,
    "segment_exited": SegmentExitRuleSchema,
}


class KindField(fields.Field[Any]):
    """A mapping whose kind is the key it carries (``event:``, ``schedule:``...), each kind
    loaded by its own schema."""

    noun = ""
    example = ""
    schemas: dict[str, type[Schema]] = {}

    def schema_for(self, raw: Any) -> Schema | None:
        """The schema that reads `raw`, None when it names no kind."""
        if not isinstance(raw, Mapping):
            return None
        kind = next((k for k in self.schemas if k in raw), None)
        return self.schemas[kind]() if kind else None

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValidationError(f"Expected a {self.noun} such as {self.example}.")
        schema = self.schema_for(value)
        if schema is None:
            first = str(next(iter(value), ""))
            hint = did_you_mean(first, self.schemas)
            message = f"Unknown {self.noun}; use {', '.join(self.schemas)}."
            message += f" {hint}" if hint else ""
            raise ValidationError({first: [message]})
        return schema.load(value)


class TriggerField(KindField):
    noun, example, schemas = "trigger", "{event: cart_abandoned}", TRIGGER_SCHEMAS


class ExitRuleField(KindField):
    noun, example, schemas = "exit rule", "{event: unsubscribed}", EXIT_SCHEMAS


class StepsField(fields.Field[Any]):
    """``steps:`` mapping of step id → step; each loaded by its node type's schema."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, Mapping) or not value:
            raise ValidationError("Expected a mapping of step ids to steps (at least one).")
        steps: dict[str, model.Step] = {}
        errors: dict[str, Any] = {}
        for raw_id, raw in value.items():
            step_id = str(raw_id)
            try:
                Identifier().deserialize(step_id)
            except ValidationError as exc:
                errors[step_id] = {"_id": exc.messages}
                continue
            if not isinstance(raw, Mapping):
                errors[step_id] = ["Expected a mapping with at least 'type'."]
                continue
            kind = raw.get("type")
            if not isinstance(kind, str) or kind not in NODE_TYPES:
                hint = did_you_mean(str(kind), NODE_TYPES) or f"use one of {', '.join(NODE_TYPES)}"
                msg = "Missing 'type'." if kind is None else f"Unknown step type '{kind}'."
                errors[step_id] = {"type": [f"{msg} {hint}"]}
                continue
            try:
                steps[step_id] = NODE_TYPES[kind].loader.build(step_id, raw)
            except ValidationError as exc:
                errors[step_id] = exc.messages
        if errors:
            raise ValidationError(errors)
        return steps


class ScenarioSchema(_Strict):
    format_version = fields.Integer(required=True, strict=True)
    id = Identifier(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="")
    objective = fields.String(required=True, validate=OneOf(model.OBJECTIVES))
    priority = fields.Integer(load_default=50, strict=True, validate=validate.Range(min=0, max=100))
    kind = fields.String(load_default="marketing", validate=OneOf(model.KINDS))
    topic = fields.String(load_default=None)
    audience = ConditionField(load_default=None)
    triggers = fields.List(TriggerField(), required=True, validate=validate.Length(min=1))
    entry = fields.Nested(EntrySchema, load_default=lambda: model.EntryRules())
    goal = fields.Nested(GoalSchema, load_default=None)
    exit_on = fields.List(ExitRuleField(), load_default=list)
    data = PlainMapping(load_default=dict)
    sender = fields.Nested(SenderSchema, load_default=dict)
    cost = fields.Nested(CostSchema, load_default=None)
    start = Identifier(load_default=None)
    steps = StepsField(required=True)
    layout = fields.Raw(
        load_default=None, metadata={"help": "Designer positions; ignored by the engine."}
    )

    @validates_schema
    def _version(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValidationError(
                f"This Parcours reads format_version {FORMAT_VERSION}.", "format_version"
            )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data.pop("layout", None)
        cost = data.pop("cost")
        data["fixed_cost"] = float(cost["fixed"]) if cost else 0.0
        data["triggers"] = tuple(data["triggers"])
        rules = data["exit_on"]
        data["exit_on"] = tuple(r for r in rules if isinstance(r, model.ExitRule))
        data["segment_exits"] = tuple(r for r in rules if isinstance(r, model.SegmentExitRule))
        if data["start"] is None:
            data["start"] = next(iter(data["steps"]))
        return data


@cache
def scenario_schema() -> ScenarioSchema:
    """The scenario schema's one shared instance (see NodeType.loader)."""
    return ScenarioSchema()


def load_document(data: Any) -> dict[str, Any]:
    """Validate a parsed YAML document; return Scenario keyword arguments (no templates yet)."""
    if not isinstance(data, Mapping):
        raise ValidationError({"_schema": ["A scenario file is a mapping (id, name, steps, ...)."]})
    result: dict[str, Any] = scenario_schema().load(data)
    return result
