"""Render chat templates the way transformers does, in a sandbox with bounds on time, output and work.

Chat templates are untrusted code. transformers renders them in jinja2's ``ImmutableSandboxedEnvironment``
(``trim_blocks``, ``lstrip_blocks``, the ``{% generation %}`` extension, ``loopcontrols``, ``raise_exception``,
``strftime_now``, a ``tojson`` that does not HTML-escape, a restricted ``dict`` and ``namespace``), with the
tokenizer's special tokens (``bos_token``...) as variables. ``render`` does the same, so its text equals
``tokenizer.apply_chat_template(tokenize=False)`` (tests compare them), and adds bounds the sandbox lacks:

- *time*: the render runs in a worker thread; past ``Limits.seconds`` the thread gets an asynchronous
  ``RenderTimeout`` (``PyThreadState_SetAsyncExc``), which stops any Python-level loop at its next bytecode;
- *output*: the streamed output (``Template.generate``) stops past ``Limits.max_chars``;
- *work*: ``*``, ``**``, ``+`` and ``%`` are intercepted, and so are calls, filters and namespace stores, so a
  template cannot build a gigabyte string in one step (``'x' * 10**10``, ``'{:>9999999999}'.format(1)``,
  ``ns.s = ns.s ~ ns.s`` doubled in a loop): each is refused before allocating, and all intermediate strings
  count against ``Limits.max_work``.

Every failure is a ``RenderError`` with a ``kind``: ``syntax``, ``raised`` (the template called
``raise_exception``), ``error`` (any other exception), ``security`` (the sandbox refused), ``timeout``,
``too_large``. The linter turns them into ``template_render_error`` findings.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["Limits", "RenderError", "Rendered", "compile_template", "render", "render_for"]


@dataclass(frozen=True)
class Limits:
    """Bounds for one render."""

    seconds: float = 2.0
    max_chars: int = 2_000_000  # rendered text
    max_work: int = 32_000_000  # chars of intermediate strings/lists built by operators, calls and filters
    max_size_arg: int = 100_000  # widths and counts passed to center/ljust/indent/truncate/lipsum...


DEFAULT_LIMITS = Limits()


class RenderError(Exception):
    """A template that did not render; ``kind`` says why (see the module docstring)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class RenderTimeout(BaseException):
    """Raised asynchronously inside a render thread that ran past its time limit (BaseException so a template's
    own ``except Exception`` in a filter cannot swallow it)."""


class _TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Rendered:
    """Rendered text and the character spans the template marked with ``{% generation %}``."""

    text: str
    generation_spans: tuple[tuple[int, int], ...] = ()


# ------------------------------------------------------------------------------------------------
# Per-render state (a ContextVar set in the worker thread)
# ------------------------------------------------------------------------------------------------


@dataclass
class _State:
    limits: Limits
    deadline: float
    emitted: int = 0  # chars yielded by generate() so far
    work: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)


_STATE: ContextVar[_State | None] = ContextVar("dataprep_render_state", default=None)


def _charge(value: Any) -> Any:
    """Count a value built by the template against the work budget; refuse it past the bounds."""
    st = _STATE.get()
    if st is None:
        return value
    if isinstance(value, (str, list, tuple, dict)):
        n = len(value)
        if n > st.limits.max_chars:
            raise _TooLarge(f"a value of {n:,} items/chars (limit {st.limits.max_chars:,})")
        st.work += n
        if st.work > st.limits.max_work:
            raise _TooLarge(f"the template built over {st.limits.max_work:,} chars of intermediate values")
    if time.monotonic() > st.deadline:
        raise RenderTimeout()
    return value


def _check_size(n: Any, what: str) -> None:
    st = _STATE.get()
    limit = st.limits.max_size_arg if st is not None else DEFAULT_LIMITS.max_size_arg
    if isinstance(n, int) and not isinstance(n, bool) and n > limit:
        raise _TooLarge(f"{what} {n:,} is over the limit {limit:,}")


_BIG_FORMAT = re.compile(r"\d{6,}")


def _check_format_string(s: Any) -> None:
    # widths/precisions in %-format or str.format specs: '%9999999s', '{:>9999999}'
    if isinstance(s, str):
        for spec in re.findall(r"%[-+ #0*]*[\d.]+[a-zA-Z]|\{[^{}]*\}", s):
            if _BIG_FORMAT.search(spec):
                raise _TooLarge(f"format spec {spec[:40]!r} asks for a huge width")


def _check_concat_size(a: Any, b: Any) -> None:
    st = _STATE.get()
    limit = st.limits.max_chars if st is not None else DEFAULT_LIMITS.max_chars
    if isinstance(a, (str, list, tuple)) and isinstance(b, (str, list, tuple)) and len(a) + len(b) > limit:
        raise _TooLarge(f"a concatenation of {len(a) + len(b):,} items")


# ------------------------------------------------------------------------------------------------
# The environment (mirrors transformers' _cached_compile_jinja_template, plus the bounds)
# ------------------------------------------------------------------------------------------------


class _GenerationTracker(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: records the span of output it wraps, as transformers does."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

    def _generation(self, caller: Callable[[], str]) -> str:
        rv = caller()
        st = _STATE.get()
        if st is not None:
            st.spans.append((st.emitted, st.emitted + len(rv)))
        return rv


def _raise_exception(message: Any) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
):
    _check_size(indent, "tojson indent")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """``dict(...)`` without access to the real type (as transformers)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return _charge(dict(*args, **kwargs))

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return _charge(dict.fromkeys(*args, **kwargs))


class _Namespace(jinja2.utils.Namespace):
    """``namespace(...)`` that rejects underscore names (as transformers) and counts what is stored."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        _charge(value)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"a namespace cannot store underscore-prefixed names ({name!r})"
            )


_SIZE_FILTERS = {"center", "indent", "truncate", "wordwrap", "batch", "slice"}
_SIZE_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs"}


def _bounded_filter(name: str, f: Callable) -> Callable:
    @wraps(f)  # keeps jinja_pass_arg (pass_context / pass_environment...)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if name in _SIZE_FILTERS:
            for a in (*args[1:], *kwargs.values()):
                _check_size(a, f"the {name} filter's argument")
        if name == "format":
            for a in args:
                if isinstance(a, str):
                    _check_format_string(a)
                    break
        return _charge(f(*args, **kwargs))

    return wrapper


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                    st = _STATE.get()
                    limit = st.limits.max_chars if st else DEFAULT_LIMITS.max_chars
                    if len(seq) * n > limit:
                        raise _TooLarge(f"'*' would build {len(seq) * n:,} items")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                if left.bit_length() * right > 100_000:
                    raise _TooLarge(f"'**' would build a {left.bit_length() * right:,}-bit number")
        elif operator == "+":
            _check_concat_size(left, right)
        elif operator == "%":
            _check_format_string(left)
        return _charge(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        owner = getattr(__obj, "__self__", None)
        if owner is None:
            owner = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in _SIZE_METHODS:
                for a in (*args, *kwargs.values()):
                    _check_size(a, f"str.{name} argument")
            elif name in ("format", "format_map"):
                _check_format_string(owner)
        for a in (*args, *kwargs.values()):
            if isinstance(a, str):
                _charge(a)
        return _charge(super().call(__context, __obj, *args, **kwargs))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    from jinja2.utils import generate_lorem_ipsum

    _check_size(n * max, "lipsum size")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


@lru_cache(maxsize=64)
def _environment() -> _BoundedEnvironment:
    env = _BoundedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _Namespace
    env.globals["lipsum"] = _lipsum
    return env


@lru_cache(maxsize=256)
def compile_template(template: str) -> jinja2.Template:
    """The compiled template (cached); RenderError(kind="syntax") when it does not parse."""
    try:
        return _environment().from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as err:
        raise RenderError("syntax", f"line {err.lineno}: {err.message}") from err
    except Exception as err:  # anything else the parser raises on hostile input
        raise RenderError("syntax", f"{type(err).__name__}: {err}") from err


# ------------------------------------------------------------------------------------------------
# Inputs (as transformers prepares them)
# ------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-native copy: the template sees only plain types (as transformers' _plain_template_data)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def prepare_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain copies of the messages: transformers 5.18 (what AutoModel 0.7.0 pins) hands them to the template
    as they are, None-valued keys included and no reasoning aliases."""
    return [{k: _plain(v) for k, v in m.items()} for m in messages]


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


def _render_in_thread(fn: Callable[[], Rendered], limits: Limits) -> Rendered:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the caller below
            box["error"] = err

    worker = threading.Thread(target=target, name="dataprep-render", daemon=True)
    worker.start()
    worker.join(limits.seconds + 0.05)
    if worker.is_alive():
        # Stop the worker at its next bytecode; a worker stuck inside one C call is left behind (daemon).
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(worker.ident), ctypes.py_object(RenderTimeout)
        )
        worker.join(0.5)
        raise RenderError("timeout", f"rendering did not finish within {limits.seconds:g} s")
    if "error" in box:
        raise _classify(box["error"], limits)
    return box["value"]


def _classify(err: BaseException, limits: Limits) -> RenderError:
    if isinstance(err, RenderError):
        return err
    if isinstance(err, RenderTimeout):
        return RenderError("timeout", f"rendering did not finish within {limits.seconds:g} s")
    if isinstance(err, (_TooLarge, MemoryError)):
        return RenderError("too_large", f"the rendering grew too large: {err}")
    if isinstance(err, jinja2.exceptions.SecurityError):
        return RenderError("security", f"the sandbox refused: {err}")
    if type(err) is jinja2.exceptions.TemplateError:  # raise_exception(...)
        return RenderError("raised", str(err))
    if isinstance(err, RecursionError):
        return RenderError("error", "the template recursed too deeply")
    return RenderError("error", f"{type(err).__name__}: {err}")


def render(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    variables: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Rendered:
    """Render ``messages`` like ``apply_chat_template(tokenize=False)``, within ``limits``.

    ``variables`` are the extra template variables transformers passes (the special tokens map); ``overrides``
    replace globals such as ``strftime_now`` (used by the linter to pin the date). Raises RenderError.
    """
    msgs = prepare_messages(messages)
    tool_list = None if tools is None else [_plain(t) for t in tools]
    context = {k: _plain(v) for k, v in (variables or {}).items()}
    context.update(overrides or {})

    def work() -> Rendered:
        st = _State(limits=limits, deadline=time.monotonic() + limits.seconds)
        token = _STATE.set(st)
        try:
            compiled = compile_template(template)  # in the worker too: the parser sees hostile text
            chunks: list[str] = []
            for chunk in compiled.generate(
                messages=msgs,
                tools=tool_list,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **context,
            ):
                chunks.append(chunk)
                st.emitted += len(chunk)
                if st.emitted > limits.max_chars:
                    raise _TooLarge(f"over {limits.max_chars:,} chars of output")
                if time.monotonic() > st.deadline:
                    raise RenderTimeout()
            return Rendered("".join(chunks), tuple(st.spans))
        finally:
            _STATE.reset(token)

    return _render_in_thread(work, limits)


def render_for(
    loaded: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    overrides: Mapping[str, Any] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Rendered:
    """``render`` with a LoadedTokenizer's template and special tokens (what apply_chat_template passes).

    With tools, the template transformers picks: a named ``tool_use`` template when the tokenizer has one.
    """
    if loaded.template is None:
        raise RenderError("error", "the tokenizer has no chat template")
    template = loaded.template
    if tools is not None and isinstance(getattr(loaded.tokenizer, "chat_template", None), dict):
        template = loaded.tokenizer.get_chat_template(None, tools)
    return render(
        template,
        messages,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        variables=dict(loaded.tokenizer.special_tokens_map),
        overrides=overrides,
        limits=limits,
    )
