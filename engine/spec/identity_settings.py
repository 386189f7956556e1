"""Reading `identity.yaml`: the identifier kinds a workspace declares beyond the built-in ones, and
how a merge chooses between two contacts' attributes.

```yaml
format_version: 1
kinds:
  loyalty_card: {label: Loyalty card}
merge:
  attributes: survivor      # survivor (default): the survivor's values win, the absorbed fills
                            # the keys it lacks; newest: the contact updated last wins
  prefer: {vip_level: newest, store: absorbed}   # per attribute: survivor | absorbed | newest
```

Read like policy.yaml: as safely as a scenario, every problem at once with its line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from engine.spec.problems import Problem
from engine.spec.settings_files import lint_file, lint_mapping, loaded

IDENTITY_FILE = "identity.yaml"  # beside the scenarios, like policy.yaml
BUILTIN_KINDS = ("email", "phone", "anonymous_id")
EXTERNAL_ID = "external_id"  # reserved: the external ids of absorbed contacts
KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
SURVIVOR, ABSORBED, NEWEST = "survivor", "absorbed", "newest"


@dataclass(frozen=True)
class IdentitySettings:
    """The declaration; the defaults are what a workspace without the file gets."""

    kinds: Mapping[str, str] = field(default_factory=dict)  # declared kind → label
    attributes: str = SURVIVOR  # survivor | newest
    prefer: Mapping[str, str] = field(default_factory=dict)  # attribute → survivor|absorbed|newest

    def known_kinds(self) -> tuple[str, ...]:
        """Every kind a client may give: the built-in ones, then the declared ones."""
        return (*BUILTIN_KINDS, *sorted(self.kinds))


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class KindSchema(_Strict):
    label = fields.String(load_default=None, validate=validate.Length(min=1, max=100))


class MergeSchema(_Strict):
    attributes = fields.String(load_default=SURVIVOR, validate=validate.OneOf((SURVIVOR, NEWEST)))
    prefer = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=128)),
        values=fields.String(validate=validate.OneOf((SURVIVOR, ABSORBED, NEWEST))),
        load_default=dict,
    )


def _kind_name(name: str) -> None:
    if not KIND_NAME.fullmatch(name):
        raise ValidationError(
            f"'{name[:40]}' is not a kind name: a lower-case letter, then up to 31 lower-case "
            "letters, digits or '_' (e.g. loyalty_card)"
        )
    if name in (*BUILTIN_KINDS, EXTERNAL_ID):
        raise ValidationError(f"'{name}' is a built-in kind: it needs no declaration")


class IdentitySchema(_Strict):
    format_version = fields.Integer(required=True, strict=True, validate=validate.Equal(1))
    kinds = fields.Dict(
        keys=fields.String(validate=_kind_name),
        values=fields.Nested(KindSchema, allow_none=True),
        load_default=dict,
    )
    merge = fields.Nested(MergeSchema, load_default=lambda: {"attributes": SURVIVOR, "prefer": {}})

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> IdentitySettings:
        kinds = {name: (spec or {}).get("label") or name for name, spec in data["kinds"].items()}
        merge = data["merge"]
        return IdentitySettings(kinds, merge["attributes"], dict(merge["prefer"]))


def lint_identity_text(
    text: str, filename: str | None = None
) -> tuple[IdentitySettings | None, list[Problem]]:
    """The declaration (None when there are errors) and every problem, each with its line."""
    message = "The identity file is a mapping (format_version, kinds, merge)."
    invalid = Problem("identity.invalid", message, hint="start with 'format_version: 1'")
    settings, problems, _ = lint_mapping(text, filename, IdentitySchema(), invalid)
    return settings, problems


def lint_identity_file(path: Path) -> tuple[IdentitySettings | None, list[Problem]]:
    """`lint_identity_text` on a file; the defaults when there is none."""
    return lint_file(path, "identity file", lint_identity_text, IdentitySettings())


def load_identity_file(path: Path) -> IdentitySettings:
    """The declaration in `path` (the defaults when missing); raises ScenarioInvalid, whose
    problems each name the file, line and column."""
    return loaded(lint_identity_file(path))


def workspace_identity(scenarios_dir: Path) -> IdentitySettings:
    """The workspace's `identity.yaml` beside the scenarios (defaults without one)."""
    return load_identity_file(scenarios_dir / IDENTITY_FILE)


_cached: dict[Path, tuple[float, IdentitySettings]] = {}


def current_identity(scenarios_dir: Path | None = None) -> IdentitySettings:
    """The workspace's declaration, read again when the file changes. A broken file (lint says
    why) reads as the defaults: ingestion goes on with the built-in kinds only."""
    if scenarios_dir is None:
        from engine.config import load_settings

        scenarios_dir = load_settings().scenarios_dir
    path = scenarios_dir / IDENTITY_FILE
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = -1.0
    cached = _cached.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    found, _ = lint_identity_file(path)
    settings = found or IdentitySettings()
    _cached[path] = (stamp, settings)
    return settings
