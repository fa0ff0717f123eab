"""The private APIs of transformers and jinja2 that measuring leans on, in one place.

The trainer renders through transformers' ``render_jinja_template``. ``dataprep.measure`` renders the same way,
only faster, and that needs four things neither library promises to keep:

- ``transformers.utils.chat_template_utils._compile_jinja_template``: the template compiled exactly as
  transformers compiles it (its sandboxed environment, filters and extensions);
- that environment's ``activate_tracker(blocks, spans)`` (transformers' ``AssistantTracker`` extension): the
  ``{% generation %}`` spans of a render;
- ``jinja2.runtime.new_context`` and ``Template.root_render_func``: a render that does not copy the template's
  globals twice per call;
- a fast tokenizer's Rust backend (``backend_tokenizer``; ``_tokenizer`` in older transformers).

``check()`` exercises each of them, so an upgrade that moves one fails ``tests/test_hf_internals.py`` with a
message naming what moved, instead of a count going wrong somewhere else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any


def compile_template(source: str) -> Any:
    """A chat template compiled as transformers compiles it (cached by transformers)."""
    from transformers.utils import chat_template_utils as ctu

    return ctu._compile_jinja_template(source)


def tracking(
    compiled: Any, blocks: list[str], spans: list[tuple[int, int]]
) -> contextlib.AbstractContextManager:
    """While active, ``{% generation %}`` blocks of a render of ``compiled`` append their (start, end) character
    spans to ``spans`` (``blocks``: the text rendered so far, which the tracker measures)."""
    return compiled.environment.activate_tracker(blocks, spans)


def generate(compiled: Any, globals_: Mapping[str, Any], variables: Mapping[str, Any]) -> Iterator[str]:
    """``compiled.generate(**variables)``'s stream of text, with ``globals_`` (a plain copy of the template's
    globals, made once per template) in place of the copy ``Template.new_context`` makes on every call."""
    from jinja2.runtime import new_context

    ctx = new_context(
        compiled.environment, compiled.name, compiled.blocks, {**globals_, **variables}, True, globals_
    )
    return compiled.root_render_func(ctx)


def backend_of(tokenizer_or_loaded: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer (or a ``LoadedTokenizer``)."""
    tok = getattr(tokenizer_or_loaded, "tokenizer", tokenizer_or_loaded)
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise TypeError("measuring needs a fast (tokenizers-backed) tokenizer")
    return backend


def check() -> None:
    """Exercise every private API above; a RuntimeError names the one that moved and the versions installed."""
    import jinja2
    import transformers

    where = f"(transformers {transformers.__version__}, jinja2 {jinja2.__version__})"
    source = "{% for m in messages %}{{ m.content }}{% generation %}[{{ x }}]{% endgeneration %}{% endfor %}"
    try:
        compiled = compile_template(source)
    except AttributeError as err:
        raise RuntimeError(f"transformers' _compile_jinja_template moved {where}: {err}") from err
    try:
        text = "".join(generate(compiled, dict(compiled.globals), {"messages": [{"content": "a"}], "x": 1}))
    except (AttributeError, TypeError) as err:
        raise RuntimeError(f"jinja2's new_context / root_render_func changed {where}: {err}") from err
    if text != "a[1]":
        raise RuntimeError(f"a render through jinja2's internals gave {text!r}, not 'a[1]' {where}")
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    try:
        with tracking(compiled, blocks, spans):
            blocks.extend(
                generate(compiled, dict(compiled.globals), {"messages": [{"content": "a"}], "x": 1})
            )
    except AttributeError as err:
        raise RuntimeError(f"transformers' activate_tracker moved {where}: {err}") from err
    if spans != [(1, 4)]:
        raise RuntimeError(f"the {{% generation %}} tracker gave spans {spans}, not [(1, 4)] {where}")
