"""Jinja2 in a sandbox: message templates and condition expressions, compiled once at load time.

The sandbox is immutable (no mutation of lists or dicts from templates), unknown variable names
are lint errors, the filter list is a fixed allow-list, every render runs on a budget of size,
loops, calls and time (engine.spec.sandbox) and the rendered output is capped.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateError, meta, nodes

from engine.spec.sandbox import (
    LIMITS,
    LimitExceeded,
    Sandbox,
    budget,
    private_message,
    private_name,
)

TEMPLATE_VARIABLES = ("contact", "event", "scenario", "data", "links", "now")
ALLOWED_FILTERS = (
    "abs",
    "capitalize",
    "default",
    "d",
    "first",
    "float",
    "format",
    "int",
    "join",
    "last",
    "length",
    "count",
    "lower",
    "upper",
    "title",
    "trim",
    "truncate",
    "round",
    "replace",
    "striptags",
    "escape",
    "e",
    "urlencode",
    "wordcount",
    "list",
    "sort",
    "unique",
    "min",
    "max",
    "sum",
)
MAX_OUTPUT = 100_000  # characters per rendered part


class RenderError(Exception):
    """A template or expression failed when rendering for one contact.

    `code` says why: one of sandbox.LIMITS when over the render budget, else "render.error";
    `part` and `line` locate it in the template when known."""

    def __init__(
        self,
        message: str,
        code: str = "render.error",
        part: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.part = part
        self.line = line


def private_accesses(ast: nodes.Node) -> list[tuple[str, int]]:
    """(name, line) of each ``x._name`` and ``x["_name"]`` a parsed template or expression reads."""
    found = [(n.attr, n.lineno) for n in ast.find_all(nodes.Getattr) if private_name(n.attr)]
    found += [
        (n.arg.value, n.lineno)
        for n in ast.find_all(nodes.Getitem)
        if isinstance(n.arg, nodes.Const) and private_name(n.arg.value)
    ]
    return sorted(found, key=lambda item: item[1])


# Unknown variable names are lint errors (checked on the template's AST); at send time a contact
# who lacks an attribute gets an empty string rather than no message: `default` sets a fallback.
TEXT_ENV = Sandbox(False, ChainableUndefined, ALLOWED_FILTERS)
HTML_ENV = Sandbox(True, ChainableUndefined, ALLOWED_FILTERS)
EXPR_ENV = Sandbox(False, ChainableUndefined, ALLOWED_FILTERS)


@dataclass(frozen=True)
class TemplateIssue:
    """A problem found while compiling a template part."""

    part: str
    message: str
    line: int | None = None
    code: str = "template.syntax"
    hint: str | None = None


def _data_keys_used(ast: nodes.Template) -> set[str]:
    used = set()
    for node in ast.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "data":
            used.add(node.attr)
    return used


# A workspace's scenarios share their templates (one templates/ folder, the same footer in many
# messages): each distinct source is parsed, checked and compiled once per process. Bounded, as
# the designer's process lives long.
CACHED_SOURCES = 4096
_COMPILED: dict[tuple[bool, str], Template] = {}


def _compiled(html: bool, source: str, ast: nodes.Template | None = None) -> Template:
    """The template of `source` (parsed as `ast` when given), compiled once; raises
    TemplateError. Shared between scenarios: never mutated after this."""
    key = (html, source)
    template = _COMPILED.get(key)
    if template is None:
        template = (HTML_ENV if html else TEXT_ENV).from_string(ast or source)
        # Our environments have no globals; a plain dict spares every render from walking the
        # ChainMap Jinja keeps there.
        template.globals = {}
        if len(_COMPILED) >= CACHED_SOURCES:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest
        _COMPILED[key] = template
    return template


# Templates made only of these nodes bind no name: the names they read are the Name nodes, so
# the code generation jinja2.meta runs to find them is spared (most message templates).
_PLAIN_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.Name,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Const,
    nodes.Filter,
    nodes.Test,
    nodes.If,
    nodes.CondExpr,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Concat,
)
_SPECIAL_NAMES = frozenset(("self", "loop", "caller", "varargs", "kwargs", "super"))


# Filters whose output is about as short as their input: a plain template using only these,
# with no loop and no call, renders lint's sample data to a few times its own length at most.
_SHORT_FILTERS = frozenset(
    "abs capitalize default d first last length count lower upper title trim truncate round "
    "striptags escape e wordcount int float".split()
)
_TRIAL_FREE_LENGTH = 2_000  # x6 (escaping) stays far below MAX_OUTPUT
# Sources whose trial render cannot go over the budget: lint neither renders nor compiles them
# (compile_template compiles them when first rendered). Bounded like _COMPILED.
_TRIAL_FREE: dict[tuple[bool, str], None] = {}


def _undeclared(env: Sandbox, ast: nodes.Template) -> tuple[set[str], bool]:
    """The top-level names a template reads, and whether it is plain (no binding, loop or call:
    its code generation cannot fail); raises TemplateError on an unknown filter or test."""
    plain = all(isinstance(node, _PLAIN_NODES) for node in ast.find_all(nodes.Node))
    if plain:
        names = {n.name for n in ast.find_all(nodes.Name)}
        filters = {n.name for n in ast.find_all(nodes.Filter)}
        tests = {n.name for n in ast.find_all(nodes.Test)}
        known = filters <= set(env.filters) and tests <= set(env.tests)
        if known and not names & _SPECIAL_NAMES:
            return names, filters <= _SHORT_FILTERS
    return meta.find_undeclared_variables(ast), False


def _trial_free(html: bool, source: str) -> None:
    if len(_TRIAL_FREE) >= CACHED_SOURCES:
        del _TRIAL_FREE[next(iter(_TRIAL_FREE))]
    _TRIAL_FREE[(html, source)] = None


@lru_cache(maxsize=CACHED_SOURCES)
def _checked(source: str, part: str, html: bool) -> tuple[TemplateIssue, ...]:
    return tuple(_check_source(source, part, {}, html))


def check_source(
    source: str, part: str, data: Mapping[str, Any], html: bool = False
) -> list[TemplateIssue]:
    """Compile-check a template: syntax, unknown top-level variables, unknown `data.x` keys."""
    if not data:  # most messages: nothing but the source decides the issues
        return list(_checked(source, part, html))
    return _check_source(source, part, data, html)


def _check_source(
    source: str, part: str, data: Mapping[str, Any], html: bool
) -> list[TemplateIssue]:
    from engine.spec.problems import did_you_mean

    env = HTML_ENV if html else TEXT_ENV
    try:
        ast = env.parse(source)
        # Unknown filters and tests surface here, not in parse().
        undeclared, short = _undeclared(env, ast)
    except TemplateError as exc:
        return [
            TemplateIssue(part, f"template does not compile: {exc}", getattr(exc, "lineno", None))
        ]
    issues = []
    for name in sorted(undeclared):
        if name not in TEMPLATE_VARIABLES:
            issues.append(
                TemplateIssue(
                    part,
                    f"unknown template variable '{name}'",
                    code="template.unknown_variable",
                    hint=did_you_mean(name, TEMPLATE_VARIABLES)
                    or f"use one of {', '.join(TEMPLATE_VARIABLES)}",
                )
            )
    for name, line in private_accesses(ast):
        issues.append(
            TemplateIssue(
                part,
                private_message(name),
                line,
                code="template.private_attribute",
                hint="use a plain attribute name, e.g. contact.first_name",
            )
        )
    for key in sorted(_data_keys_used(ast) - set(data)):
        issues.append(
            TemplateIssue(
                part,
                f"'data.{key}' is not declared in the scenario's data block",
                code="template.unknown_variable",
                hint=did_you_mean(key, data) or "add it under 'data:' in the scenario",
            )
        )
    # Last: compiling may change the tree, and a part that reads private names is not rendered.
    if not issues or all(i.code == "template.unknown_variable" for i in issues):
        if short and not data and len(source) <= _TRIAL_FREE_LENGTH:
            _trial_free(html, source)  # nothing in it can loop, call or grow
        else:
            issues += _trial_issues(_compiled(html, source, ast), part, data)
    return issues


def _template_line(template: Template, tb: Any) -> int | None:
    """The template line a traceback was in, innermost first (a macro's line, not its call's)."""
    lines = [n for f, n in traceback.walk_tb(tb) if f.f_code.co_filename == "<template>"]
    return template.get_corresponding_lineno(lines[-1]) if lines else None


def _render_part(template: Template, context: Mapping[str, Any]) -> str:
    # A shared context skips copying the (empty) globals for every render; the output is
    # counted as it streams, so a part never grows past the cap in memory.
    chunks, size = [], 0
    for chunk in template.root_render_func(template.new_context(dict(context), shared=True)):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise LimitExceeded("render.size", f"renders over {MAX_OUTPUT:,} characters")
        chunks.append(chunk)
    return "".join(chunks)


@dataclass(frozen=True)
class CompiledTemplate:
    """A message template: named parts (subject, text, html, sms, title, body), each compiled."""

    name: str
    parts: Mapping[str, Any]  # part name → jinja2.Template

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        """Render every part on one budget; raise RenderError (never anything else) on failure."""
        out = {}
        with budget():
            for part, template in self.parts.items():
                try:
                    out[part] = _render_part(template, context)
                except Exception as exc:  # the template is the user's code: any failure is theirs
                    line = _template_line(template, exc.__traceback__)
                    where = f"template '{self.name}' part '{part}'" + (
                        f" line {line}" if line else ""
                    )
                    code = exc.code if isinstance(exc, LimitExceeded) else "render.error"
                    if isinstance(exc, RecursionError):
                        code = "render.recursion"
                    raise RenderError(f"{where}: {exc}", code, part, line) from exc
        return out


class _Parts(Mapping[str, Template]):
    """Part name → compiled template; a source lint found trial-free is compiled when first
    rendered (once per process), the others at once."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = dict(sources)
        for part, source in self.sources.items():
            if (part == "html", source) not in _TRIAL_FREE:
                _compiled(part == "html", source)  # raises TemplateError now

    def __getitem__(self, part: str) -> Template:
        return _compiled(part == "html", self.sources[part])

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def compile_template(name: str, parts: Mapping[str, str]) -> CompiledTemplate:
    """Compile template parts; a part named `html` is autoescaped. Raises TemplateError."""
    return CompiledTemplate(name, _Parts(parts))


def compile_expression(source: str) -> Callable[..., Any]:
    """Compile a condition expression; raises TemplateError on bad syntax.

    Evaluating it is False when it fails for this contact (a missing attribute compared to a
    number), and a RenderError when it goes over the render budget, which no contact passes."""
    compiled = EXPR_ENV.compile_expression(source)

    def evaluate(**variables: Any) -> Any:
        try:
            with budget():
                return compiled(**variables)
        except LimitExceeded as exc:
            raise RenderError(f"expression '{source}': {exc}", exc.code) from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError):
            return False

    return evaluate


SAMPLE_NOW = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def sample_context(data: Mapping[str, Any]) -> dict[str, Any]:
    """What lint renders with: no contact attributes, no event, the scenario's data."""
    empty: dict[str, Any] = {}
    return {
        "contact": empty,
        "event": empty,
        "scenario": {"id": "", "name": ""},
        "data": dict(data),
        "now": SAMPLE_NOW,
        "links": empty,
    }


def budget_hint(code: str) -> str:
    return f"the render budget refuses {LIMITS[code]}"


def _trial_issues(template: Template, part: str, data: Mapping[str, Any]) -> list[TemplateIssue]:
    """A render with sample data: only a budget overrun is a lint error (the data is made up)."""
    try:
        CompiledTemplate("", {part: template}).render(sample_context(data))
    except RenderError as exc:
        if exc.code in LIMITS:
            message = f"over the render budget: {exc.__cause__}"
            return [TemplateIssue(part, message, exc.line, exc.code, budget_hint(exc.code))]
    return []


def expression_issues(source: str) -> list[str]:
    """Unknown top-level names in an expression (e.g. a typo of 'contact'), and budget overruns."""
    from engine.spec.problems import did_you_mean

    ast = EXPR_ENV.parse("{{ " + source + " }}")
    out = [f"expression {private_message(name)}." for name, _ in private_accesses(ast)]
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in TEMPLATE_VARIABLES and name not in ("true", "false", "none"):
            hint = did_you_mean(name, TEMPLATE_VARIABLES)
            out.append(f"unknown name '{name}'" + (f"; {hint}" if hint else ""))
    if not out:
        try:
            compile_expression(source)(**sample_context({}))
        except RenderError as exc:
            message = str(exc).removeprefix(f"expression '{source}': ")
            out.append(f"expression is over its budget: {message}; {budget_hint(exc.code)}.")
    return out
