"""dataprep.render: the same text as transformers' apply_chat_template, and bounded on hostile templates."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataprep.render import Limits, RenderError, render, render_for
from dataprep.template_lint import PROBE_TOOLS
from dataprep.tokenizer import load_tokenizer
from dataprep.trainer import hf_assistant_mask

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
WITH_TEMPLATE = sorted(p.name for p in MODELS.iterdir() if p.name != "no-template")

CONVERSATIONS = {
    "basic": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
    "system_multi": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "1", "reasoning_content": "count"},
        {"role": "user", "content": "Two?"},
        {"role": "assistant", "content": "2"},
    ],
    "prompt_only": [{"role": "user", "content": "Only a question"}],
}


@pytest.fixture(scope="module")
def loaded():
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_tokenizer(str(MODELS / name))
        return cache[name]

    return get


def _hf_text(lt, messages, **kw):
    return lt.tokenizer.apply_chat_template(messages, tokenize=False, **kw)


@pytest.mark.parametrize("name", WITH_TEMPLATE)
@pytest.mark.parametrize("conv", sorted(CONVERSATIONS))
@pytest.mark.parametrize("gen_prompt", [False, True])
def test_same_text_as_transformers(loaded, name, conv, gen_prompt):
    lt = loaded(name)
    messages = CONVERSATIONS[conv]
    tools = PROBE_TOOLS if name == "needs-tools" else None
    try:
        expected = _hf_text(lt, messages, add_generation_prompt=gen_prompt, tools=tools)
    except Exception as err:  # the template raises (no-system, mistral-like): so must we
        with pytest.raises(RenderError) as ours:
            render_for(lt, messages, add_generation_prompt=gen_prompt, tools=tools)
        assert str(err) in str(ours.value)
        return
    assert render_for(lt, messages, add_generation_prompt=gen_prompt, tools=tools).text == expected


def test_generation_spans_give_transformers_assistant_masks(loaded):
    lt = loaded("chatml-gen")
    messages = CONVERSATIONS["system_multi"]
    hf = lt.tokenizer.apply_chat_template(messages, tokenize=True, return_assistant_tokens_mask=True)
    ours = render_for(lt, messages)
    assert len(ours.generation_spans) == 2
    enc = lt.tokenizer(ours.text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == hf["input_ids"]
    assert (
        hf_assistant_mask(len(enc["input_ids"]), ours.generation_spans, enc.encodings[0].char_to_token)
        == hf["assistant_masks"]
    )


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(texts, texts), min_size=1, max_size=3), system=st.none() | texts)
def test_property_same_text_and_masks(loaded, turns, system):
    lt = loaded("chatml-gen")
    messages = [{"role": "system", "content": system}] if system is not None else []
    for u, a in turns:
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    ours = render_for(lt, messages)
    assert ours.text == _hf_text(lt, messages)
    hf = lt.tokenizer.apply_chat_template(messages, tokenize=True, return_assistant_tokens_mask=True)
    enc = lt.tokenizer(ours.text, add_special_tokens=False, return_offsets_mapping=True)
    assert (
        hf_assistant_mask(len(enc["input_ids"]), ours.generation_spans, enc.encodings[0].char_to_token)
        == hf["assistant_masks"]
    )


def test_special_tokens_are_variables(loaded):
    lt = loaded("double-bos")
    assert render_for(lt, CONVERSATIONS["basic"]).text.startswith("<s><|im_start|>user")


def test_helpers_match_transformers():
    with pytest.raises(RenderError, match="nope") as err:
        render("{{ raise_exception('nope') }}", [])
    assert err.value.kind == "raised"
    assert render('{{ {"a": "<b>é"} | tojson }}', []).text == '{"a": "<b>é"}'
    assert render("{{ tools | tojson(indent=2) }}", [], tools=[{"x": 1}]).text == '[\n  {\n    "x": 1\n  }\n]'
    fixed = render(
        "{{ strftime_now('%Y-%m-%d') }}",
        [],
        overrides={"strftime_now": lambda f: datetime(2001, 2, 3).strftime(f)},
    )
    assert fixed.text == "2001-02-03"
    assert render("{{ strftime_now('%Y') }}", []).text == str(datetime.now().year)
    assert render("{% set d = dict(a=1) %}{{ d.a }}", []).text == "1"
    assert (
        render("{% for i in range(3) %}{% if i == 1 %}{% break %}{% endif %}{{ i }}{% endfor %}", []).text
        == "0"
    )


def test_messages_are_passed_as_transformers_5_18_passes_them():
    # AutoModel 0.7.0 pins transformers 5.18.0: no None-valued keys dropped, no reasoning aliases
    t = "{% for m in messages %}{{ m.keys() | list | sort | join(',') }};{{ m.reasoning_content }}|{% endfor %}"
    out = render(t, [{"role": "assistant", "content": "x", "tool_calls": None, "reasoning": "why"}]).text
    assert out == "content,reasoning,role,tool_calls;|"


@pytest.mark.parametrize(
    ("template", "kind"),
    [
        ("{{ raise_exception('no system here') }}", "raised"),
        ("{% for %}", "syntax"),
        ("{{ messages[5].content.upper() }}", "error"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "security"),
        ("{{ cycler.__init__.__globals__.os.system('true') }}", "security"),
        ("{% set ns = namespace(_x=1) %}", "security"),
        ("{{ messages.append(1) }}", "security"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "timeout"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "error"),
        ("{{ 'x' * 10**10 }}", "too_large"),
        ("{{ 7 ** 999999 }}", "too_large"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}",
            "too_large",
        ),
        (
            "{% set x %}{% for i in range(100000) %}{{ 'y' * 10000 }}{% endfor %}{% endset %}{{ x|length }}",
            "too_large",
        ),
        (
            "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "too_large",
        ),
        ("{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('ab') }}", "too_large"),
        ("{{ '{:>9999999999}'.format(1) }}", "too_large"),
        ("{{ '%9999999999s' % 'a' }}", "too_large"),
        ("{{ 'a' | center(9999999999) }}", "too_large"),
        ("{{ 'a'.ljust(9999999999) }}", "too_large"),
        ("{{ lipsum(n=10**8) }}", "too_large"),
        (
            "{% set ns = namespace(s='x') %}{% for i in range(30) %}{% set ns.s = ns.s.replace('x', 'xxxxxxxxx') %}"
            "{% endfor %}",
            "too_large",
        ),
    ],
)
def test_hostile_templates_end_as_render_errors(template, kind):
    with pytest.raises(RenderError) as err:
        # a size bomb must hit the size bound, not the clock: give it time even on a loaded machine
        seconds = 0.5 if kind == "timeout" else 10.0
        render(template, [{"role": "user", "content": "hi"}], limits=Limits(seconds=seconds))
    assert err.value.kind == kind


def test_renders_after_a_timeout_still_work():
    with pytest.raises(RenderError):
        render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            [],
            limits=Limits(seconds=0.2),
        )
    assert render("{{ 'ok' }}", []).text == "ok"
