"""Message templates: template folders, and the checks and compilation of every send and webhook.

A template is a folder ``<scenarios dir>/templates/<name>/`` holding one file per part:
``subject.txt``, ``text.txt``, ``html.html``, ``title.txt``... (extension ``.txt`` or ``.html``).
Stored versions carry the same parts as a mapping, so checks run the same on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2 import nodes as jnodes
from markupsafe import escape

from channels.base import ChannelInfo
from channels.registry import channel_info, channel_names
from engine.spec import model
from engine.spec.expressions import (
    HTML_ENV,
    TEXT_ENV,
    CompiledTemplate,
    TemplateIssue,
    check_source,
    compile_template,
)
from engine.spec.problems import Problem, did_you_mean
from engine.spec.sandbox import private_name

PART_EXTENSIONS = (".txt", ".html")
MAX_PART_BYTES = 256 * 1024
Path_ = tuple[str | int, ...]


class TemplateReadError(Exception):
    """A template file cannot be used (not UTF-8, too large); `code` is the problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def valid_template_name(name: str) -> bool:
    """Letters, digits, '_' and '-' only, so a name can never leave the templates folder."""
    return bool(name) and name[0].isalnum() and all(c.isalnum() or c in "_-" for c in name)


def template_files(templates_root: Path, name: str) -> dict[str, Path]:
    """Part name → file of a template folder (``subject.txt`` → subject); empty if none."""
    folder = templates_root / name
    if not valid_template_name(name) or not folder.is_dir():
        return {}
    # sorted, so with both text.html and text.txt the choice never depends on the file system
    files = sorted(p for p in folder.iterdir() if p.suffix in PART_EXTENSIONS and p.is_file())
    return {p.stem: p for p in files}


def read_template_dir(templates_root: Path, name: str) -> dict[str, str]:
    """Read every part of a template folder; TemplateReadError when a file is unusable."""
    parts = {}
    for part, path in template_files(templates_root, name).items():
        raw = path.read_bytes()
        if len(raw) > MAX_PART_BYTES:
            raise TemplateReadError(
                "template.limit", f"{path.name} is over {MAX_PART_BYTES:,} bytes"
            )
        try:
            parts[part] = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise TemplateReadError("template.encoding", f"{path.name} is not UTF-8") from None
    return parts


class TemplateLibrary:
    """The templates a scenario can use: a folder on disk, or stored sources (a bundle)."""

    def __init__(
        self,
        root: Path | None = None,
        sources: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.root = root
        self.sources = sources

    def names(self) -> list[str]:
        """Every template name available."""
        if self.sources is not None:
            return sorted(self.sources)
        if self.root is None or not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def read(self, name: str) -> dict[str, str] | None:
        """A template's parts, or None when it does not exist."""
        if not valid_template_name(name):
            return None
        if self.sources is not None:
            found = self.sources.get(name)
            return None if found is None else {str(k): str(v) for k, v in found.items()}
        if self.root is None or not (self.root / name).is_dir():
            return None
        return read_template_dir(self.root, name)

    def label(self, name: str, part: str) -> str:
        """How to name a part's file in a message, e.g. ``templates/welcome/subject.txt``."""
        if self.root is not None and self.sources is None:
            path = template_files(self.root, name).get(part)
            return f"{self.root.name}/{name}/{path.name if path else part}"
        return f"templates/{name}/{part}"


# ---------------------------------------------------------------- rendering without Jinja

# A part made only of text and `{{ name.attribute }}` outputs, the usual shape of a message
# ("Hello {{ contact.first_name }}"), renders to the same text as Jinja by looking the values up
# and joining the pieces: no context object, no generated code, no budget to set up. Anything
# else, or a value that is not a plain string, number, None or missing, renders through Jinja.
Piece = str | tuple[str, str]  # literal text, or (variable, attribute)
_DICT_NAMES = frozenset(dir(dict))  # `contact.items` is the method in Jinja, not an item
_PLAIN_LIMIT = 10_000  # longer outputs go through Jinja, which applies the size budget
_MISSING = object()


def plan_part(source: str, html: bool) -> tuple[Piece, ...] | None:
    """The pieces of a simple part, or None when it needs Jinja."""
    try:
        ast = (HTML_ENV if html else TEXT_ENV).parse(source)
    except TemplateError:
        return None
    pieces: list[Piece] = []
    for node in ast.body:
        if not isinstance(node, jnodes.Output):
            return None
        for item in node.nodes:
            if isinstance(item, jnodes.TemplateData):
                pieces.append(item.data)
            elif (
                isinstance(item, jnodes.Getattr)
                and isinstance(item.node, jnodes.Name)
                and item.node.ctx == "load"
                and not private_name(item.attr)
                and item.attr not in _DICT_NAMES
            ):
                pieces.append((item.node.name, item.attr))
            else:
                return None
    return tuple(pieces)


def _render_plain(
    plans: Mapping[str, tuple[Piece, ...]], html: frozenset[str], context: Mapping[str, Any]
) -> dict[str, str] | None:
    """Every part rendered from its pieces; None as soon as one value needs Jinja."""
    out = {}
    for part, pieces in plans.items():
        chunks = []
        for piece in pieces:
            if isinstance(piece, str):
                chunks.append(piece)
                continue
            holder = context.get(piece[0], _MISSING)
            if type(holder) is not dict:
                return None
            value = holder.get(piece[1], _MISSING)
            if value is _MISSING:
                continue  # undefined: Jinja prints nothing
            if value is not None and type(value) not in (str, int, float, bool):
                return None
            text = str(value)
            if len(text) > _PLAIN_LIMIT:
                return None
            chunks.append(str(escape(text)) if part in html else text)
        rendered = "".join(chunks)
        if len(rendered) > _PLAIN_LIMIT:
            return None
        out[part] = rendered
    return out


@dataclass(frozen=True)
class PlannedTemplate(CompiledTemplate):
    """A compiled template that renders its simple parts without Jinja (same text)."""

    plans: Mapping[str, tuple[Piece, ...]] | None = None  # None: some part needs Jinja
    html: frozenset[str] = frozenset()

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        if self.plans is not None:
            out = _render_plain(self.plans, self.html, context)
            if out is not None:
                return out
        return super().render(context)


def compile_planned(name: str, parts: Mapping[str, str]) -> CompiledTemplate:
    """`compile_template`, with the plain pieces of each part when every part is simple."""
    compiled = compile_template(name, parts)
    plans = {part: plan_part(source, part == "html") for part, source in parts.items()}
    if any(plan is None for plan in plans.values()):
        return compiled
    return PlannedTemplate(
        compiled.name,
        compiled.parts,
        {part: plan for part, plan in plans.items() if plan is not None},
        frozenset(part for part in parts if part == "html"),
    )


@dataclass
class TemplateCheck:
    """Result of checking a scenario's messages: compiled templates, sources read, problems."""

    templates: dict[str, CompiledTemplate] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def payload_strings(value: Any, pointer: str = "") -> Iterator[tuple[str, Path_, str]]:
    """(JSON pointer, document path, text) of every string inside a webhook payload."""
    if isinstance(value, str):
        yield pointer, (), value
    elif isinstance(value, Mapping | list):
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for key, item in items:
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            for sub_pointer, sub_path, text in payload_strings(item, f"{pointer}/{escaped}"):
                yield sub_pointer, (key, *sub_path), text


def fill_payload(payload: Any, rendered: Mapping[str, str], pointer: str = "") -> Any:
    """The payload with each string replaced by its rendered part (keyed by JSON pointer)."""
    if isinstance(payload, str):
        return rendered.get(pointer, payload)
    if isinstance(payload, Mapping):
        return {
            k: fill_payload(
                v, rendered, f"{pointer}/{str(k).replace('~', '~0').replace('/', '~1')}"
            )
            for k, v in payload.items()
        }
    if isinstance(payload, list):
        return [fill_payload(v, rendered, f"{pointer}/{i}") for i, v in enumerate(payload)]
    return payload


def _issue_line(issue: TemplateIssue, source: str, html: bool) -> int | None:
    """The template line of an unknown name, which check_source does not give."""
    if issue.line is not None:
        return issue.line
    try:
        ast = (HTML_ENV if html else TEXT_ENV).parse(source)
    except TemplateError:
        return None
    lines = [n.lineno for n in ast.find_all(jnodes.Name) if f"'{n.name}'" in issue.message]
    lines += [
        n.lineno
        for n in ast.find_all(jnodes.Getattr)
        if isinstance(n.node, jnodes.Name)
        and n.node.name == "data"
        and f"'data.{n.attr}'" in issue.message
    ]
    return min(lines, default=None)


def _issues(source: str, part: str, data: Mapping[str, Any], html: bool) -> list[TemplateIssue]:
    try:
        return check_source(source, part, data, html=html)
    except TemplateError as exc:  # e.g. an unknown filter, found only when jinja2 compiles
        message = f"template does not compile: {exc}"
        return [TemplateIssue(part, message, getattr(exc, "lineno", None))]


Where = Callable[[str], Path_]  # part name → path of the field to blame, inside the step


class _Checker:
    def __init__(self, data: Mapping[str, Any], library: TemplateLibrary) -> None:
        self.data = data
        self.library = library
        self.result = TemplateCheck()
        self.done: set[str] = set()

    def problem(self, code: str, message: str, step: str, path: Path_, **kw: Any) -> None:
        full = ("steps", step, *path)
        self.result.problems.append(Problem(code, message, path=full, step=step, **kw))

    def warn(self, code: str, message: str, step: str, path: Path_, hint: str) -> None:
        self.problem(code, message, step, path, severity="warning", hint=hint)

    def compile(
        self,
        name: str,
        parts: Mapping[str, str],
        step: str,
        where: Where,
        label: Callable[[str], str],
    ) -> None:
        """Check and compile a template once, reporting its issues at the first step using it."""
        if name in self.done:
            return
        self.done.add(name)
        compiles = True
        for part, source in parts.items():
            html = part == "html"
            for issue in _issues(source, part, self.data, html):
                compiles = compiles and issue.code != "template.syntax"
                line = _issue_line(issue, source, html)
                at = f"{label(part)} line {line}" if line else label(part)
                self.problem(
                    issue.code, f"{at}: {issue.message}", step, where(part), hint=issue.hint
                )
        if not compiles:
            return
        try:
            self.result.templates[name] = compile_planned(name, parts)
        except TemplateError as exc:  # check_source parses the same way; kept as a safety net
            self.problem("template.syntax", f"{name}: {exc}", step, where(next(iter(parts))))

    def channel(self, step: model.SendStep) -> ChannelInfo | None:
        known = channel_names()
        if step.channel in known:
            return channel_info(step.channel)
        hint = did_you_mean(step.channel, known) or f"channels are: {', '.join(known)}"
        message = f"Unknown channel '{step.channel}'."
        self.problem("channel.unknown", message, step.id, ("channel",), hint=hint)
        return None

    def send(self, step: model.SendStep) -> None:
        info = self.channel(step)
        if not step.template:
            parts = dict(step.content)
            inline: Where = lambda part: ("content", part)  # noqa: E731
            self.compile(f"{step.id}:inline", parts, step.id, inline, lambda part: "template")
            self.fit(step, info, parts, inline, "the inline content")
            return
        name = step.template
        try:
            found = self.library.read(name)
        except (TemplateReadError, OSError) as exc:
            code = exc.code if isinstance(exc, TemplateReadError) else "template.unreadable"
            self.problem(code, f"Template '{name}': {exc}", step.id, ("template",))
            return
        if found is None:
            hint = did_you_mean(name, self.library.names()) or f"create templates/{name}/"
            message = f"No template named '{name}'."
            self.problem("template.missing", message, step.id, ("template",), hint=hint)
            return
        self.result.sources[name] = found
        on_template: Where = lambda part: ("template",)  # noqa: E731
        self.compile(name, found, step.id, on_template, lambda part: self.library.label(name, part))
        self.fit(step, info, found, on_template, f"template '{name}'")

    def fit(
        self,
        step: model.SendStep,
        info: ChannelInfo | None,
        parts: Mapping[str, str],
        where: Where,
        what: str,
    ) -> None:
        """The parts match what the channel takes."""
        if info is None:
            return
        for group in info.required_parts:
            if not any(p in parts for p in group):
                need = " or ".join(f"'{p}'" for p in group)
                message = f"{info.label} needs a {need} part; {what} has none."
                path = where(group[0])[:1]  # the template, or the whole content mapping
                hint = f"add a {group[0]} part"
                self.problem("template.missing_part", message, step.id, path, hint=hint)
        for part in parts:
            if part not in info.parts:
                message = f"{info.label} does not use a '{part}' part."
                hint = f"{info.name} takes {', '.join(info.parts)}"
                self.warn("template.unknown_part", message, step.id, where(part), hint)
        # the main text part is what max_length limits (SMS text, push body)
        main = next((p for p in ("text", "body") if p in info.parts), None)
        if info.max_length and main and len(parts.get(main, "")) > info.max_length:
            size = len(parts[main])
            message = f"The {main} is {size:,} characters; {info.label} allows {info.max_length:,}."
            hint = "shorten it, or it may be cut or refused"
            self.warn("template.too_long", message, step.id, where(main), hint)

    def webhook(self, step: model.WebhookStep) -> None:
        found = list(payload_strings(step.payload))
        if not found:
            return
        paths = {pointer: path for pointer, path, _ in found}
        parts = {pointer: text for pointer, _, text in found}
        where: Where = lambda pointer: ("payload", *paths[pointer])  # noqa: E731
        self.compile(f"{step.id}:payload", parts, step.id, where, lambda p: f"payload {p}")


def check_templates(scenario: model.Scenario, library: TemplateLibrary) -> TemplateCheck:
    """Check every send and webhook step; compile their templates (keyed by template name)."""
    return check_steps(scenario.steps.values(), scenario.data, library)


def check_steps(
    steps: Iterable[model.Step], data: Mapping[str, Any], library: TemplateLibrary
) -> TemplateCheck:
    """`check_templates` for some steps (those that loaded, when the scenario did not)."""
    checker = _Checker(data, library)
    for step in steps:
        if isinstance(step, model.SendStep):
            checker.send(step)
        elif isinstance(step, model.WebhookStep):
            checker.webhook(step)
    return checker.result
