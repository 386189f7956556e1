"""Reading `attributes.yaml`: which events are purchases and how RFM and the lifecycle stage are
computed (engine/audience/attributes.py computes them). Linted like the policy file: the same
safe YAML, every problem at once with its file:line:col.

format_version: 1
purchase_events: [order_placed]
value: total               # the purchase event's property holding its amount (a number)
window: 365d               # frequency and monetary count the purchases of this window
lifecycle:
  repeat_orders: 2         # purchases (all time) that make a repeat customer
  loyal_orders: 4          # purchases in the window that make a loyal customer
  premium_value: 1000      # customer value (all time) that makes a premium one; omit: no stage
  at_risk_after: 90d       # days since the last purchase
  dormant_after: 180d
  lost_after: 365d
lead_score:
  half_life: 30d           # optional: `lead_score` is the score decayed; omit: the score itself
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate
from marshmallow import validates_schema as checks

from engine.spec.fields import Duration, Identifier
from engine.spec.problems import Problem
from engine.spec.settings_files import lint_file, lint_mapping, loaded

ATTRIBUTES_FILE = "attributes.yaml"  # beside the scenarios, like policy.yaml


@dataclass(frozen=True)
class Lifecycle:
    repeat_orders: int = 2
    loyal_orders: int = 4
    premium_value: float | None = None
    at_risk_after: timedelta = timedelta(days=90)
    dormant_after: timedelta = timedelta(days=180)
    lost_after: timedelta = timedelta(days=365)


@dataclass(frozen=True)
class AttributesSpec:
    """The declaration; the defaults are what a workspace without the file gets."""

    format_version: int = 1
    purchase_events: tuple[str, ...] = ("order_placed",)
    value: str = "total"
    window: timedelta = timedelta(days=365)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    lead_half_life: timedelta | None = None  # lead_score: {half_life: 30d}
    content_hash: str = ""


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class LifecycleSchema(_Strict):
    repeat_orders = fields.Integer(strict=True, load_default=2, validate=validate.Range(min=2))
    loyal_orders = fields.Integer(strict=True, load_default=4, validate=validate.Range(min=2))
    premium_value = fields.Float(load_default=None, validate=validate.Range(min=0))
    at_risk_after = Duration(load_default=timedelta(days=90))
    dormant_after = Duration(load_default=timedelta(days=180))
    lost_after = Duration(load_default=timedelta(days=365))

    @checks
    def _order(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("loyal_orders", 4) < data.get("repeat_orders", 2):
            raise ValidationError("Must be at least 'repeat_orders'.", "loyal_orders")
        lapses = ("at_risk_after", "dormant_after", "lost_after")
        risk, dormant, lost = (data.get(name) for name in lapses)
        if risk and dormant and risk >= dormant:
            raise ValidationError("Must be longer than 'at_risk_after'.", "dormant_after")
        if dormant and lost and dormant >= lost:
            raise ValidationError("Must be longer than 'dormant_after'.", "lost_after")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Lifecycle:
        return Lifecycle(**data)


class LeadScoreSchema(_Strict):
    half_life = Duration(required=True)


class AttributesSchema(_Strict):
    format_version = fields.Integer(required=True, strict=True, validate=validate.Equal(1))
    purchase_events = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        required=True, validate=validate.Length(min=1),
    )  # fmt: skip
    value = Identifier(load_default="total")
    window = Duration(load_default=timedelta(days=365))
    lifecycle = fields.Nested(LifecycleSchema, load_default=lambda: Lifecycle())
    lead_score = fields.Nested(LeadScoreSchema, load_default=None)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> AttributesSpec:
        data["purchase_events"] = tuple(dict.fromkeys(data["purchase_events"]))
        lead = data.pop("lead_score")
        return AttributesSpec(**data, lead_half_life=lead["half_life"] if lead else None)


def lint_attributes_text(
    text: str, filename: str | None = None
) -> tuple[AttributesSpec | None, list[Problem]]:
    """The declaration (None when there are errors) and every problem, each with its line."""
    message = "The attributes file is a mapping (format_version, purchase_events, value...)."
    invalid = Problem("attributes.invalid", message, hint="start with 'format_version: 1'")
    spec, problems, _ = lint_mapping(text, filename, AttributesSchema(), invalid)
    if spec is None:
        return None, problems
    return replace(spec, content_hash=hashlib.sha256(text.encode()).hexdigest()), problems


def lint_attributes_file(path: Path) -> tuple[AttributesSpec | None, list[Problem]]:
    """`lint_attributes_text` on a file; the defaults when there is none."""
    return lint_file(path, "attributes file", lint_attributes_text, AttributesSpec())


def load_attributes_file(path: Path) -> AttributesSpec:
    """The declaration in `path` (the defaults when missing); raises ScenarioInvalid, whose
    problems each name the file, line and column."""
    return loaded(lint_attributes_file(path))
