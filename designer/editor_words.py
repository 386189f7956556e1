"""The editor's words: the node-type registry as the palette and inspector show it, field labels
and help, and every text of the canvas script, in the current language.

Help texts come from the registry (each schema field's ``help`` metadata, in English) and are
translated here; labels are named once per field name, since a name means the same thing in every
step type. `designer.i18n.dynamic_messages` lists the registry's help so the French is checked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from marshmallow import Schema, fields

from designer.i18n import current_language
from designer.i18n import gettext as _
from engine.spec.jsonschema import scenario_json_schema
from engine.spec.nodes import NODE_TYPES


def field_labels() -> dict[str, str]:
    """A label per step field name (cases and branches items included)."""
    return {
        "label": _("Label"), "duration": _("Duration"), "next": _("Next step"),
        "at": _("Time of day"), "weekdays": _("Days of the week"), "attribute": _("Attribute"),
        "offset": _("Offset"), "event": _("Event"), "where": _("Event filters"),
        "timeout": _("Timeout"), "on_event": _("When the event arrives"),
        "on_timeout": _("When the timeout passes"), "if": _("Condition"), "then": _("If true"),
        "else": _("Otherwise"), "cases": _("Cases"), "name": _("Name"), "when": _("When"),
        "default": _("Default step"), "branches": _("Branches"), "weight": _("Weight"),
        "holdout": _("Control group (%)"), "salt": _("Shuffle key"), "channel": _("Channel"),
        "template": _("Template"),
        "content": _("Content"), "topic": _("Topic"), "on_blocked": _("When blocked"),
        "defer_max": _("Longest deferral"), "fallback": _("Fallback channel"),
        "set": _("Set attributes"), "add_score": _("Add to score"), "add_tags": _("Add tags"),
        "remove_tags": _("Remove tags"), "url": _("URL"), "method": _("HTTP method"),
        "payload": _("Payload"), "scenario": _("Scenario"), "reason": _("Reason"),
        **experiment_labels(),
    }  # fmt: skip


def experiment_labels() -> dict[str, str]:
    """Labels of a split step's `experiment:` block (its fields, and the bandit's)."""
    return {
        "experiment": _("Experiment"), "mode": _("Test mode"), "alpha": _("Risk of a false winner"),
        "min_effect": _("Smallest effect worth finding"), "power": _("Power"),
        "tau": _("Sequential tuning"), "auto_winner": _("Declare the winner automatically"),
        "bandit": _("Bandit (shift traffic to the better branch)"), "floor": _("Least share"),
        "winner": _("Winner"),
    }  # fmt: skip


def _field_help(schema: Schema, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(field key, English help) of a step schema; list items as `cases.next`."""
    for name, field in schema.fields.items():
        key = prefix + (field.data_key or name)
        if field.metadata.get("help"):
            yield key, str(field.metadata["help"])
        inner = getattr(field, "inner", field)  # list items, or a nested object itself
        if isinstance(inner, fields.Nested) and isinstance(inner.schema, Schema):
            yield from _field_help(inner.schema, key + ".")


def registry_help() -> list[str]:
    """Every help text of the registry, in English: step types, then their fields."""
    texts = [node.help for node in NODE_TYPES.values()]
    for node in NODE_TYPES.values():
        texts += [text for _key, text in _field_help(node.schema())]
    return list(dict.fromkeys(texts))


def _fields(node_schema: Schema, properties: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Label and help of each field of a step type, keyed `name` or `list.name` for items."""
    labels = field_labels()
    keys = [k for k in properties if k != "type"]
    for name, prop in properties.items():
        keys += _inner_keys(name, prop)
    help_of = dict(_field_help(node_schema))
    out = {}
    for key in keys:
        name = key.rpartition(".")[2]
        text = help_of.get(key)
        out[key] = {"label": labels.get(name, name), "help": _(text) if text else ""}
    return out


def _inner_keys(name: str, prop: Mapping[str, Any]) -> list[str]:
    """`list.field` keys of list items and `object.field` keys of nested objects, any depth."""
    prop = next((p for p in prop.get("anyOf", []) if p.get("type") != "null"), prop)
    inner = prop.get("items", {}) if prop.get("type") == "array" else prop
    keys = []
    for key, sub in (inner.get("properties") or {}).items():
        keys.append(f"{name}.{key}")
        keys += _inner_keys(f"{name}.{key}", sub)
    return keys


def _edges(step_schema: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """Edge fields of a step type: top-level ones, and list fields whose items hold one."""
    top, nested = [], {}
    for name, prop in step_schema.get("properties", {}).items():
        if prop.get("x-edge"):
            top.append(name)
        items = prop.get("items", {}).get("properties", {}) if prop.get("type") == "array" else {}
        for inner, inner_prop in items.items():
            if inner_prop.get("x-edge"):
                nested[name] = inner
    return top, nested


def node_types() -> list[dict[str, Any]]:
    """The palette and inspector data, from the node-type registry."""
    defs = scenario_json_schema()["$defs"]
    french = current_language() == "fr"
    out = []
    for node in NODE_TYPES.values():
        schema = defs[f"step_{node.type}"]
        edges, nested = _edges(schema)
        described = _fields(node.schema(), schema.get("properties", {}))
        out.append(
            {
                "type": node.type,
                "label": node.label_fr if french else node.label,
                "category": node.category,
                "help": _(node.help),
                "schema": schema,
                "edges": edges,
                "nested_edges": nested,
                "fields": described,
            }
        )
    return out


def strings() -> dict[str, str]:
    """Every text the canvas script shows, in the current language."""
    return {
        "palette": _("Steps"),
        "drag_hint": _("Drag a step from the palette"),
        "drag_sub": _("Then connect its exits to build the journey."),
        "start": _("Start"),
        "end": _("end"),
        "saved": _("Saved"),
        "unsaved": _("Unsaved changes"),
        "saving": _("Saving…"),
        "conflict": _("Conflict: the file changed on disk — reload"),
        "save_failed": _("Could not save"),
        "blocked": _("Saved as a draft: publishing is blocked until the errors are fixed."),
        "leave": _("You have unsaved changes."),
        "problems": _("Problems"),
        "no_problems": _("No problems"),
        "step_id": _("Step id"),
        "id_taken": _("This id is already used by another step."),
        "id_invalid": _("Letters, digits, '-' and '_' only; start with a letter or digit."),
        "delete_step": _("Delete step"),
        "scenario": _("Scenario"),
        "name": _("Name"),
        "objective": _("Objective"),
        "priority": _("Priority"),
        "triggers": _("Triggers"),
        "description": _("Description"),
        "add": _("Add"),
        "case": _("Case"),
        "branch": _("Branch"),
        "expression": _("Expression"),
        "form": _("Form"),
        "all": _("all of"),
        "any": _("any of"),
        "add_rule": _("Add rule"),
        "add_group": _("Add group"),
        "attribute": _("Attribute"),
        "tag": _("Tag"),
        "event": _("Event"),
        "value": _("Value"),
        "key": _("Key"),
        "none": _("— none —"),
        "other_form": _("The builder cannot edit this form; use the expression mode or YAML."),
        "member_of": _("Member of segment"),
        "consent": _("Consent"),
        "pressure": _("Pressure"),
        "at_least_once": _("at least once"),
        "times": _("number of times"),
        "sum_of": _("sum of a property"),
        "property": _("property"),
        "within_ever": _("within (empty: ever)"),
        "within_help": _("e.g. 90d; empty counts every event ever"),
        "all_channels": _("all channels"),
        "duration_hint": _("e.g. 30m, 1h, 2d, 1w"),
        "time_hint": _("HH:MM, in the contact's time zone"),
        "preview": _("Preview"),
        "edit_template": _("Edit the template's parts"),
        "contact_id": _("Contact external id (empty: a sample contact)"),
        "segment": _("segment"),
        "segments": _("segments"),
        "characters": _("characters"),
        "yaml_invalid": _("The YAML has errors: the canvas shows the last valid version."),
        "not_in_schema": _("Not editable here; use the YAML tab."),
        "weekdays": _("mon tue wed thu fri sat sun"),
        **entry_strings(),
    }


def entry_strings() -> dict[str, str]:
    """The texts of the entry block and the goal/exit panel."""
    return {
        "entry_block": _("Entry"),
        "entry_about": _("Who enters this journey, when, and how often."),
        "goal_block": _("Goal and exits"),
        "goal_about": _("What counts as a conversion, and what ends the journey early."),
        "edit_entry": _("Who enters…"),
        "edit_goal": _("Goal and exits…"),
        "add_trigger": _("Add a trigger"),
        "no_trigger": _("No trigger: nobody enters"),
        "trigger_event": _("When an event arrives"),
        "trigger_schedule": _("On a schedule"),
        "trigger_anniversary": _("On an anniversary"),
        "trigger_segment_entered": _("When a contact enters a segment"),
        "trigger_segment_exited": _("When a contact leaves a segment"),
        "trigger_manual": _("Manually"),
        "manual": _("manual"),
        "manual_help": _("Only parcours enroll or the API enroll contacts."),
        "event_name": _("Event name"),
        "event_filters": _("Event filters"),
        "filter": _("filter"),
        "filters": _("filters"),
        "repeat": _("Repeat"),
        "every_day": _("every day"),
        "every_week": _("every week"),
        "every_month": _("every month"),
        "cron_custom": _("custom (cron)"),
        "cron_label": _("Cron"),
        "cron_help": _("minute hour day month weekday, e.g. 0 9 1-7 * mon"),
        "day": _("Day"),
        "day_of_month": _("Day of the month"),
        "at_time": _("At"),
        "timezone": _("Time zone"),
        "date_attribute": _("Date attribute"),
        "offset": _("Offset"),
        "offset_hint": _("e.g. -1d: the day before"),
        "anniversary_of": _("anniversary of"),
        "segment_label": _("Segment"),
        "segment_entered_help": _("A contact who joins this segment enters."),
        "segment_exited_help": _("A contact who leaves this segment enters."),
        "choose": _("choose"),
        "enters": _("enters"),
        "leaves": _("leaves"),
        "entry_rules": _("Entry rules"),
        "reentry": _("Re-entry"),
        "reentry_never": _("once"),
        "reentry_always": _("every time"),
        "reentry_cooldown": _("again after"),
        "reentry_never_long": _("Never: a contact enters once"),
        "reentry_always_long": _("Always: every time the trigger fires"),
        "reentry_cooldown_long": _("After a cooldown"),
        "cooldown": _("Cooldown"),
        "concurrent": _("Several enrollments of one contact at once"),
        "audience": _("Audience"),
        "audience_help": _("Only contacts who match it when the trigger fires enter."),
        "everyone": _("everyone"),
        "everyone_cap": _("Everyone"),
        "a_segment": _("A segment"),
        "conditions": _("Conditions"),
        "member_of": _("member of"),
        "counting": _("Counting…"),
        "contacts_match": _("contacts match now"),
        "contact_matches": _("contact matches now"),
        "not_counted": _("not counted in advance"),
        "for_example": _("e.g."),
        "sending": _("Sending"),
        "kind": _("Kind"),
        "kind_help": _("Receipts and the like: consent, quiet hours and caps never hold them."),
        "kind_marketing": _("Marketing"),
        "kind_transactional": _("Transactional"),
        "topic_label": _("Consent topic"),
        "topic_help": _("The topic contacts opted in to for these messages."),
        "other_topic": _("Other…"),
        "goal": _("Goal"),
        "has_goal": _("The journey has a goal"),
        "goal_help": _("Reaching it ends the enrollment as converted."),
        "no_goal": _("no goal"),
        "within": _("within"),
        "within_help": _("after entry; empty: any time"),
        "exit_rules": _("Exit rules"),
        "exit_help": _("Each ends the enrollment (not a conversion) when it happens."),
        "exit_event": _("When an event arrives"),
        "exit_segment": _("When the contact leaves a segment"),
        "add_exit": _("Add an exit rule"),
    }
