"""Programs as code: one YAML file per program in ``programs/`` beside the scenarios, named after
its id. A program groups the scenarios that act on one panel towards one objective, and says
which KPIs judge it::

    format_version: 1
    id: basket-growth
    name: Basket growth
    objective: basket                  # the scenario objectives
    panel: {segment: repeat-buyers}    # a condition: a segment, or any inline condition
    scenarios: [cart-abandonment, post-purchase-cross-sell]
    kpis:
      - {kpi: conversion_rate, target: 0.05, period: month}
    budget: {amount: 5000, period: month}          # optional
    caps:                                          # optional, the policy's cap shape
      - {id: program-week, channels: [email], max: 2, window: 7d}

Read like segments: safe YAML, structure (marshmallow), every problem at file:line:col. Across a
folder: duplicate ids, unknown scenarios and segments, a scenario in two programs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, fields, post_load, validate

from engine.errors import NotFound, ScenarioInvalid
from engine.policy.loader import CapSchema
from engine.policy.model import CapRule
from engine.spec.conditions import Condition, segment_names
from engine.spec.fields import ConditionField, Identifier, OneOf
from engine.spec.model import OBJECTIVES
from engine.spec.problems import Problem, did_you_mean, has_errors
from engine.spec.schema import FORMAT_VERSION
from engine.spec.segments import segment_references, unknown_segment_problems
from engine.spec.settings_files import lint_mapping
from engine.spec.yamlio import Positions, parse_yaml, place, read_source

PROGRAMS_FOLDER = "programs"
SUFFIXES = (".yaml", ".yml")
KPIS = (
    "entries", "sends", "delivered", "opens", "clicks", "bounces", "unsubscribes", "complaints",
    "conversions", "conversion_rate", "revenue", "cost", "cost_per_conversion", "return_on_spend",
)  # fmt: skip
PERIODS = ("day", "week", "month", "quarter")


@dataclass(frozen=True)
class KpiTarget:
    """A KPI the program is judged by: its target over each `period`."""

    kpi: str
    target: float
    period: str = "month"


@dataclass(frozen=True)
class Budget:
    """The most a program may spend on marketing sends per period."""

    amount: float
    period: str = "month"


@dataclass(frozen=True)
class Program:
    """A validated program definition. Immutable; its figures live in the KPI rollups."""

    id: str
    name: str
    objective: str
    scenarios: tuple[str, ...]
    format_version: int = FORMAT_VERSION
    description: str = ""
    panel: Condition | None = None
    kpis: tuple[KpiTarget, ...] = ()
    budget: Budget | None = None
    caps: tuple[CapRule, ...] = ()
    references: frozenset[str] = frozenset()  # segments the panel reads


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _period() -> Any:
    return fields.String(load_default="month", validate=OneOf(PERIODS))


class KpiSchema(_Strict):
    kpi = fields.String(required=True, validate=OneOf(KPIS))
    target = fields.Float(required=True, allow_nan=False)
    period = _period()

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> KpiTarget:
        return KpiTarget(**data)


class BudgetSchema(_Strict):
    amount = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0))
    period = _period()

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Budget:
        return Budget(**data)


class ProgramSchema(_Strict):
    format_version = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Equal(
            FORMAT_VERSION, error=f"This Parcours reads format_version {FORMAT_VERSION}."
        ),
    )
    id = Identifier(required=True, metadata={"help": "The file name without .yaml."})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(load_default="")
    objective = fields.String(required=True, validate=OneOf(OBJECTIVES))
    panel = ConditionField(load_default=None, metadata={"help": "Who the program is for."})
    scenarios = fields.List(Identifier(), required=True, validate=validate.Length(min=1))
    kpis = fields.List(fields.Nested(KpiSchema), load_default=list)
    budget = fields.Nested(BudgetSchema, load_default=None)
    caps = fields.List(fields.Nested(CapSchema), load_default=list)


@dataclass
class ProgramLint:
    """Everything one lint learned about a program text."""

    program: Program | None  # None when there is an error
    problems: list[Problem]
    data: Any = None
    positions: Positions = field(default_factory=Positions)


def lint_program_text(text: str, filename: str | None = None) -> ProgramLint:
    """Check one program text on its own (references are checked across the folder)."""
    message = "A program file is a mapping (format_version, id, name, objective, scenarios...)."
    invalid = Problem("program.invalid", message, hint="start with 'format_version: 1'")
    loaded, problems, positions = lint_mapping(text, filename, ProgramSchema(), invalid)
    try:
        data, _ = parse_yaml(text, filename)  # again, for the checks beyond the schema
    except ScenarioInvalid:
        data = None
    if isinstance(data, Mapping):
        problems += place(_own_problems(data, filename), positions, filename)
    if loaded is None or has_errors(problems):
        return ProgramLint(None, problems, data, positions)
    panel = loaded["panel"]
    program = Program(
        id=loaded["id"],
        name=loaded["name"],
        objective=loaded["objective"],
        scenarios=tuple(dict.fromkeys(loaded["scenarios"])),
        format_version=loaded["format_version"],
        description=loaded["description"],
        panel=panel,
        kpis=tuple(loaded["kpis"]),
        budget=loaded["budget"],
        caps=tuple(loaded["caps"]),
        references=frozenset(segment_names(panel)) if panel else frozenset(),
    )
    return ProgramLint(program, problems, data, positions)


def _own_problems(data: Mapping[str, Any], filename: str | None) -> list[Problem]:
    problems = []
    program_id = data.get("id")
    if filename and isinstance(program_id, str) and Path(filename).stem != program_id:
        message = f"The file is named '{Path(filename).name}' but the program id is '{program_id}'."
        hint = f"rename the file to {program_id}{Path(filename).suffix or '.yaml'}"
        problems.append(Problem("program.filename", message, ("id",), hint=hint))
    scenarios = data.get("scenarios")
    if isinstance(scenarios, list):
        seen: set[str] = set()
        for i, scenario in enumerate(scenarios):
            if not isinstance(scenario, str):
                continue
            if scenario in seen:
                message = f"Scenario '{scenario}' is listed twice."
                problems.append(Problem("program.duplicate_scenario", message, ("scenarios", i)))
            seen.add(scenario)
    return problems


# ------------------------------------------------------------------ a folder


@dataclass
class ProgramFolder:
    """The programs of a folder that loaded, and every problem of its files."""

    programs: dict[str, Program]
    problems: list[Problem]
    files: list[Path]

    def program_of(self, scenario_id: str) -> Program | None:
        """The program a scenario belongs to, if any (at most one)."""
        return next((p for p in self.programs.values() if scenario_id in p.scenarios), None)


def program_files(folder: Path) -> list[Path]:
    """The program files of a folder, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def _lint_file(path: Path) -> ProgramLint:
    try:
        text = read_source(path, "program file")
    except NotFound:
        return ProgramLint(None, [Problem("file.missing", "No such file.", file=str(path))])
    except ScenarioInvalid as exc:
        return ProgramLint(None, exc.problems)
    return lint_program_text(text, str(path))


def lint_program_folder(
    folder: Path,
    scenarios: Collection[str] | None = None,
    segments: Collection[str] | None = None,
) -> ProgramFolder:
    """Lint every program file of `folder`, then duplicate ids, scenarios in two programs, and,
    when given, references to scenarios and segments that are not among the known ones."""
    files = program_files(folder)
    results = [(file, _lint_file(file)) for file in files]
    problems = [p for _, result in results for p in result.problems]
    owners: dict[str, Path] = {}
    claimed: dict[str, str] = {}
    for file, result in results:
        data = result.data if isinstance(result.data, Mapping) else {}
        found: list[Problem] = []
        program_id = data.get("id")
        if isinstance(program_id, str):
            if program_id in owners:
                message = f"Program id '{program_id}' is also used by {owners[program_id]}."
                found.append(Problem("program.duplicate_id", message, ("id",)))
            else:
                owners[program_id] = file
        found += _scenario_problems(data, str(program_id), claimed, scenarios)
        if segments is not None:
            references = segment_references(data, ProgramSchema())
            found += unknown_segment_problems(references, segments)
        problems += place(found, result.positions, str(file))
    programs = {r.program.id: r.program for _, r in results if r.program is not None}
    problems.sort(key=lambda p: (p.file or "", p.line is None, p.line or 0, p.column or 0))
    return ProgramFolder(programs, problems, files)


def _scenario_problems(
    data: Mapping[str, Any],
    program_id: str,
    claimed: dict[str, str],
    known: Collection[str] | None,
) -> list[Problem]:
    listed = data.get("scenarios")
    if not isinstance(listed, list):
        return []
    problems = []
    for i, scenario in enumerate(listed):
        if not isinstance(scenario, str):
            continue
        if known is not None and scenario not in known:
            hint = did_you_mean(scenario, known) or f"scenarios are: {', '.join(sorted(known))}"
            message = f"No scenario with id '{scenario}' among the linted files."
            at = ("scenarios", i)
            problems.append(Problem("program.unknown_scenario", message, at, hint=hint))
        owner = claimed.setdefault(scenario, program_id)
        if owner != program_id:
            message = f"Scenario '{scenario}' already belongs to program '{owner}'."
            hint = "a scenario belongs to at most one program"
            taken = Problem("program.scenario_taken", message, ("scenarios", i), hint=hint)
            problems.append(taken)
    return problems


def load_programs(folder: Path | str) -> dict[str, Program]:
    """Every program of a folder by id, or ScenarioInvalid listing every error of the folder."""
    result = lint_program_folder(Path(folder))
    errors = [p for p in result.problems if p.severity == "error"]
    if errors:
        raise ScenarioInvalid(errors)
    return result.programs


def workspace_programs(scenarios_dir: Path | str) -> ProgramFolder:
    """The programs beside a workspace's scenarios (an empty folder when there is none)."""
    return lint_program_folder(Path(scenarios_dir) / PROGRAMS_FOLDER)
