"""A Jinja sandbox that bounds what an untrusted chat template may cost.

Jinja's sandbox stops templates from reaching Python internals but not from using
resources: `{{ 'a' * 4000000000 }}`, a string doubled in a loop or nested `range` loops
take all memory or run forever. `LimitedSandbox` adds limits on top of Jinja's immutable
sandbox, and `render_limited` enforces the rest while rendering:

- sizes: no string, list or other sized value a template makes may hold more than
  MAX_VALUE_ITEMS items. `*`, `**`, `+` and `%` are checked before they run (the result
  size follows from the operands); a call or filter is refused an integer argument or a
  format width above the limit, and every result of a call, filter or `~` is checked;
- output: rendering stops once the text passes MAX_OUTPUT_CHARS;
- time: rendering stops after RENDER_SECONDS, counted on every line the template's code
  runs (a trace function on the rendering thread, for the template's frames only);
- loops: `range` gives at most Jinja's MAX_RANGE items, and every loop counts against
  the time budget.

What the template is allowed to do at all (attributes, calls) stays Jinja's sandbox's
decision. Errors are `TemplateLimitError`; the chat template module turns every failure
into its own one-line error.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_SOURCE_CHARS = 1 << 20  # the template's own text
MAX_VALUE_ITEMS = 1 << 23  # characters of a string, items of a list, made while rendering
MAX_OUTPUT_CHARS = 1 << 23  # the rendered prompt
RENDER_SECONDS = 2.0
TEMPLATE_FILENAME = "<template>"  # the name Jinja compiles a template from a string under
_CHECK_CLOCK_EVERY = 64  # lines of template code between looks at the clock
# A width or precision in a format string ('{:>N}', '%Nd') that would exceed the size limit.
_FORMAT_NUMBER = re.compile(r"(?:\{[^{}]*?|%[-+ #0]*\.?)(\d{8,})")


class TemplateLimitError(Exception):
    """A template went over one of the limits; the message says which."""


def check_size(value: Any, what: str) -> Any:
    """`value` unless it is a sized value (string, list, dict...) over MAX_VALUE_ITEMS."""
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) and len(value) > MAX_VALUE_ITEMS:
        raise TemplateLimitError(f"{what} made a value of {len(value):,} items (the limit is {MAX_VALUE_ITEMS:,})")
    return value


def _check_arguments(args: tuple, kwargs: dict, what: str) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_ITEMS:
            raise TemplateLimitError(f"{what} was given {value}, above the template size limit of {MAX_VALUE_ITEMS:,}")
        _check_format(value, what)


def _check_format(value: Any, what: str) -> None:
    if isinstance(value, str):
        found = _FORMAT_NUMBER.search(value)
        if found and int(found.group(1)) > MAX_VALUE_ITEMS:
            raise TemplateLimitError(f"{what} uses a format width of {found.group(1)}, above the size limit")


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _predicted_size(operator: str, left: Any, right: Any) -> int:
    """How many items `left <operator> right` would hold (0 when it is not a sequence)."""
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if _length(seq) is not None and isinstance(count, int):
                return _length(seq) * max(count, 0)
    if operator == "+" and _length(left) is not None and _length(right) is not None:
        return _length(left) + _length(right)
    return 0


class _SizeCheckingCodeGenerator(CodeGenerator):
    """Jinja's code generator, with every `~` concatenation's result size checked."""

    def visit_Concat(self, node, frame) -> None:  # noqa: N802 (Jinja's visitor naming)
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the size limits above."""

    code_generator_class = _SizeCheckingCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _limited_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > MAX_VALUE_ITEMS:
                raise TemplateLimitError(f"{left} ** {right} is too large a number")
        if operator == "%":
            _check_format(left, "a '%' format")
        size = _predicted_size(operator, left, right)
        if size > MAX_VALUE_ITEMS:
            raise TemplateLimitError(f"'{operator}' would make a value of {size:,} items (the limit is {MAX_VALUE_ITEMS:,})")
        return check_size(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(__self, __context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        name = getattr(__obj, "__name__", "a call")
        _check_arguments(args, kwargs, f"{name}()")
        bound_to = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format's string
        _check_format(bound_to, f"{name}()")
        return check_size(super().call(__context, __obj, *args, **kwargs), f"{name}()")

    def checked_concat(self, value: Any) -> Any:
        return check_size(value, "'~'")


def _limited_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with its arguments and result checked; Jinja's pass-context markers kept."""

    @functools.wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args[1:], kwargs, f"filter {name!r}")
        _check_format(args[0] if args else None, f"filter {name!r}")
        return check_size(function(*args, **kwargs), f"filter {name!r}")

    return limited


class _Clock:
    """A trace function that stops the template's code once its time is up."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.lines = 0

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering took longer than {self.seconds:g} s")

    def on_call(self, frame, event: str, arg: Any):  # sys.settrace's global trace function
        return self.on_line if frame.f_code.co_filename == TEMPLATE_FILENAME else None

    def on_line(self, frame, event: str, arg: Any):
        if event == "line":
            self.lines += 1
            if self.lines % _CHECK_CLOCK_EVERY == 0:
                self.check()
        return self.on_line


def render_limited(template: jinja2.Template, context: dict[str, Any], seconds: float = RENDER_SECONDS) -> str:
    """`template` rendered with `context`, within the output and time limits."""
    clock = _Clock(seconds)
    previous = sys.gettrace()
    sys.settrace(clock.on_call)
    try:
        parts: list[str] = []
        total = 0
        chunks: Iterator[str] = template.generate(**context)
        try:
            for chunk in chunks:
                total += len(chunk)
                if total > MAX_OUTPUT_CHARS:
                    raise TemplateLimitError(f"the rendered text passed {MAX_OUTPUT_CHARS:,} characters")
                parts.append(chunk)
                clock.check()
        finally:
            chunks.close()
        return "".join(parts)
    finally:
        sys.settrace(previous)
