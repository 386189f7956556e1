"""Lint many scenario files at once: each file's problems plus the checks across files.

A linted folder's ``segments/`` folder is linted with it (engine.spec.segments), and so is its
``programs/`` folder (engine.spec.programs), against the folder's scenarios and segments; a folder
named ``segments`` or ``programs``, or a file inside one, is read as such, not as scenarios.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from engine.errors import NotFound, ScenarioInvalid
from engine.spec.attributes import ATTRIBUTES_FILE  # nor is the computed attributes' declaration
from engine.spec.identity_settings import IDENTITY_FILE  # nor the identifier kinds
from engine.spec.loader import LintResult, lint_document, read_scenario_text
from engine.spec.model import StartScenarioStep
from engine.spec.problems import Problem, did_you_mean
from engine.spec.programs import PROGRAMS_FOLDER, lint_program_folder, program_files
from engine.spec.segments import SEGMENTS_FOLDER, lint_segment_folder, segment_files, segment_ids

SCENARIO_SUFFIXES = (".yaml", ".yml")
_COLORS = {"error": "\x1b[31m", "warning": "\x1b[33m"}
_RESET = "\x1b[0m"


POLICY_FILE = "policy.yaml"  # the workspace policy sits beside the scenarios; it is not one
CHANNELS_FILE = "channels.yaml"  # nor is the channel configuration
NOT_SCENARIOS = (POLICY_FILE, CHANNELS_FILE, ATTRIBUTES_FILE, IDENTITY_FILE)


def _is_segments(path: Path) -> bool:
    return (path if path.is_dir() else path.parent).name == SEGMENTS_FOLDER


def _is_programs(path: Path) -> bool:
    return (path if path.is_dir() else path.parent).name == PROGRAMS_FOLDER


def program_folders(paths: Iterable[Path]) -> list[Path]:
    """The programs folders to lint: named, holding a named file, or inside a named folder."""
    found = []
    for path in paths:
        if _is_programs(path):
            found.append(path if path.is_dir() else path.parent)
        elif path.is_dir() and (path / PROGRAMS_FOLDER).is_dir():
            found.append(path / PROGRAMS_FOLDER)
    return list(dict.fromkeys(found))


def segment_folders(paths: Iterable[Path]) -> list[Path]:
    """The segments folders to lint: named, holding a named file, or inside a named folder."""
    found = []
    for path in paths:
        if _is_segments(path):
            found.append(path if path.is_dir() else path.parent)
        elif path.is_dir() and (path / SEGMENTS_FOLDER).is_dir():
            found.append(path / SEGMENTS_FOLDER)
    return list(dict.fromkeys(found))


def linted_files(paths: Iterable[Path]) -> list[Path]:
    """Every scenario and segment file a lint of `paths` reports on."""
    paths = list(paths)
    # a segment file named alone is checked against its siblings, which are not reported
    whole = segment_folders([p for p in paths if p.is_dir()])
    named = [p for p in paths if p.is_file() and _is_segments(p)]
    segments = [f for folder in whole for f in segment_files(folder)] + named
    programs = [f for folder in program_folders(paths) for f in program_files(folder)]
    programs = [f for f in programs if f in paths or f.parent in paths or f.parent.parent in paths]
    return scenario_files(paths) + list(dict.fromkeys(segments)) + list(dict.fromkeys(programs))


def scenario_files(paths: Iterable[Path]) -> list[Path]:
    """Scenario files: a directory means its *.yaml/*.yml files (not templates/, not the policy)."""
    files: list[Path] = []
    for path in paths:
        if _is_segments(path) or _is_programs(path):
            continue
        if path.is_dir():
            files += sorted(
                p
                for p in path.iterdir()
                if p.suffix in SCENARIO_SUFFIXES and p.is_file() and p.name not in NOT_SCENARIOS
            )
        elif path.name not in NOT_SCENARIOS:
            files.append(path)
    return list(dict.fromkeys(files))


def policy_files(paths: Iterable[Path]) -> list[Path]:
    """The policy files among `paths` (named, or inside a named directory)."""
    return _named(paths, POLICY_FILE)


def _named(paths: Iterable[Path], name: str) -> list[Path]:
    """The files called `name` among `paths` (named, or inside a named directory)."""
    found = [p / name if p.is_dir() else p for p in paths]
    return [p for p in found if p.name == name and p.is_file()]


def _lint_file(path: Path) -> tuple[LintResult | None, list[Problem]]:
    try:
        text = read_scenario_text(path)
    except NotFound:
        return None, [Problem("file.missing", "No such file.", file=str(path))]
    except ScenarioInvalid as exc:
        return None, exc.problems
    result = lint_document(text, str(path), path.parent / "templates")
    return result, result.problems


@dataclass(frozen=True)
class _Linted:
    """What the checks across files need of one file's lint (small, so a worker process can
    send it back): its problems, its id and the scenarios its start_scenario steps name."""

    file: Path
    problems: list[Problem]
    scenario_id: str | None = None
    id_at: tuple[int | None, int | None] = (None, None)
    starts: tuple[tuple[str, str, tuple[int | None, int | None]], ...] = ()  # step, id, where


def _located(result: LintResult, path: tuple[str, ...]) -> tuple[int | None, int | None]:
    return result.positions.locate(path) or (None, None)


def _lint_one(path: Path) -> _Linted:
    result, problems = _lint_file(path)
    if result is None:
        return _Linted(path, problems)
    found = result.data.get("id") if isinstance(result.data, Mapping) else None
    starts = tuple(
        (step.id, step.scenario, _located(result, ("steps", step.id, "scenario")))
        for step in (result.draft.steps.values() if result.draft else ())
        if isinstance(step, StartScenarioStep)
    )
    scenario_id = found if isinstance(found, str) else None
    return _Linted(path, problems, scenario_id, _located(result, ("id",)), starts)


PARALLEL_FROM = 64  # files; below, starting worker processes costs more than it saves


def _lint_all(files: list[Path]) -> list[_Linted]:
    """Each file's lint, in order; on several cores, by forked worker processes (the modules
    are loaded already), as each file's lint is independent of the others'."""
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8)
    if len(files) < PARALLEL_FROM or workers < 2 or "fork" not in mp.get_all_start_methods():
        return [_lint_one(f) for f in files]
    chunk = max(1, len(files) // (workers * 4))
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(_lint_one, files, chunksize=chunk))


def _at(problem: Problem, file: Path, where: tuple[int | None, int | None]) -> Problem:
    return replace(problem, file=str(file), line=where[0], column=where[1])


def lint_paths(paths: list[Path]) -> list[Problem]:
    """Every problem of every scenario under `paths`, plus duplicate ids and unknown scenarios."""
    problems: list[Problem] = []
    for policy in policy_files(paths):
        from engine.policy.loader import lint_policy_file

        problems += lint_policy_file(policy)[1]
    for path in paths:
        channels = path / CHANNELS_FILE if path.is_dir() else path
        if channels.name == CHANNELS_FILE and channels.is_file():
            from engine.delivery.channel_config import lint_channels_file

            problems += lint_channels_file(channels)
    for attributes in _named(paths, ATTRIBUTES_FILE):
        from engine.spec.attributes import lint_attributes_file

        problems += lint_attributes_file(attributes)[1]
    for identity in _named(paths, IDENTITY_FILE):
        from engine.spec.identity_settings import lint_identity_file

        problems += lint_identity_file(identity)[1]
    reported = {str(f) for f in linted_files(paths)}
    for folder in segment_folders(paths):
        problems += [p for p in lint_segment_folder(folder).problems if p.file in reported]
    linted = _lint_all(scenario_files(paths))
    owners: dict[str, Path] = {}
    for one in linted:
        problems += one.problems
        if one.scenario_id is None:
            continue
        if one.scenario_id in owners:
            message = f"Scenario id '{one.scenario_id}' is also used by {owners[one.scenario_id]}."
            hint = "give each scenario its own id"
            problem = Problem("scenario.duplicate_id", message, ("id",), hint=hint)
            problems.append(_at(problem, one.file, one.id_at))
        else:
            owners[one.scenario_id] = one.file
    if any(path.is_dir() for path in paths):
        problems += _unknown_scenarios(linted, list(owners))
    problems += _program_problems(paths, list(owners), reported)
    return sorted(
        problems, key=lambda p: (p.file or "", p.line is None, p.line or 0, p.column or 0)
    )


def _program_problems(paths: list[Path], scenarios: list[str], reported: set[str]) -> list[Problem]:
    """The programs' problems, their scenarios checked against the linted folder's (when a
    folder of scenarios is linted) and their panels against its segments."""
    problems: list[Problem] = []
    for folder in program_folders(paths):
        workspace = folder.parent
        known = scenarios if workspace in paths else None
        segments = segment_ids(workspace / SEGMENTS_FOLDER)
        found = lint_program_folder(folder, known, segments).problems
        problems += [p for p in found if p.file in reported]
    return problems


def _unknown_scenarios(linted: list[_Linted], known: list[str]) -> list[Problem]:
    """`start_scenario` steps naming a scenario that none of the linted files defines."""
    problems = []
    for one in linted:
        for step_id, scenario, where in one.starts:
            if scenario not in known:
                path = ("steps", step_id, "scenario")
                hint = did_you_mean(scenario, known) or f"scenarios are: {', '.join(known)}"
                message = f"No scenario with id '{scenario}' among the linted files."
                problem = Problem("graph.unknown_scenario", message, path, step=step_id, hint=hint)
                problems.append(_at(problem, one.file, where))
    return problems


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_problems(problems: list[Problem], color: bool = False, files: int | None = None) -> str:
    """Problem lines (``file:line:col: error [code] ...``) and an ``N errors, ...`` summary."""
    # K in "in K files" is `files` when the caller knows it, else the files problems name
    lines = []
    for p in problems:
        text = p.format()
        if color and p.severity in _COLORS:
            plain = f": {p.severity} [{p.code}]"
            text = text.replace(plain, f": {_COLORS[p.severity]}{p.severity}{_RESET} [{p.code}]", 1)
        lines.append(text)
    errors = sum(p.severity == "error" for p in problems)
    warnings = sum(p.severity == "warning" for p in problems)
    count = files if files is not None else len({p.file for p in problems if p.file})
    lines.append(
        f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} in {_plural(count, 'file')}"
    )
    return "\n".join(lines)
