"""Channel configuration: a plain mapping whose secrets are `${ENV_NAME}` references.

The committed configuration file names environment variables instead of holding passwords; the
values are substituted when a channel is built, and never appear in an error message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from channels.errors import ChannelConfigError

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def resolve_secrets(mapping: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """A copy of `mapping` with every `${NAME}` inside a string replaced by `environ[NAME]`.

    Nested mappings and lists are walked. `$${` stands for a literal `${`. Every unset variable
    and malformed reference is reported at once, in one ChannelConfigError whose items ("; ")
    each start with the quoted key: 'password', 'template.to', 'allow[0]'.
    """
    problems: list[str] = []
    resolved = {key: _resolve(value, str(key), environ, problems) for key, value in mapping.items()}
    if problems:
        raise ChannelConfigError("; ".join(problems))
    return resolved


def _resolve(value: Any, path: str, environ: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(value, str):
        return _substitute(value, path, environ, problems)
    if isinstance(value, Mapping):
        return {k: _resolve(v, f"{path}.{k}", environ, problems) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(value)]
    return value


def _substitute(text: str, path: str, environ: Mapping[str, str], problems: list[str]) -> str:
    pieces = text.split("$${")
    return "${".join(_substitute_piece(piece, path, environ, problems) for piece in pieces)


def _substitute_piece(text: str, path: str, environ: Mapping[str, str], problems: list[str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if not _NAME.fullmatch(name):
            # The text between the braces may be a pasted secret: do not echo it.
            problems.append(
                f"'{path}': malformed reference (write ${{ENV_NAME}}: "
                "letters, digits and underscores)"
            )
            return ""
        if name not in environ:
            problems.append(
                f"'{path}' refers to ${{{name}}}, but the environment variable {name} is not set"
            )
            return ""
        return environ[name]

    resolved = _REFERENCE.sub(lookup, text)
    if "${" in _REFERENCE.sub("", text):
        problems.append(f"'{path}': unterminated ${{ reference")
    return resolved


def coerce_number(key: str, value: Any, kind: type[int] | type[float]) -> int | float:
    """A numeric setting given as a number or as text (a `${ENV}` value); ValueError naming
    the key otherwise (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"'{key}' must be a number")
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"'{key}' must be a number") from None
