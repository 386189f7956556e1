"""Errors raised by the engine.

ParcoursError
 ├── ScenarioInvalid      a scenario (YAML, templates, graph) has problems; carries all of them
 ├── ConfigError          a setting has a bad value
 ├── NotFound             a scenario, version, contact or enrollment does not exist
 └── IngestError          a contact or event could not be accepted (row-level details inside)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.spec.problems import Problem


class ParcoursError(Exception):
    """Root of every error the engine raises on purpose."""


class ScenarioInvalid(ParcoursError):
    """The scenario has problems; `problems` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0].format() if self.problems else "invalid scenario"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more)


class ConfigError(ParcoursError):
    """A setting has a value that cannot be used."""


class NotFound(ParcoursError):
    """The thing asked for does not exist."""


class IngestError(ParcoursError):
    """A contact or event was refused; the message says which field and why."""
