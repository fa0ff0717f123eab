"""The private transformers and jinja2 APIs measuring leans on: an upgrade that moves one fails here, by name."""

from __future__ import annotations

import pytest

from dataprep import hf_internals


def test_the_private_apis_measuring_uses_still_work():
    hf_internals.check()  # a RuntimeError here names what moved and the installed versions


def test_check_names_what_moved(monkeypatch):
    from transformers.utils import chat_template_utils as ctu

    monkeypatch.delattr(ctu, "_compile_jinja_template")
    with pytest.raises(RuntimeError, match="_compile_jinja_template moved"):
        hf_internals.check()


def test_generate_renders_as_jinja_does():
    compiled = hf_internals.compile_template(
        "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{% endfor %}"
    )
    fast = "".join(
        hf_internals.generate(
            compiled, dict(compiled.globals), {"messages": [{"role": "user"}], "bos_token": "B"}
        )
    )
    assert fast == compiled.render(messages=[{"role": "user"}], bos_token="B") == "B<user>"


def test_backend_of_a_slow_tokenizer_is_refused():
    with pytest.raises(TypeError, match="fast"):
        hf_internals.backend_of(object())
