"""The workspace's settings files beside the scenarios (policy.yaml, attributes.yaml): read as
safely as a scenario, checked by a marshmallow schema, every problem at once with its line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from marshmallow import Schema, ValidationError

from engine.errors import NotFound, ScenarioInvalid
from engine.spec.problems import Problem
from engine.spec.schema_problems import schema_problems
from engine.spec.yamlio import Positions, at_file_start, parse_yaml, read_source

T = TypeVar("T")
Linted = tuple[T | None, list[Problem]]


def lint_mapping(
    text: str, filename: str | None, schema: Schema, not_mapping: Problem
) -> tuple[Any, list[Problem], Positions]:
    """The schema's result (None when there are errors), the problems placed at their lines, and
    the positions, for the checks the caller adds after the schema's."""
    from engine.spec.loader import _place

    try:
        data, positions = parse_yaml(text, filename)
    except ScenarioInvalid as exc:
        return None, at_file_start(_place(exc.problems, Positions(), filename)), Positions()
    data = {} if data is None else data  # an empty file misses format_version, said on line 1
    if not isinstance(data, Mapping):
        return None, at_file_start(_place([not_mapping], positions, filename)), positions
    try:
        return schema.load(data), [], positions
    except ValidationError as exc:
        problems = schema_problems(exc, data, schema)
        return None, at_file_start(_place(problems, positions, filename)), positions


def lint_file(
    path: Path, what: str, lint_text: Callable[[str, str], Linted[T]], default: T
) -> Linted[T]:
    """`lint_text` on a file read as safely as a scenario (size, UTF-8); `default` without one."""
    try:
        text = read_source(path, what)
    except NotFound:
        return default, []
    except ScenarioInvalid as exc:
        return None, exc.problems
    return lint_text(text, str(path))


def loaded(linted: Linted[T]) -> T:
    """The linted value; raises ScenarioInvalid, whose problems each name file, line, column."""
    value, problems = linted
    if value is None:
        raise ScenarioInvalid([p for p in problems if p.severity == "error"])
    return value


Signature = tuple[tuple[str, int, int], ...]


def folder_signature(folder: Path) -> Signature:
    """The folder's file names, sizes and modification times: one listing tells a watcher
    whether anything changed since it last read the files (empty when the folder is missing)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return ()
    found = []
    for entry in entries:
        try:
            stat = entry.stat()
        except OSError:
            continue
        found.append((entry.name, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))
