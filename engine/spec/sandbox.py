"""The sandbox templates and expressions run in, and the budget every render spends.

Jinja's own sandbox stops attribute tricks but lets a template ask for any amount of memory or
time: ``'%999999999s' % 'a'``, ``'a'.center(10**9)``, loops over loops, macros calling
themselves. Here every operation that can allocate checks the size it would produce *before*
producing it, loops and macro calls are counted, recursion is refused and a wall-clock deadline
is checked at each of these points. Compiling never evaluates anything: constant folding is off,
so a template that would blow up costs nothing until it is rendered under a budget.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import BlockReference, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter
from markupsafe import Markup

# The budget of one render (every part of a message) or one expression evaluation.
MAX_SIZE = 100_000  # characters (or items) of any one value a template builds
MAX_BITS = 10_000  # of an integer product (about 3,000 digits)
MAX_PRODUCED = 1_000_000  # characters built in all, output and intermediate values together
MAX_ITERATIONS = 10_000  # loop iterations
MAX_CALLS = 1_000  # macro calls
MAX_DEPTH = 50  # nested macro calls and recursive loop levels
# CPU time of the rendering thread: what a template costs, whatever else the machine is doing
# (by the wall clock, a worker descheduled on a busy machine would lose a cheap message).
MAX_SECONDS = 1.0

LIMITS = {
    "render.size": f"a value over {MAX_SIZE:,} characters or {MAX_PRODUCED:,} built in all",
    "render.loops": f"over {MAX_ITERATIONS:,} loop iterations",
    "render.calls": f"over {MAX_CALLS:,} macro calls",
    "render.recursion": f"a macro calling itself, or over {MAX_DEPTH} nested levels",
    "render.time": f"over {MAX_SECONDS:g} s of CPU",
}


class LimitExceeded(SecurityError):
    """A render went past its budget; `code` is one of LIMITS."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Budget:
    """What one render may still spend. Counters only grow; each check raises LimitExceeded."""

    def __init__(self, seconds: float = MAX_SECONDS) -> None:
        self.deadline = time.thread_time() + seconds
        self.produced = 0
        self.iterations = 0
        self.calls = 0
        self.active: list[Any] = []  # the macros, blocks and loop levels running, innermost last

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise LimitExceeded("render.time", f"the render took over {MAX_SECONDS:g} s of CPU")

    def size(self, size: int, what: str) -> None:
        """Refuse a value of `size` before it is built; count it as built."""
        self.tick()
        if size > MAX_SIZE:
            raise LimitExceeded("render.size", f"{what} would be {size:,} long (over {MAX_SIZE:,})")
        self.produced += size
        if self.produced > MAX_PRODUCED:
            message = f"the render built over {MAX_PRODUCED:,} characters"
            raise LimitExceeded("render.size", message)

    def built(self, value: Any, what: str) -> Any:
        """Count a value just built by an operation whose size could not be known before."""
        if isinstance(value, str | bytes | list | tuple):
            self.size(len(value), what)
        else:
            self.tick()
        return value

    def iteration(self, literal: int) -> None:
        self.iterations += 1
        if self.iterations > MAX_ITERATIONS:
            raise LimitExceeded("render.loops", f"over {MAX_ITERATIONS:,} loop iterations")
        self.size(literal, "the loop's text")

    @contextmanager
    def entering(self, key: Any, name: str) -> Iterator[None]:
        """Run a macro, block or recursive loop level: counted, never re-entered, not too deep.

        A macro may run again inside the body of a ``{% call %}`` block it was given (a box in
        a box): each level is a block written in the template, so the depth limit bounds it."""
        self.tick()
        if key in self.active:
            since = self.active[len(self.active) - self.active[::-1].index(key) :]
            if not any(isinstance(k, tuple) and k[0] == "caller" for k in since):
                raise LimitExceeded("render.recursion", f"{name} calls itself")
        if len(self.active) >= MAX_DEPTH:
            message = f"{name} is nested over {MAX_DEPTH} levels deep"
            raise LimitExceeded("render.recursion", message)
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise LimitExceeded("render.calls", f"over {MAX_CALLS:,} macro calls")
        self.active.append(key)
        try:
            yield
        finally:
            self.active.pop()


_current: ContextVar[Budget | None] = ContextVar("render_budget", default=None)


def current() -> Budget:
    """The budget of the render running in this thread; outside one, a fresh one."""
    return _current.get() or Budget()


@contextmanager
def budget(seconds: float = MAX_SECONDS) -> Iterator[Budget]:
    """Give the renders inside the block one shared budget (a message's parts share one)."""
    spent = Budget(seconds)
    token = _current.set(spent)
    try:
        yield spent
    finally:
        _current.reset(token)


# ---------------------------------------------------------------- sizes, before building

_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
    r"[hlL]?(?P<type>.?)",
    re.S,
)


def percent_size(template: str, values: Any) -> int:
    """An upper bound of ``template % values``; raises LimitExceeded for a huge width."""
    args = values if isinstance(values, tuple) else (values,)
    total, i = len(template), 0
    for match in _PERCENT.finditer(template):
        if match["type"] == "%":
            continue
        for group in ("width", "precision"):
            given: Any = match[group]
            if given == "*":
                given = args[i] if i < len(args) else 0
                i += 1
            # a negative '*' width pads to the left: as long as a positive one
            number = abs(given) if isinstance(given, int) else int(given or 0)
            if number > MAX_SIZE:
                raise LimitExceeded("render.size", f"a format width of {number:,}")
            total += number
        if match["key"] is not None:
            value = values.get(match["key"]) if isinstance(values, Mapping) else None
        else:
            value = args[i] if i < len(args) else None
            i += 1
        if isinstance(value, int | float):
            total += 320  # the most digits a float prints in fixed notation
        else:
            total += len(value if isinstance(value, str) else str(value))
    return total


_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?")


def _spec_width(spec: str) -> int:
    match = _SPEC.match(spec)
    found = [int(n) for n in (match["width"], match["precision"]) if n] if match else []
    return sum(found)


def _str_method_size(method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int | None:
    """The size a str or bytes method would return, for those that can grow a value."""
    s = method.__self__
    name = method.__name__
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        width = first if first is not None else kwargs.get("width", 0)
        return max(len(s), width) if isinstance(width, int) else None
    if name == "expandtabs":
        size = first if first is not None else kwargs.get("tabsize", 8)
        tabs: int = s.count("\t" if isinstance(s, str) else b"\t")
        return len(s) + tabs * max(size, 0) if isinstance(size, int) else None
    if name == "replace" and len(args) >= 2:
        return _replace_size(s, args[0], args[1], args[2] if len(args) > 2 else -1)
    if name == "translate" and isinstance(first, Mapping):
        longest = max((len(v) for v in first.values() if isinstance(v, str)), default=1)
        return len(s) * max(longest, 1)
    return None


def _replace_size(s: Any, old: Any, new: Any, count: Any) -> int | None:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return None
    found = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * max(len(new) - len(old), 0)


def _joined(separator: str, items: Iterable[Any], what: str) -> list[str]:
    """The items as strings, refused as soon as joining them would be too long."""
    b = current()
    out: list[str] = []
    total = 0
    for item in items:
        text = item if isinstance(item, str) else str(item)
        total += len(text) + (len(separator) if out else 0)
        if total > MAX_SIZE:
            b.size(total, what)
        out.append(text)
    return out


# ---------------------------------------------------------------- bounded filters


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    current().size(percent_size(str(value), kwargs or args), "the formatted text")


def _check_replace(value: Any, old: Any, new: Any, count: Any = None) -> None:
    size = _replace_size(str(value), str(old), str(new), -1 if count is None else count)
    current().size(size or 0, "the replaced text")


def _check_join(value: Any, d: str = "", attribute: Any = None) -> None:
    # with an attribute, each item's own text is longer than the attribute's
    _joined(str(d), value if isinstance(value, Iterable) else (), "the joined text")


def _check_sum(value: Any, attribute: Any = None, start: Any = 0) -> None:
    if isinstance(start, list | tuple | str) and isinstance(value, Iterable):
        total = len(start) + sum(len(v) for v in value if isinstance(v, list | tuple | str))
        current().size(total, "the sum")


_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "format": _check_format,
    "replace": _check_replace,
    "join": _check_join,
    "sum": _check_sum,
}


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its result's size first (when it can grow) and counts it after."""
    check = _FILTER_CHECKS.get(name)
    skip = 1 if getattr(func, "jinja_pass_arg", None) else 0  # the context, environment...

    @wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            if len(args) > skip and isinstance(args[skip], Iterator):  # e.g. unique's result
                args = (*args[:skip], list(args[skip]), *args[skip + 1 :])
            check(*args[skip:], **kwargs)
        return current().built(func(*args, **kwargs), f"the {name} filter's result")

    return run


@pass_context
def bounded_output(context: Any, value: Any) -> Any:
    """Every ``{{ }}`` output, counted (taking the context keeps Jinja from folding outputs)."""
    if isinstance(value, str):
        current().size(len(value), "the output")
    elif not isinstance(value, int | float):  # a number prints short; a list may not
        current().size(len(str(value)), "the output")
    return value


class _BoundedFormatter(SandboxedEscapeFormatter):
    """``str.format`` refusing a huge width or precision, and a result past the size limit."""

    def __init__(self, env: Any, escape: Callable[[Any], Markup] | None) -> None:
        super().__init__(env, escape=escape or str)
        self.plain = escape is None
        self.total = 0

    def format_field(self, value: Any, format_spec: str) -> str:
        width = _spec_width(format_spec)
        if width > MAX_SIZE:
            raise LimitExceeded("render.size", f"a format width of {width:,}")
        text = (
            format(value, format_spec) if self.plain else super().format_field(value, format_spec)
        )
        self.total += len(text)
        if self.total > MAX_SIZE:
            current().size(self.total, "the formatted text")
        return text


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator with every loop counted and every ``~`` size-checked."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # each iteration pays for the literal text of the loop's body
        literal = sum(len(n.data) for n in node.find_all(nodes.TemplateData))
        counted = nodes.Call(
            nodes.EnvironmentAttribute("iterate"),
            [node.iter, nodes.Const(literal)],
            [],
            None,
            None,
            lineno=node.lineno,
        )
        loop = nodes.For(
            node.target,
            counted,
            node.body,
            node.else_,
            node.test,
            node.recursive,
            lineno=node.lineno,
        )
        super().visit_For(loop, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), ")
        if frame.eval_ctx.volatile:
            self.write("context.eval_ctx.autoescape")
        else:
            self.write(repr(bool(frame.eval_ctx.autoescape)))
        self.write(")")


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with private names refused and every render on a budget."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, autoescape: bool, undefined: type[Any], filters: Iterable[str]) -> None:
        super().__init__(
            autoescape=autoescape, undefined=undefined, finalize=bounded_output, optimized=False
        )
        self.filters = {
            name: bounded_filter(name, self.filters[name])
            for name in filters
            if name in self.filters
        }
        self.globals = {}

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

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if super().wrap_str_format(value) is None:
            return None
        s: str = value.__self__
        formatter = _BoundedFormatter(self, s.escape if isinstance(s, Markup) else None)
        is_map = value.__name__ == "format_map"

        def run(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return render((), dict(args[0]))
            return render(args, kwargs)

        def render(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
            formatter.total = 0
            return type(s)(formatter.vformat(s, args, kwargs))

        return run

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        b = current()
        sized = (str, bytes, list, tuple)
        if operator_ == "**":
            b.tick()
            if abs(left) > MAX_SIZE or abs(right) > 64:
                raise LimitExceeded("render.size", f"{left} ** {right} is too large")
            return operator.pow(left, right)
        if operator_ == "%":
            if not isinstance(left, str):
                return operator.mod(left, right)
            b.size(percent_size(left, right), "the formatted text")
            return b.built(operator.mod(left, right), "the formatted text")
        if operator_ == "+":
            if isinstance(left, sized) and isinstance(right, sized):
                b.size(len(left) + len(right), "the joined value")
            return operator.add(left, right)
        if isinstance(left, sized) or isinstance(right, sized):
            count, seq = (right, left) if isinstance(left, sized) else (left, right)
            if isinstance(count, int):
                b.size(count * len(seq), "the repeated value")
        elif isinstance(left, int) and isinstance(right, int):
            # a product's digits add up: a chain of products would slow to a crawl
            if left.bit_length() + right.bit_length() > MAX_BITS:
                raise LimitExceeded("render.size", f"a product of over {MAX_BITS:,} bits")
        else:
            b.tick()
        return operator.mul(left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        b = current()
        if isinstance(obj, Macro | BlockReference):
            # a block is looked up anew at each `self.name`: known by its name, not its id
            key: Any = ("block", obj.name)
            kind = "macro" if isinstance(obj, Macro) else "block"
            name = f"{kind} '{obj.name}'"
            if isinstance(obj, Macro):  # the body of a {% call %} block is a macro without a name
                key = id(obj) if obj.name else ("caller", id(obj))
                name = name if obj.name else "the call block"
            with b.entering(key, name):
                return b.built(super().call(context, obj, *args, **kwargs), f"the {kind}'s text")
        if isinstance(obj, LoopContext):  # a recursive loop's next level
            with b.entering(id(obj), "the recursive loop"):
                counted = (self.iterate(args[0], 0), *args[1:]) if args else args
                return super().call(context, obj, *counted, **kwargs)
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str | bytes):
            size = _str_method_size(obj, args, kwargs)
            if size is not None:
                b.size(size, f"the result of {obj.__name__}()")
            elif obj.__name__ == "join" and args:
                args = (_joined(str(owner), args[0], "the joined text"), *args[1:])
        elif isinstance(owner, int) and getattr(obj, "__name__", "") == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            b.size(length if isinstance(length, int) else 0, "the bytes")
        return b.built(super().call(context, obj, *args, **kwargs), "the call's result")

    def iterate(self, iterable: Iterable[Any], literal: int) -> Iterator[Any]:
        """A loop's items, each counted against the budget."""
        b = current()
        for item in iterable:
            b.iteration(literal)
            yield item

    def concat_values(self, values: tuple[Any, ...], autoescape: bool) -> str:
        """``a ~ b``, refused before joining when the result would be too long."""
        b = current()
        total = sum(len(v) if isinstance(v, str) else len(str(v)) for v in values)
        b.size(total, "the joined text")
        return markup_join(values) if autoescape else str_join(values)


def private_name(name: Any) -> bool:
    """Whether a template may not read `name`: Python's private and dunder attributes."""
    return isinstance(name, str) and name.startswith("_")


def private_message(name: str) -> str:
    return f"reads the private attribute '{name}', which templates may not read"
