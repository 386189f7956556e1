"""The node-type registry: one entry per step type (schema, model class, palette label, help).

The loader, the JSON Schema export, the designer palette and the docs all read NODE_TYPES; nothing
else switches on type strings.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
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
    WebUrl,
    Weekdays,
)

TEMPLATE_PARTS = ("subject", "text", "html", "title", "body", "url", "image")


class StepSchema(Schema):
    """Fields every step has."""

    class Meta:
        unknown = RAISE

    model_class: type[model.Step] = model.Step

    type = fields.String(required=True)
    label = fields.String(load_default=None, metadata={"help": "Name shown on the canvas."})

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Normalise loaded fields into the model class's keyword arguments (id excluded)."""
        data.pop("type")
        return data

    def build(self, step_id: str, raw: Mapping[str, Any]) -> model.Step:
        """Load a step's raw mapping and return its model object; raises ValidationError."""
        return self.model_class(id=step_id, **self.load(raw))


def _next(help_text: str = "Step to go to next; leave empty to end the journey.") -> Any:
    return Identifier(load_default=None, metadata={"help": help_text, "edge": True})


class WaitSchema(StepSchema):
    model_class = model.WaitStep
    duration = Duration(required=True, metadata={"help": "How long to wait, e.g. 1h, 2d, 1w."})
    next = _next()


class WaitUntilSchema(StepSchema):
    model_class = model.WaitUntilStep
    at = LocalTime(load_default=None, metadata={"help": "Local time of day, HH:MM."})
    weekdays = Weekdays(load_default=None, metadata={"help": "Allowed days, e.g. [mon, fri]."})
    next = _next()

    @validates_schema
    def _one_of(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("at") is None and data.get("weekdays") is None:
            raise ValidationError("Give 'at' (e.g. '09:00'), 'weekdays', or both.", "at")


class WaitDateSchema(StepSchema):
    model_class = model.WaitDateStep
    attribute = fields.String(
        required=True, metadata={"help": "Date attribute, e.g. renewal_date."}
    )
    offset = Duration(
        positive=False, load_default=timedelta(0), metadata={"help": "e.g. -7d for a week before."}
    )
    at = LocalTime(load_default=None, metadata={"help": "Local time of day, HH:MM."})
    next = _next()


class WaitEventSchema(StepSchema):
    model_class = model.WaitEventStep
    event = fields.String(required=True, metadata={"help": "Event name to wait for."})
    where = Filters(load_default=(), metadata={"help": "Filters on the event's properties."})
    timeout = Duration(required=True, metadata={"help": "Give up after this long, e.g. 2d."})
    on_event = _next("Step when the event arrives.")
    on_timeout = _next("Step when the timeout passes first.")


class ConditionSchema(StepSchema):
    model_class = model.ConditionStep
    if_ = ConditionField(required=True, data_key="if", metadata={"help": "The test."})
    then = _next("Step when the test is true.")
    else_ = Identifier(
        load_default=None, data_key="else", metadata={"help": "Step otherwise.", "edge": True}
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["condition"] = data.pop("if_")
        result: dict[str, Any] = super().make(data, **kwargs)
        return result


class CaseSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(load_default=None)
    when = ConditionField(required=True)
    next = _next()

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.SwitchCase:
        return model.SwitchCase(condition=data["when"], next=data["next"], name=data["name"])


class SwitchSchema(StepSchema):
    model_class = model.SwitchStep
    cases = fields.List(fields.Nested(CaseSchema), required=True, validate=validate.Length(min=1))
    default = _next("Step when no case matches.")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["cases"] = tuple(data["cases"])
        result: dict[str, Any] = super().make(data, **kwargs)
        return result


class BranchSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Identifier(required=True)
    weight = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=100_000))
    next = _next()

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.SplitBranch:
        return model.SplitBranch(**data)


class BanditSchema(Schema):
    class Meta:
        unknown = RAISE

    floor = fields.Float(
        load_default=0.1,
        validate=validate.Range(min=0, max=0.5, min_inclusive=False),
        metadata={"help": "Least share of new entries each branch keeps, e.g. 0.1."},
    )


class ExperimentSchema(Schema):
    """The `experiment:` block of a split step: how its results are judged and routed."""

    class Meta:
        unknown = RAISE

    mode = fields.String(
        load_default="fixed",
        validate=OneOf(list(model.EXPERIMENT_MODES)),
        metadata={"help": "fixed: test once at the planned sample; sequential: check any day."},
    )
    alpha = fields.Float(
        load_default=0.05,
        validate=validate.Range(min=0.001, max=0.2),
        metadata={"help": "Risk of a false winner, e.g. 0.05."},
    )
    min_effect = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=1, min_inclusive=False),
        metadata={"help": "Smallest difference worth finding, absolute: 0.02 is two points."},
    )
    power = fields.Float(
        load_default=0.8,
        validate=validate.Range(min=0.5, max=0.99),
        metadata={"help": "Chance of finding that difference when it is real, e.g. 0.8."},
    )
    tau = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=1, min_inclusive=False),
        metadata={"help": "Sequential mode: the spread of effects it is tuned for."},
    )
    auto_winner = fields.Boolean(
        load_default=False, metadata={"help": "Declare the winner when the test says so."}
    )
    bandit = fields.Nested(
        BanditSchema,
        load_default=None,
        metadata={"help": "Shift new entries toward the better branch (Thompson sampling)."},
    )
    winner = Identifier(
        load_default=None,
        metadata={"help": "Branch every new entry takes (the holdout stays)."},
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> model.Experiment:
        bandit = data.pop("bandit")
        return model.Experiment(**data, bandit_floor=bandit["floor"] if bandit else None)


class SplitSchema(StepSchema):
    model_class = model.SplitStep
    branches = fields.List(
        fields.Nested(BranchSchema), required=True, validate=validate.Length(min=1)
    )
    holdout = fields.Integer(
        load_default=0,
        strict=True,
        validate=validate.Range(min=0, max=99),
        metadata={"help": "Percent of contacts kept as a control group that receives nothing."},
    )
    salt = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=100),
        metadata={"help": "Any text; changing it reshuffles which contacts land in which arm."},
    )
    experiment = fields.Nested(
        ExperimentSchema,
        load_default=model.Experiment(),
        metadata={"help": "How the results are judged: test mode, risk, winner, bandit."},
    )

    @validates_schema
    def _unique_names(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        names = [b.name for b in data.get("branches", [])]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValidationError(f"Branch names must be unique: {', '.join(dupes)}.", "branches")
        for i, name in enumerate(names):
            if name == "holdout":  # the arm name journaled for the control group
                raise ValidationError(
                    {"branches": {i: {"name": ["'holdout' is reserved for the control group."]}}}
                )
        self._experiment_fits(data.get("experiment"), names)

    @staticmethod
    def _experiment_fits(experiment: model.Experiment | None, names: list[str]) -> None:
        """The winner is one of the branches, and the bandit floors leave room for the rest."""
        if experiment is None:
            return
        if experiment.winner is not None and experiment.winner not in names:
            hint = f" (branches: {', '.join(names)})" if names else ""
            message = f"'{experiment.winner}' is not a branch of this split{hint}."
            raise ValidationError({"experiment": {"winner": [message]}})
        if experiment.auto_winner and experiment.mode == "fixed" and experiment.min_effect is None:
            message = (
                "An automatic winner in fixed mode needs 'min_effect' (the planned sample); "
                "or use 'mode: sequential', which is safe to check at any time."
            )
            raise ValidationError({"experiment": {"auto_winner": [message]}})
        floor = experiment.bandit_floor
        if floor is not None and names and floor * len(names) > 1:
            message = f"A floor of {floor} for {len(names)} branches leaves nothing to share."
            raise ValidationError({"experiment": {"bandit": {"floor": [message]}}})

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["branches"] = tuple(data["branches"])
        result: dict[str, Any] = super().make(data, **kwargs)
        return result


class SendSchema(StepSchema):
    model_class = model.SendStep
    channel = fields.String(
        required=True, metadata={"help": "email, sms, push, webhook, onsite, mail, call."}
    )
    template = fields.String(
        load_default=None, metadata={"help": "Template folder under templates/."}
    )
    content = fields.Dict(
        keys=fields.String(validate=OneOf(TEMPLATE_PARTS)),
        values=fields.String(),
        load_default=dict,
        metadata={"help": "Inline template parts (subject, text, html, title, body)."},
    )
    topic = fields.String(
        load_default=None, metadata={"help": "Consent topic; defaults to the scenario's."}
    )
    on_blocked = fields.String(
        load_default=None,
        validate=OneOf(["skip", "defer", "fallback", "exit"]),
        metadata={"help": "When the policy blocks it: skip, defer, fallback or exit."},
    )
    defer_max = Duration(load_default=None, metadata={"help": "Longest deferral, e.g. 2d."})
    fallback = fields.String(load_default=None, metadata={"help": "Channel to try instead."})
    next = _next()

    @validates_schema
    def _template_or_content(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if bool(data.get("template")) == bool(data.get("content")):
            raise ValidationError(
                "Give either 'template' (a folder name) or inline 'content'.", "template"
            )


class UpdateSchema(StepSchema):
    model_class = model.UpdateStep
    set = PlainMapping(load_default=dict, metadata={"help": "Attributes to set."})
    add_score = fields.Integer(
        load_default=0, strict=True, metadata={"help": "Points to add (or remove)."}
    )
    add_tags = fields.List(fields.String(), load_default=list)
    remove_tags = fields.List(fields.String(), load_default=list)
    next = _next()

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["add_tags"] = tuple(data["add_tags"])
        data["remove_tags"] = tuple(data["remove_tags"])
        result: dict[str, Any] = super().make(data, **kwargs)
        return result


class WebhookSchema(StepSchema):
    model_class = model.WebhookStep
    url = WebUrl(required=True)
    method = fields.String(load_default="POST", validate=OneOf(["POST", "PUT", "PATCH"]))
    payload = PlainMapping(
        load_default=dict, metadata={"help": "JSON body; text values are templates."}
    )
    next = _next()


class StartScenarioSchema(StepSchema):
    model_class = model.StartScenarioStep
    scenario = Identifier(required=True, metadata={"help": "Id of the scenario to start."})
    next = _next()


class ExitSchema(StepSchema):
    model_class = model.ExitStep
    reason = fields.String(load_default="exit", metadata={"help": "Recorded as the exit reason."})


@dataclass(frozen=True)
class NodeType:
    """One step type: how to load it, and how to show it in the designer."""

    type: str
    label: str
    label_fr: str
    category: str  # wait | logic | action | end
    help: str
    schema: builtins.type[StepSchema]  # builtins: the field `type` shadows it here

    @property
    def model_class(self) -> builtins.type[model.Step]:
        return self.schema.model_class

    @cached_property
    def loader(self) -> StepSchema:
        """The schema's one shared instance: building one copies every field, and a marshmallow
        schema keeps nothing between loads."""
        return self.schema()


NODE_TYPES: dict[str, NodeType] = {}


def register_node_type(node_type: NodeType) -> None:
    """Add a step type; the model class's `type` must match the registry key."""
    if node_type.schema.model_class.type != node_type.type:
        raise ValueError(
            f"model class of '{node_type.type}' declares '{node_type.schema.model_class.type}'"
        )
    NODE_TYPES[node_type.type] = node_type


for _nt in (
    NodeType("wait", "Wait", "Attendre", "wait", "Pause for a fixed duration.", WaitSchema),
    NodeType(
        "wait_until",
        "Wait until time",
        "Attendre l'heure",
        "wait",
        "Pause until a local time of day and/or weekday in the contact's zone.",
        WaitUntilSchema,
    ),
    NodeType(
        "wait_date",
        "Wait until date",
        "Attendre la date",
        "wait",
        "Pause until a date attribute of the contact, plus an offset.",
        WaitDateSchema,
    ),
    NodeType(
        "wait_event",
        "Wait for event",
        "Attendre un événement",
        "wait",
        "Pause until an event arrives, or a timeout passes (two exits).",
        WaitEventSchema,
    ),
    NodeType(
        "condition",
        "Condition",
        "Condition",
        "logic",
        "If/else on profile, events, tags or score.",
        ConditionSchema,
    ),
    NodeType(
        "switch",
        "Switch",
        "Aiguillage",
        "logic",
        "Several branches; the first matching case wins.",
        SwitchSchema,
    ),
    NodeType(
        "split",
        "Random split",
        "Répartition A/B",
        "logic",
        "A/B/n split by weight, with an optional holdout group.",
        SplitSchema,
    ),
    NodeType(
        "send",
        "Send message",
        "Envoyer un message",
        "action",
        "Send on a channel with a template; the policy gate decides first.",
        SendSchema,
    ),
    NodeType(
        "update",
        "Update profile",
        "Mettre à jour le profil",
        "action",
        "Set attributes, add to the score, add or remove tags.",
        UpdateSchema,
    ),
    NodeType(
        "webhook",
        "Call webhook",
        "Appeler un webhook",
        "action",
        "POST JSON to a URL (e.g. hand a lead to sales).",
        WebhookSchema,
    ),
    NodeType(
        "start_scenario",
        "Start scenario",
        "Démarrer un scénario",
        "action",
        "Enroll the contact in another scenario.",
        StartScenarioSchema,
    ),
    NodeType("exit", "Exit", "Sortie", "end", "End the journey with a reason.", ExitSchema),
):
    register_node_type(_nt)
