"""The piece cache on the generation-tag path, and the one-copy-of-globals renderer: exact, row by row."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_measure import WORDS, _toy_tokenizer, make_conversations, naive_masks, naive_total

from dataprep.measure import (
    Measurer,
    PieceCounter,
    _merge_runs,
    _overlapping_runs,
    make_spec,
    measure_conversations,
)
from dataprep.tokenizer import load_tokenizer

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"


def _mask_rule(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """transformers' assistant mask, token by token: end > span start and start < span end."""
    return [int(any(te > a and ts < b for a, b in spans)) for ts, te in offsets]


def _runs_of(mask: list[int]) -> list[tuple[int, int]]:
    return _merge_runs([(i, i + 1) for i, v in enumerate(mask) if v])


@pytest.mark.parametrize("scheme", ["first", "always", "bytelevel"])
def test_tracked_piece_counts_equal_the_mask_rule_on_whole_texts(scheme):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    tok = _toy_tokenizer(scheme)
    counter = PieceCounter.build(tok)
    assert counter is not None
    atoms = st.sampled_from(["<|end|>", "<|user|>", "<|u|>", "<s>", " ", "\n", "  ", "🙂", "é", *WORDS[:10]])
    text_and_spans = (
        st.lists(atoms, min_size=1, max_size=14)
        .map("".join)
        .flatmap(lambda t: st.tuples(st.just(t), st.lists(st.integers(0, len(t)), max_size=6).map(sorted)))
    )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(text_and_spans, min_size=1, max_size=6))
    def check(items):
        texts = [t for t, _ in items]
        spans = [list(zip(p[::2], p[1::2], strict=False)) for _, p in items]
        got = counter.count_tracked(texts, spans)
        for text, sp, g in zip(texts, spans, got, strict=True):
            enc = tok.encode(text, add_special_tokens=False)
            if g is None:  # only where a span edge falls on an added token that took whitespace
                continue
            mask = _mask_rule(enc.offsets, sp)
            assert g == (len(enc), _runs_of(mask)), (text, sp)
            assert g[1] == _merge_runs(_overlapping_runs(enc.offsets, sp))
        # a second call answers from the cache: the same numbers
        assert counter.count_tracked(texts, spans) == got

    check()


def test_texts_without_whitespace_taking_added_tokens_are_always_counted():
    tok = _toy_tokenizer("bytelevel")
    counter = PieceCounter.build(tok)
    text = "<|u|>hello there<s>general kenobi<|u|>"
    spans = [(0, 5), (5, 10), (14, 25), (len(text) - 5, len(text))]
    (got,) = counter.count_tracked([text], [spans])
    enc = tok.encode(text, add_special_tokens=False)
    assert got == (len(enc), _runs_of(_mask_rule(enc.offsets, spans)))


def _with_shared_system(convs: list[dict], words: int = 300) -> list[dict]:
    system = " ".join(random.Random(7).choice(WORDS) for _ in range(words))
    out = []
    for c in convs:
        msgs = [m for m in c["messages"] if m["role"] != "system"]
        out.append({**c, "messages": [{"role": "system", "content": system}, *msgs]})
    return out


@pytest.fixture(scope="module")
def gen_tok():
    return load_tokenizer(str(MODELS / "chatml-gen"))


def test_generation_tags_through_the_piece_cache_equal_transformers_for_every_row(gen_tok):
    tok = gen_tok.tokenizer
    convs = _with_shared_system(make_conversations(90, seed=3))
    m = Measurer(make_spec(gen_tok), tok.backend_tokenizer)
    m.count_batch(m.render_batch(convs[:32]))
    assert m.piece_cache_active  # the shared prompt makes it pay, and the first batch agreed

    counts = measure_conversations(list(enumerate(convs, 1)), gen_tok, batch_rows=32)
    assert counts.mask_source == "generation_tags"
    assert counts.total.tolist() == [naive_total(tok, c) for c in convs]
    masks = [naive_masks(tok, c) for c in convs]
    assert counts.supervised.tolist() == [sum(x) for x in masks]
    first = counts.first_supervised()
    for i, x in enumerate(masks):
        assert first[i] == (x.index(1) if 1 in x else len(x))
    for cut in (1, 60, 400, 700):
        assert counts.supervised_kept(cut).tolist() == [sum(x[:cut]) for x in masks]
    without = measure_conversations(list(enumerate(convs, 1)), gen_tok, batch_rows=32, piece_cache=False)
    for name in ("total", "supervised", "run_row", "run_start", "run_end"):
        assert getattr(counts, name).tolist() == getattr(without, name).tolist(), name


def test_generation_tags_skip_the_piece_cache_when_rows_share_no_text(gen_tok):
    # Every row's text is its own: the pieces with a span edge need offsets anyway, whole texts are cheaper.
    convs = make_conversations(32, seed=5, rich=False)
    for c in convs:
        c["messages"] = [m for m in c["messages"] if m["role"] != "system"]
    m = Measurer(make_spec(gen_tok), gen_tok.tokenizer.backend_tokenizer)
    bc = m.count_batch(m.render_batch(convs))
    assert not m.piece_cache_active
    tok = gen_tok.tokenizer
    assert bc.supervised.tolist() == [sum(naive_masks(tok, c)) for c in convs]


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.iterdir() if p.name != "no-template"))
def test_renderer_gives_the_text_and_spans_transformers_gives(name):
    from transformers.utils import chat_template_utils as ctu

    loaded = load_tokenizer(str(MODELS / name))
    tok = loaded.tokenizer
    m = Measurer(make_spec(loaded), tok.backend_tokenizer)
    for conv in make_conversations(15, seed=11):
        try:
            expected = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), tokenize=False)
        except Exception as err:  # noqa: BLE001 - the same error must come out of ours
            with pytest.raises(type(err)):
                m._render(*m._prepare(conv))
            continue
        messages, tools = m._prepare(conv)
        assert m._render(messages, tools) == expected
        compiled = m._compiled if tools is None else m._compiled_tools
        assert m._render_tracked(messages, tools) == ctu._render_with_assistant_indices(
            compiled_template=compiled,
            messages=messages,
            tools=tools,
            documents=None,
            add_generation_prompt=False,
            **m._kwargs,
        )
