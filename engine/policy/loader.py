"""Reading `policy.yaml`: the same safe YAML, every problem at once with its line, like scenarios.

format_version: 1
topics: {newsletter: Newsletter, promotions: Promotions, partners: Partners}
consent:
  defaults: {email: opt_in, sms: opt_in, push: opt_out, onsite: opt_out}
  double_opt_in: [email]
  expiry: 1095d
country: FR        # the workspace's calendar, for `holidays: contact`
quiet_hours:
  - id: sms-night
    channels: [sms, call]
    from: "20:00"
    to: "08:00"
    days_off: [sun]
    holidays: contact  # the contact's `country` attribute, else `country`; or FR, DE-BY...
blackout:
  - {id: year-end, dates: ["2026-12-24"], channels: [marketing], reason: end-of-year freeze}
caps:
  - {id: email-week, channels: [email], max: 3, window: 7d}
  - {id: marketing-day, channels: [marketing], max: 3, per: day, weighted: true}
spacing: 12h
outcome: {action: defer, defer_max: 2d, fallback: {sms: email, email: push}}
pressure:
  half_life: 7d
  under: 1
  over: 6
  signals: {email_opened: -0.5, email_clicked: -1, order_placed: -2, unsubscribed: 5}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
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

from engine.policy.blackouts import BlackoutSchema, Calendar
from engine.policy.holidays import CONTACT
from engine.policy.model import (
    CALENDAR,
    CONSENT_MODES,
    DEFAULT_HEALTH_SIGNALS,
    HEALTH_SIGNALS,
    MARKETING,
    OUTCOMES,
    CapRule,
    HealthConfig,
    Outcome,
    Policy,
    PressureConfig,
    QuietRule,
    Threshold,
)
from engine.spec.fields import Duration, Identifier, LocalTime, Weekdays
from engine.spec.problems import Problem, did_you_mean, has_errors
from engine.spec.settings_files import lint_file, lint_mapping, loaded
from engine.spec.yamlio import at_file_start


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _channel_list() -> Any:
    return fields.List(fields.String(), required=True, validate=validate.Length(min=1))


class ConsentSchema(_Strict):
    defaults = fields.Dict(
        keys=fields.String(), values=fields.String(validate=validate.OneOf(CONSENT_MODES)),
        load_default=dict,
    )  # fmt: skip
    double_opt_in = fields.List(fields.String(), load_default=list)
    expiry = Duration(load_default=None)


class QuietSchema(_Strict):
    id = Identifier(required=True)
    channels = _channel_list()
    start = LocalTime(data_key="from", load_default=None)
    end = LocalTime(data_key="to", load_default=None)
    days_off = Weekdays(load_default=frozenset())
    holidays = Calendar(contact=True, load_default=None)

    @validates_schema
    def _window(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if (data.get("start") is None) != (data.get("end") is None):
            raise ValidationError(
                "Give both 'from' and 'to', e.g. from: '20:00', to: '08:00'.", "to"
            )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> QuietRule:
        data["channels"] = tuple(data["channels"])
        return QuietRule(**data)


class CapSchema(_Strict):
    id = Identifier(required=True)
    channels = _channel_list()
    max = fields.Float(required=True, validate=validate.Range(min=0))
    window = Duration(load_default=None)
    calendar = fields.String(data_key="per", load_default=None, validate=validate.OneOf(CALENDAR))
    weighted = fields.Boolean(load_default=None)

    @validates_schema
    def _period(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if (data.get("window") is None) == (data.get("calendar") is None):
            raise ValidationError(
                "Give either 'window' (e.g. 7d) or 'per' (day or week).", "window"
            )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> CapRule:
        data["channels"] = tuple(data["channels"])
        if data["weighted"] is None:  # across channels, an SMS weighs more than an email
            data["weighted"] = MARKETING in data["channels"] or len(data["channels"]) > 1
        return CapRule(**data)


class OutcomeSchema(_Strict):
    action = fields.String(load_default="skip", validate=validate.OneOf(OUTCOMES))
    defer_max = Duration(load_default=timedelta(days=2))
    fallback = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Outcome:
        return Outcome(**data)


class ThresholdSchema(_Strict):
    max = fields.Float(load_default=None, validate=validate.Range(min=0))
    min = fields.Float(load_default=None, validate=validate.Range(min=0))
    rise = fields.Float(load_default=None, validate=validate.Range(min=1, min_inclusive=False))
    fall = fields.Float(
        load_default=None, validate=validate.Range(min=0, max=1, max_inclusive=False)
    )

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Threshold:
        return Threshold(**data)


class TightenSchema(_Strict):
    factor = fields.Float(required=True, validate=validate.Range(min=0, max=1, max_inclusive=False))


class HealthSchema(_Strict):
    recent = Duration(load_default=timedelta(days=7))
    baseline = Duration(load_default=timedelta(days=28))
    min_sends = fields.Integer(load_default=200, strict=True, validate=validate.Range(min=1))
    signals = fields.Dict(
        keys=fields.String(validate=validate.OneOf(HEALTH_SIGNALS)),
        values=fields.Nested(ThresholdSchema),
        load_default=lambda: dict(DEFAULT_HEALTH_SIGNALS),
    )
    tighten = fields.Nested(TightenSchema, load_default=None)

    @validates_schema
    def _spans(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        for name in ("recent", "baseline"):
            span = data.get(name)
            if span is not None and span < timedelta(days=1):
                raise ValidationError("At least one day, e.g. 7d.", name)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> HealthConfig:
        tighten = data.pop("tighten")
        return HealthConfig(**data, tighten=tighten["factor"] if tighten else None)


class PressureSchema(_Strict):
    half_life = Duration(load_default=timedelta(days=7))
    under = fields.Float(load_default=1.0)
    over = fields.Float(load_default=6.0)
    signals = fields.Dict(keys=fields.String(), values=fields.Float(), load_default=dict)
    over_factor = fields.Float(load_default=0.5, validate=validate.Range(min=0, max=1))
    under_extra = fields.Float(load_default=1.0, validate=validate.Range(min=0))
    block_over = fields.Boolean(load_default=False)
    block_over_min_weight = fields.Float(load_default=1.0, validate=validate.Range(min=0))
    health = fields.Nested(HealthSchema, load_default=lambda: HealthConfig())

    @validates_schema
    def _order(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if data.get("under", 1.0) >= data.get("over", 6.0):
            raise ValidationError("'under' must be below 'over'.", "over")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> PressureConfig:
        return PressureConfig(**data)


class PolicySchema(_Strict):
    format_version = fields.Integer(required=True, strict=True, validate=validate.Equal(1))
    topics = fields.Dict(keys=Identifier(), values=fields.String(), load_default=dict)
    consent = fields.Nested(ConsentSchema, load_default=dict)
    country = Calendar(load_default=None)
    quiet_hours = fields.List(fields.Nested(QuietSchema), load_default=list)
    blackout = fields.List(fields.Nested(BlackoutSchema), load_default=list)
    caps = fields.List(fields.Nested(CapSchema), load_default=list)
    spacing = Duration(load_default=None)
    weights = fields.Dict(keys=fields.String(), values=fields.Float(), load_default=dict)
    outcome = fields.Nested(OutcomeSchema, load_default=lambda: Outcome())
    pressure = fields.Nested(PressureSchema, load_default=lambda: PressureConfig())

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Policy:
        consent = data["consent"] or {}
        return Policy(
            format_version=data["format_version"],
            topics=data["topics"] or {"newsletter": "Newsletter"},
            consent_defaults=consent.get("defaults", {}),
            double_opt_in=frozenset(consent.get("double_opt_in", ())),
            consent_expiry=consent.get("expiry"),
            country=data["country"],
            quiet=tuple(data["quiet_hours"]),
            blackouts=tuple(data["blackout"]),
            caps=tuple(data["caps"]),
            spacing=data["spacing"],
            weights=data["weights"],
            outcome=data["outcome"],
            pressure=data["pressure"],
        )


def _channel_problems(policy: Policy, known: tuple[str, ...]) -> list[Problem]:
    """Channels named in the policy must exist (MARKETING aside, in caps and blackouts), rule
    ids be unique, and `holidays: contact` have a workspace country to fall back on."""
    problems = []

    def check(name: str, path: tuple[str | int, ...]) -> None:
        if name not in known:
            problems.append(Problem("channel.unknown", f"Unknown channel '{name}'.", path,
                                    hint=did_you_mean(name, known)))  # fmt: skip

    for i, rule in enumerate(policy.quiet):
        for j, name in enumerate(rule.channels):
            check(name, ("quiet_hours", i, "channels", j))
    for i, cap in enumerate(policy.caps):
        for j, name in enumerate(cap.channels):
            if name != MARKETING:
                check(name, ("caps", i, "channels", j))
    for i, blackout in enumerate(policy.blackouts):
        for j, name in enumerate(blackout.channels):
            if name != MARKETING:
                check(name, ("blackout", i, "channels", j))
    for name in policy.consent_defaults:
        check(name, ("consent", "defaults", name))
    for src, dst in policy.outcome.fallback.items():
        check(src, ("outcome", "fallback", src))
        check(dst, ("outcome", "fallback", src))
    for i, rule in enumerate(policy.quiet):
        if rule.holidays == CONTACT and policy.country is None:
            message = "'holidays: contact' needs the workspace's country for contacts without one."
            problems.append(Problem("policy.country_missing", message,
                                    ("quiet_hours", i, "holidays"),
                                    hint="add 'country: FR' at the top of the policy"))  # fmt: skip
    ids = [r.id for r in policy.quiet] + [c.id for c in policy.caps]
    ids += [b.id for b in policy.blackouts]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(Problem("policy.duplicate_id", f"The rule id '{dup}' is used twice.", ()))
    return problems


def lint_policy_text(text: str, filename: str | None = None) -> tuple[Policy | None, list[Problem]]:
    """The Policy (None when there are errors) and every problem, each with its line."""
    from channels import channel_names
    from engine.spec.loader import _place

    message = "The policy is a mapping of settings (format_version, topics, consent, caps...)."
    invalid = Problem("policy.invalid", message, hint="start with 'format_version: 1'")
    policy, problems, positions = lint_mapping(text, filename, PolicySchema(), invalid)
    if policy is None:
        return None, problems
    problems = _place(_channel_problems(policy, channel_names()), positions, filename)
    if has_errors(problems):
        return None, at_file_start(problems)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return Policy(**{**policy.__dict__, "content_hash": digest}), problems


def lint_policy_file(path: Path) -> tuple[Policy | None, list[Problem]]:
    """`lint_policy_text` on a file, read as safely as a scenario (size, UTF-8); the defaults
    when there is no file."""
    return lint_file(path, "policy file", lint_policy_text, Policy())


def load_policy_file(path: Path) -> Policy:
    """The policy in `path`; a missing file means the defaults. Raises ScenarioInvalid, whose
    problems each name the file, line and column."""
    return loaded(lint_policy_file(path))
