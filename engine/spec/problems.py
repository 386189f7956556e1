"""A Problem is one thing wrong with a scenario, located precisely enough to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One validation finding.

    `path` is the field path inside the document (``("steps", "welcome", "wait")``);
    `line`/`column` are 1-based positions in the source file when known.
    `severity` is ``error`` (blocks publishing) or ``warning``.
    """

    code: str
    message: str
    path: tuple[str | int, ...] = ()
    file: str | None = None
    line: int | None = None
    column: int | None = None
    step: str | None = None
    hint: str | None = None
    severity: str = "error"
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def field(self) -> str:
        """Dotted field path, e.g. ``steps.welcome.duration``."""
        return ".".join(str(p) for p in self.path)

    def format(self) -> str:
        """Render as ``file:line:col: severity [code] step 'x' field: message (hint)``."""
        where = self.file or "<scenario>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [f"{where}: {self.severity} [{self.code}]"]
        if self.step:
            parts.append(f"step '{self.step}'")
        if self.path:
            parts.append(f"field {self.field}:")
        text = " ".join(parts) + " " + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, used by `parcours lint --json` and the designer."""
        return {
            "code": self.code,
            "message": self.message,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "step": self.step,
            "field": self.field,
            "hint": self.hint,
        }


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """Return a "did you mean 'x'?" hint for the closest choice, or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def has_errors(problems: Iterable[Problem]) -> bool:
    """True when at least one problem is an error (warnings do not block)."""
    return any(p.severity == "error" for p in problems)
