"""The one entry point for scenarios: YAML text or file → checked, compiled Scenario.

Passes, each reporting every problem it finds: safe YAML (yamlio) → structure (schema) →
graph → steps (entry rules, webhook URLs) → templates. When the structure has errors, the later
passes run on the steps that loaded, so one run reports everything. A scenario comes back only
when no pass found an error; warnings never block.
A *bundle* is what a published version stores: the YAML text plus the templates it uses; its
hash identifies the version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from marshmallow import ValidationError

from engine.errors import ScenarioInvalid
from engine.spec.graph import check_graph, check_partial_graph, check_raw_edges
from engine.spec.model import Scenario, Step
from engine.spec.problems import Problem, has_errors
from engine.spec.sandbox import LIMITS
from engine.spec.schema import load_document, scenario_schema
from engine.spec.schema_problems import loadable_steps, schema_problems
from engine.spec.segments import (
    SEGMENTS_FOLDER,
    segment_ids,
    segment_references,
    unknown_segment_problems,
)
from engine.spec.templates import (
    TemplateLibrary,
    TemplateReadError,
    check_steps,
    check_templates,
)
from engine.spec.trigger_checks import anniversary_problems
from engine.spec.webhook_urls import WebhookRules, check_webhook_urls
from engine.spec.yamlio import Positions, parse_yaml, place, read_source

Sources = Mapping[str, Mapping[str, str]]
_place = place  # the policy and channels loaders place their problems the same way
T = TypeVar("T")


@dataclass
class LintResult:
    """Everything one lint learned about a scenario text."""

    scenario: Scenario | None  # compiled, with templates and hash; None when there is an error
    problems: list[Problem]
    data: Any = None  # the parsed document (plain data); None when the YAML did not parse
    positions: Positions = field(default_factory=Positions)
    draft: Scenario | None = None  # what the schema built, even when later passes found errors
    template_sources: dict[str, dict[str, str]] = field(default_factory=dict)


def _guarded(problems: list[Problem], stage: str, run: Callable[[], T]) -> T | None:
    # one malformed document must never crash the designer or a bulk lint: a bug in a check
    # becomes a reported problem instead of a traceback
    try:
        return run()
    except (ScenarioInvalid, ValidationError):
        raise
    except Exception as exc:
        message = f"Internal error while checking the {stage}: {type(exc).__name__}: {exc}"
        problems.append(Problem("scenario.internal", message, hint="please report this bug"))
        return None


def _filename_problem(data: Any, filename: str | None) -> list[Problem]:
    scenario_id = data.get("id") if isinstance(data, Mapping) else None
    if not filename or not isinstance(scenario_id, str) or Path(filename).stem == scenario_id:
        return []
    message = f"The file is named '{Path(filename).name}' but the scenario id is '{scenario_id}'."
    hint = f"rename the file to {scenario_id}{Path(filename).suffix or '.yaml'}"
    return [Problem("scenario.filename", message, ("id",), severity="warning", hint=hint)]


def _step_problems(
    problems: list[Problem], data: Any, steps: Mapping[str, Step], templates_root: Path | None
) -> list[Problem]:
    """Checks that read the loaded steps one by one: entry rules, webhook URLs."""
    found = anniversary_problems(data)
    if templates_root is not None:
        # a workspace folder: its channels.yaml says what the webhook channel lets through;
        # a stored bundle is not checked again (the guard stands behind it at send time)
        rules = WebhookRules.beside(templates_root.parent)
        found += (
            _guarded(problems, "webhooks", lambda: check_webhook_urls(steps.values(), rules)) or []
        )
    return found


def _partial_problems(
    problems: list[Problem], data: Any, root: Path | None, sources: Sources | None
) -> list[Problem]:
    # the steps that load on their own get their graph, channel and template checks now, so one
    # broken step does not hide the problems of the others until it is fixed
    steps = loadable_steps(data)
    found = _guarded(problems, "graph", lambda: check_partial_graph(data, steps)) or []
    block = data.get("data") if isinstance(data, Mapping) else None
    block = block if isinstance(block, Mapping) else {}
    library = TemplateLibrary(root, sources)
    checked = _guarded(problems, "templates", lambda: check_steps(steps.values(), block, library))
    return (
        found + (checked.problems if checked else []) + _step_problems(problems, data, steps, root)
    )


# Errors a stored version may carry from before lint checked them: the send-time guard refuses
# what they are about (the sandbox will not render a private attribute, nor go over the render
# budget), so the version still loads and its sends fail one by one, journaled, instead of the
# whole version failing to load.
GUARDED_AT_SEND = frozenset({"template.private_attribute", *LIMITS})


def lint_document(
    text: str,
    filename: str | None = None,
    templates_root: Path | None = None,
    template_sources: Sources | None = None,
    tolerated: frozenset[str] = frozenset(),
    segments: Collection[str] | None = None,
) -> LintResult:
    """Run every pass over a scenario text; the full result, for linters and the designer.

    With `templates_root`, the scenarios' folder is its parent: its channels.yaml sets what
    the webhook URL check lets through and its segments/ folder which segment ids exist (unless
    `segments` names them). Errors whose code is in `tolerated` come back as warnings.
    """
    try:
        data, positions = parse_yaml(text, filename)
    except ScenarioInvalid as exc:
        return LintResult(None, place(exc.problems, Positions(), filename))
    problems = _filename_problem(data, filename)
    # a stored bundle has no folder to look in: its references were checked when published
    if segments is None and templates_root is not None:
        segments = segment_ids(templates_root.parent / SEGMENTS_FOLDER)
    if segments is not None:
        found = _guarded(problems, "segments", lambda: segment_references(data, scenario_schema()))
        problems += unknown_segment_problems(found or [], segments)
    try:
        kwargs = _guarded(problems, "structure", lambda: load_document(data))
    except ValidationError as exc:
        problems += schema_problems(exc, data) + check_raw_edges(data)
        problems += _partial_problems(problems, data, templates_root, template_sources)
        kwargs = None
    draft = None
    if kwargs is not None:
        args = kwargs
        draft = _guarded(problems, "structure", lambda: Scenario(**args))
    if draft is None:
        return LintResult(None, place(problems, positions, filename), data, positions)
    problems += _guarded(problems, "graph", lambda: check_graph(draft)) or []
    problems += _step_problems(problems, data, draft.steps, templates_root)
    library = TemplateLibrary(templates_root, template_sources)
    checked = _guarded(problems, "templates", lambda: check_templates(draft, library))
    if checked is not None:
        problems += checked.problems
    problems = [replace(p, severity="warning") if p.code in tolerated else p for p in problems]
    result = LintResult(None, place(problems, positions, filename), data, positions, draft)
    if checked is None or has_errors(result.problems):
        return result
    result.template_sources = checked.sources
    digest = content_hash({"yaml": text, "templates": checked.sources})
    result.scenario = replace(draft, templates=checked.templates, content_hash=digest)
    return result


def lint_text(
    text: str,
    filename: str | None = None,
    templates_root: Path | None = None,
    template_sources: Sources | None = None,
) -> tuple[Scenario | None, list[Problem]]:
    """Check a scenario text: the compiled Scenario (None if any error) and every problem."""
    result = lint_document(text, filename, templates_root, template_sources)
    return result.scenario, result.problems


def load_scenario_text(
    text: str,
    filename: str | None = None,
    templates_root: Path | None = None,
    template_sources: Sources | None = None,
) -> Scenario:
    """The compiled Scenario, or ScenarioInvalid listing every error (warnings do not raise)."""
    scenario, problems = lint_text(text, filename, templates_root, template_sources)
    if scenario is None:
        raise ScenarioInvalid([p for p in problems if p.severity == "error"])
    return scenario


def read_scenario_text(path: Path) -> str:
    """A scenario file's text; NotFound when missing, ScenarioInvalid when unreadable."""
    return read_source(path, "scenario file")


def load_scenario_file(path: Path | str) -> Scenario:
    """Load `path`, with its templates from the ``templates`` folder next to it."""
    path = Path(path)
    return load_scenario_text(read_scenario_text(path), str(path), path.parent / "templates")


def used_template_names(data: Any) -> list[str]:
    """Template folder names the steps of a parsed document refer to, in order."""
    steps = data.get("steps") if isinstance(data, Mapping) else None
    if not isinstance(steps, Mapping):
        return []
    names = [s.get("template") for s in steps.values() if isinstance(s, Mapping)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def scenario_bundle(path: Path | str) -> dict[str, Any]:
    """``{"yaml": text, "templates": {name: {part: source}}}`` with only the templates used."""
    path = Path(path)
    text = read_scenario_text(path)
    data, _ = parse_yaml(text, str(path))
    library = TemplateLibrary(path.parent / "templates")
    templates: dict[str, dict[str, str]] = {}
    for name in used_template_names(data):
        try:
            parts = library.read(name)
        except (TemplateReadError, OSError) as exc:
            code = exc.code if isinstance(exc, TemplateReadError) else "template.unreadable"
            problem = Problem(code, f"Template '{name}': {exc}", file=str(path))
            raise ScenarioInvalid([problem]) from None
        if parts is not None:
            templates[name] = parts
    return {"yaml": text, "templates": templates}


def load_bundle(
    bundle: Mapping[str, Any], filename: str | None = None, *, stored: bool = False
) -> Scenario:
    """Load a bundle; templates come from it only (`filename` just labels problems).

    `stored`: a version already published, which still loads with the errors GUARDED_AT_SEND.
    """
    text, templates = bundle.get("yaml"), bundle.get("templates", {})
    if not isinstance(text, str) or not _is_sources(templates):
        message = "A bundle is {yaml: text, templates: {name: {part: text}}}."
        raise ScenarioInvalid([Problem("bundle.invalid", message, file=filename)])
    tolerated = GUARDED_AT_SEND if stored else frozenset()
    result = lint_document(text, filename, template_sources=templates, tolerated=tolerated)
    if result.scenario is None:
        raise ScenarioInvalid([p for p in result.problems if p.severity == "error"])
    return result.scenario


def _is_sources(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(parts, Mapping) and all(isinstance(s, str) for s in parts.values())
        for parts in value.values()
    )


def content_hash(bundle: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the bundle's canonical JSON: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(bundle, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
