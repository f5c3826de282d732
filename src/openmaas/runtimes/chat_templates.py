"""Chat templates rendered under a deadline and a size bound.

A chat template is Jinja code from a tokenizer config, and tokenizer configs come from
tenants' uploads: it may loop for hours or build a gigabyte string. It renders in jinja2's
`ImmutableSandboxedEnvironment` (what transformers uses: no attribute escapes, no mutation of
the messages) with the same globals as `tokenizer.apply_chat_template`, plus bounds the
sandbox alone lacks:

- **time**: a deadline checked cooperatively inside the render, at every loop iteration
  (each `{% for %}` iterates through a checking filter, put there when the template is
  parsed), every call, attribute and item lookup and every output chunk. A Python thread
  cannot be killed from outside, so the check must run inside it; with every loop and call
  checked, the render stops within one operation of its deadline.
- **size**: no single operation may make a string or sequence longer than the prompt limit
  (`*`, `+`, `~`, `%` and `format` widths, `replace`, huge numeric arguments such as
  `center(10**9)` are refused before they allocate), and the output is counted as it is
  produced.

The render itself is synchronous: callers run it off the event loop (the engine runs a
generation's prompt in the model's thread), so a template that does reach its deadline has
held only its own model's thread, and the event loop kept answering.

Example::

    template = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}", RenderLimits())
    template.render([{"role": "user", "content": "hi"}], add_generation_prompt=True)  # -> "hi"
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer


@dataclass(frozen=True, slots=True)
class RenderLimits:
    timeout_s: float = 1.0
    max_chars: int = 2_000_000  # of the rendered prompt, and of any string made on the way


class TemplateLimitExceeded(Exception):
    """The render ran past its deadline or would have made something too large."""


# -- the budget of the render running in this thread ------------------------------------------


@dataclass(slots=True)
class _Budget:
    deadline: float
    max_chars: int
    next_yield: float


_current = threading.local()


def _budget() -> _Budget | None:
    budget: _Budget | None = getattr(_current, "budget", None)
    return budget


# A render past this long gives up the GIL this often. Pure Python keeps the GIL for the
# interpreter's switch interval (5 ms) whenever another thread asks for it: the event loop
# waited that long at each step of answering a probe while a template looped (probes took
# 20 ms at the median). A template that renders in time (well under a millisecond for
# real chats) never reaches the first yield.
YIELD_EVERY_S = 0.002


def _tick() -> None:
    budget = _budget()
    if budget is None:
        return
    now = time.monotonic()
    if now > budget.deadline:
        raise TemplateLimitExceeded("took too long to render")
    if now > budget.next_yield:
        time.sleep(0)  # releases the GIL: a waiting event loop takes it now
        budget.next_yield = now + YIELD_EVERY_S


def _too_large(size: int) -> None:
    budget = _budget()
    if budget is not None and size > budget.max_chars:
        raise TemplateLimitExceeded(f"would make a value of {size} characters or items")


def _sized(value: object) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 0


def _check_arguments(args: Iterable[object]) -> None:
    """A numeric argument beyond the size limit is a width or count that would allocate it
    (`center(10**9)`, `batch(10**9)`, `ljust`, `zfill`, `expandtabs`, `indent`)."""
    budget = _budget()
    if budget is None:
        return
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > budget.max_chars:
            raise TemplateLimitExceeded(f"an argument of {value} is larger than the limit")


# A format width or precision of seven digits or more (`%9999999s`, `{:>9999999}`): no prompt
# needs one, and formatting allocates it before anything can check.
_WIDE_FORMAT = re.compile(r"[%:][^%:{}\s]*?\d{7,}")


def _check_format(text: object) -> None:
    if isinstance(text, str) and _WIDE_FORMAT.search(text):
        raise TemplateLimitExceeded("a format width is larger than the limit")


def _check_replace(text: object, args: Sequence[object]) -> None:
    if not isinstance(text, str) or len(args) < 2:
        return
    old, new = args[0], args[1]
    if isinstance(old, str) and isinstance(new, str):
        hits = len(text) + 1 if old == "" else text.count(old)
        _too_large(len(text) + hits * len(new))


def _bounded(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A filter or global that checks the deadline, its arguments and its result's size."""

    # A filter's first arguments are jinja's context (when it asks for one) and the value
    # filtered, which may be any size the messages are: only the arguments after are checked.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is None else 2
    if name == "range":
        skip = 0

    @functools.wraps(function)  # keeps jinja's pass_context / pass_eval_context marks
    def call(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_arguments([*args[skip:], *kwargs.values()])
        if name == "replace":
            _check_replace(args[skip - 1], args[skip:])
        elif name == "format":
            _check_format(args[skip - 1])
        result = function(*args, **kwargs)
        _too_large(_sized(result))
        return result

    return call


# -- the environment --------------------------------------------------------------------------


def _iterate(values: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates through: the deadline is checked at each item."""
    for value in values:
        _tick()
        yield value


def _join(parts: Sequence[Any]) -> str:
    """`a ~ b`: Jinja's string concatenation, bounded."""
    texts = [str(part) for part in parts]
    _too_large(sum(len(text) for text in texts))
    return "".join(texts)


_ITERATE = "openmaas_bounded_iterate"
_JOIN = "openmaas_bounded_join"


class _Bounds(NodeTransformer):
    """Rewrites a parsed template: loops iterate through `_iterate`, `~` joins through
    `_join`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITERATE, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(parts, _JOIN, [], [], None, None, lineno=node.lineno)


class _Generation(Extension):
    """`{% generation %}…{% endgeneration %}` marks assistant text for training masks in
    transformers; here it renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every loop, call, lookup and size-changing operator
    checked against the render's budget."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        bounded = _Bounds().visit(tree)
        assert isinstance(bounded, nodes.Template)
        return bounded

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if _sized(sequence) and isinstance(count, int):
                    _too_large(_sized(sequence) * count)
            if isinstance(left, int) and isinstance(right, int):
                _too_large((left.bit_length() + right.bit_length()) // 8)
        elif operator == "**" and isinstance(left, int | float) and isinstance(right, int):
            if abs(left) > 1 and right > 4096:
                raise TemplateLimitExceeded(f"an exponent of {right} is larger than the limit")
        elif operator == "+":
            _too_large(_sized(left) + _sized(right))
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
            _check_arguments(right if isinstance(right, tuple) else (right,))
        result = super().call_binop(context, operator, left, right)
        _too_large(_sized(result))
        return result

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_arguments([*args, *kwargs.values()])
        method = getattr(__obj, "__name__", None)
        # The string a method is bound to (the sandbox wraps `str.format` in a function).
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if method == "replace":
            _check_replace(owner, args)
        elif method in ("format", "format_map"):
            _check_format(owner)
        result = super().call(__context, __obj, *args, **kwargs)
        _too_large(_sized(result))
        return result


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' override: Jinja's own escapes HTML characters, which prompts must not get.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """`dict(...)` in a template, without the class's attributes."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace(...)` refusing underscore names, which reach into CPython internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        for name in dict(*rest, **kwargs):
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, *rest, **kwargs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot set underscore attributes on a namespace ({name!r})"
            )


@functools.cache
def _environment() -> BoundedSandbox:
    # The globals and filters of transformers' chat template environment, so templates
    # written for `apply_chat_template` render the same.
    environment = BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.filters = {
        name: _bounded(function, name) for name, function in environment.filters.items()
    }
    environment.filters[_ITERATE] = _iterate
    environment.filters[_JOIN] = _join
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    environment.globals["dict"] = _TemplateDict()
    environment.globals["namespace"] = _TemplateNamespace
    environment.globals["range"] = _bounded(safe_range, "range")
    return environment


@contextlib.contextmanager
def _bounded_by(limits: RenderLimits) -> Iterator[None]:
    now = time.monotonic()
    _current.budget = _Budget(now + limits.timeout_s, limits.max_chars, now + YIELD_EVERY_S)
    try:
        yield
    except RecursionError as exc:
        raise TemplateLimitExceeded("recurses too deeply") from exc
    finally:
        _current.budget = None


class ChatTemplate:
    """A compiled chat template; `render` is safe to call from several threads."""

    def __init__(self, source: str, limits: RenderLimits) -> None:
        self.limits = limits
        # Compiling folds constant expressions (`'x'|center(10**9)`): bounded as a render is.
        # TemplateSyntaxError (a jinja2.TemplateError) for a template that does not parse.
        with _bounded_by(limits):
            self.template = _environment().from_string(source)

    def render(self, messages: Sequence[Mapping[str, str]], **variables: Any) -> str:
        """The rendered prompt. Raises TemplateLimitExceeded past the deadline or the size
        limit, and jinja2.TemplateError for what the template itself refuses."""
        limit = self.limits.max_chars
        with _bounded_by(self.limits):
            parts: list[str] = []
            size = 0
            for part in self.template.generate(messages=[dict(m) for m in messages], **variables):
                size += len(part)
                if size > limit:
                    raise TemplateLimitExceeded(f"renders more than {limit} characters")
                _tick()
                parts.append(part)
            return "".join(parts)
