"""Jinja2 in a sandbox: message templates and condition expressions, compiled once at load time.

The sandbox is immutable (no mutation of lists or dicts from templates), unknown variable names
are lint errors, the filter list is a fixed allow-list, multiplication and power are size-checked
and the rendered output is capped.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
MAX_OPERAND = 10_000  # size of the result of * and ** on strings, lists and numbers


class RenderError(Exception):
    """A template or expression failed when rendering for one contact."""


def private_name(name: Any) -> bool:
    """Whether a template may not read `name`: Python's private and dunder attributes."""
    return isinstance(name, str) and name.startswith("_")


def private_accesses(ast: nodes.Node) -> list[tuple[str, int]]:
    """(name, line) of each ``x._name`` and ``x["_name"]`` a parsed template or expression reads."""
    found = [(n.attr, n.lineno) for n in ast.find_all(nodes.Getattr) if private_name(n.attr)]
    found += [
        (n.arg.value, n.lineno)
        for n in ast.find_all(nodes.Getitem)
        if isinstance(n.arg, nodes.Const) and private_name(n.arg.value)
    ]
    return sorted(found, key=lambda item: item[1])


def private_message(name: str) -> str:
    return f"reads the private attribute '{name}', which templates may not read"


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    # Jinja's sandbox turns an unsafe attribute into an empty value, and reads a dict's
    # '_key' as an item: either way the message would go out with a hole. Refusing the render
    # instead fails the send with its reason (a template that reached a stored version
    # before lint checked this).
    def getattr(self, obj: Any, attribute: str) -> Any:
        if private_name(attribute):
            raise SecurityError(private_message(attribute))
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if private_name(argument):
            raise SecurityError(private_message(argument))
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if abs(left) > MAX_OPERAND or abs(right) > 64:
                raise SecurityError("power too large")
            return operator.pow(left, right)
        if isinstance(left, str | list | tuple) or isinstance(right, str | list | tuple):
            count = right if isinstance(left, str | list | tuple) else left
            seq = left if isinstance(left, str | list | tuple) else right
            if isinstance(count, int) and count * len(seq) > MAX_OPERAND:
                raise SecurityError("repetition too large")
        return operator.mul(left, right)


def _make_env(autoescape: bool, undefined: type[Any]) -> _Sandbox:
    env = _Sandbox(autoescape=autoescape, undefined=undefined, trim_blocks=False)
    env.filters = {name: env.filters[name] for name in ALLOWED_FILTERS if name in env.filters}
    env.globals = {}
    return env


# Unknown variable names are lint errors (checked on the template's AST); at send time a contact
# who lacks an attribute gets an empty string rather than no message: `default` sets a fallback.
TEXT_ENV = _make_env(False, ChainableUndefined)
HTML_ENV = _make_env(True, ChainableUndefined)
EXPR_ENV = _make_env(False, ChainableUndefined)


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


def check_source(
    source: str, part: str, data: Mapping[str, Any], html: bool = False
) -> list[TemplateIssue]:
    """Compile-check a template: syntax, unknown top-level variables, unknown `data.x` keys."""
    from engine.spec.problems import did_you_mean

    env = HTML_ENV if html else TEXT_ENV
    try:
        ast = env.parse(source)
        # Unknown filters and tests surface here, not in parse().
        undeclared = meta.find_undeclared_variables(ast)
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
    return issues


@dataclass(frozen=True)
class CompiledTemplate:
    """A message template: named parts (subject, text, html, sms, title, body), each compiled."""

    name: str
    parts: Mapping[str, Any]  # part name → jinja2.Template

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        """Render every part; raise RenderError (never anything else) on failure."""
        out = {}
        for part, template in self.parts.items():
            try:
                # A shared context skips copying the (empty) globals for every render.
                text = template.environment.concat(  # type: ignore[attr-defined]
                    template.root_render_func(template.new_context(dict(context), shared=True))
                )
            except (TemplateError, ArithmeticError, TypeError, ValueError) as exc:
                raise RenderError(f"template '{self.name}' part '{part}': {exc}") from None
            if len(text) > MAX_OUTPUT:
                raise RenderError(
                    f"template '{self.name}' part '{part}' renders over {MAX_OUTPUT} characters"
                )
            out[part] = text
        return out


def compile_template(name: str, parts: Mapping[str, str]) -> CompiledTemplate:
    """Compile template parts; a part named `html` is autoescaped. Raises TemplateError."""
    compiled = {
        part: (HTML_ENV if part == "html" else TEXT_ENV).from_string(source)
        for part, source in parts.items()
    }
    for template in compiled.values():
        # Our environments have no globals; a plain dict spares every render from walking the
        # ChainMap Jinja keeps there.
        template.globals = {}
    return CompiledTemplate(name, compiled)


def compile_expression(source: str) -> Callable[..., Any]:
    """Compile a condition expression; raises TemplateError on bad syntax."""
    compiled = EXPR_ENV.compile_expression(source)

    def evaluate(**variables: Any) -> Any:
        try:
            return compiled(**variables)
        except (TemplateError, ArithmeticError, TypeError, ValueError):
            return False

    return evaluate


def expression_issues(source: str) -> list[str]:
    """Unknown top-level names in an expression (e.g. a typo of 'contact')."""
    from engine.spec.problems import did_you_mean

    ast = EXPR_ENV.parse("{{ " + source + " }}")
    out = [f"expression {private_message(name)}." for name, _ in private_accesses(ast)]
    for name in sorted(meta.find_undeclared_variables(ast)):
        if name not in TEMPLATE_VARIABLES and name not in ("true", "false", "none"):
            hint = did_you_mean(name, TEMPLATE_VARIABLES)
            out.append(f"unknown name '{name}'" + (f"; {hint}" if hint else ""))
    return out
