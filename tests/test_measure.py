"""Per-row token counts equal what the trainer's own transformers calls give, row by row."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from dataprep.measure import TokenCounts, _overlapping_runs, count_naive, measure_conversations
from dataprep.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent

MODELS = ROOT / "fixtures" / "models"
WORDS = (
    "the quick brown fox jumps over lazy dog weather Paris spider legs tea milk sugar sea waves "
    "tokens model answer question ünïcode 数据 émoji 🙂 <think> <|im_end|>"
).split()

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_conversations(n: int, seed: int = 0, *, rich: bool = True) -> list[dict]:
    """Varied valid conversations: system prompts, several turns, tools and tool calls, reasoning."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        msgs: list[dict] = []
        conv: dict = {"messages": msgs}
        if rng.random() < 0.4:
            msgs.append({"role": "system", "content": _text(rng, 1, 12)})
        for _turn in range(rng.randint(1, 3)):
            msgs.append({"role": "user", "content": _text(rng, 1, 30)})
            if rich and rng.random() < 0.2:
                conv["tools"] = [TOOL]
                msgs.append(
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            }
                        ],
                    }
                )
                msgs.append({"role": "tool", "tool_call_id": "call_1", "content": _text(rng, 1, 8)})
            answer: dict = {"role": "assistant", "content": _text(rng, 1, 60)}
            if rich and rng.random() < 0.2:
                answer["reasoning_content"] = _text(rng, 1, 10)
            msgs.append(answer)
        out.append(conv)
    return out


def naive_total(tok, conv) -> int:
    return len(tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), tokenize=True)["input_ids"])


def naive_masks(tok, conv) -> list[int]:
    out = tok.apply_chat_template(
        conv["messages"],
        tools=conv.get("tools"),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    return list(out["assistant_masks"])


@pytest.fixture(scope="module")
def convs() -> list[dict]:
    return make_conversations(120)


@pytest.fixture(scope="module")
def gen_tok():
    return load_tokenizer(str(MODELS / "chatml-gen"))


def measured(conversations, loaded, **kw) -> TokenCounts:
    return measure_conversations(list(enumerate(conversations, start=1)), loaded, batch_rows=32, **kw)


def test_generation_tags_equal_transformers_for_every_row(convs, gen_tok):
    tok = gen_tok.tokenizer
    counts = measured(convs, gen_tok)
    assert counts.mask_source == "generation_tags"
    assert counts.rows.tolist() == list(range(1, len(convs) + 1))
    assert counts.total.tolist() == [naive_total(tok, c) for c in convs]
    masks = [naive_masks(tok, c) for c in convs]
    assert counts.supervised.tolist() == [sum(m) for m in masks]
    assert counts.turns.tolist() == [sum(m["role"] == "assistant" for m in c["messages"]) for c in convs]
    # The supervised runs sit exactly where the assistant mask has its ones.
    first = counts.first_supervised()
    for i, m in enumerate(masks):
        assert first[i] == (m.index(1) if 1 in m else len(m))
    for cut in (1, 17, 40, 100):  # labels: positions 1..cut-1 after the shift
        assert counts.supervised_kept(cut).tolist() == [sum(m[1:cut]) for m in masks]


def _untagged(template: str) -> str:
    return template.replace("{% generation %}", "").replace("{% endgeneration %}", "")


@pytest.mark.parametrize(
    "name",
    ["chatml", "double-bos", "default-system", "no-eos", "plain-markers", "think-strip", "mistral-like"],
)
@pytest.mark.parametrize("mgp", [False, True])
def test_prefix_masking_equals_the_trainer_model_on_transformers_calls(name, mgp, convs):
    loaded = load_tokenizer(str(MODELS / name))
    if loaded.has_generation_tags:  # the same template without its tags: AutoModel masks by prefixes
        loaded = load_tokenizer(str(MODELS / name), chat_template=_untagged(loaded.template))
    tok = loaded.tokenizer
    sample = convs[:40]
    counts = measured(sample, loaded, mask_generation_prompt=mgp)
    assert counts.mask_source == ("prefix_without_header" if mgp else "prefix_with_header")
    rejected = {r for r, _, _ in counts.rejected}
    unmaskable = set(counts.rows[counts.unmaskable()].tolist())
    at = {r: k for k, r in enumerate(counts.rows.tolist())}
    for row, c in enumerate(sample, start=1):
        try:
            want = count_naive(tok, c, mask_generation_prompt=mgp)
        except Exception:  # noqa: BLE001 - the trainer raises: dataprep must say so
            assert row in rejected or row in unmaskable, row
            continue
        assert row not in unmaskable and row not in rejected
        k = at[row]
        assert (int(counts.total[k]), int(counts.supervised[k])) == want, row
    if name == "think-strip":
        assert unmaskable  # multi-turn rows with reasoning cannot be masked by prefixes


def test_auto_picks_prefix_masking_without_tags(convs):
    assert measured(convs[:5], load_tokenizer(str(MODELS / "chatml"))).mask_source == "prefix_with_header"


def test_prefix_without_header_equals_tags_covering_the_whole_turn(convs):
    # ChatML whose generation block spans everything after the assistant header, separator included.
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
        "{% generation %}{{ m.content }}<|im_end|>\n{% endgeneration %}"
        "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tagged = load_tokenizer(str(MODELS / "chatml"), chat_template=template)
    plain_tpl = load_tokenizer(str(MODELS / "chatml"), chat_template=_untagged(template))
    plain = make_conversations(60, seed=3, rich=False)
    by_mask = measured(plain, tagged)
    by_prefix = measured(plain, plain_tpl, mask_generation_prompt=True)
    with_header = measured(plain, plain_tpl)
    assert by_mask.mask_source == "generation_tags"
    assert by_mask.supervised.tolist() == by_prefix.supervised.tolist()
    assert by_mask.total.tolist() == by_prefix.total.tolist()
    assert by_mask.first_supervised().tolist() == by_prefix.first_supervised().tolist()
    # AutoModel's default trains the header "<|im_start|>assistant\n" too: 3 tokens a turn more here
    header = len(plain_tpl.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False))
    assert (with_header.supervised - by_prefix.supervised).tolist() == (header * by_mask.turns).tolist()


def test_rows_the_template_cannot_render_are_reported_not_counted():
    loaded = load_tokenizer(str(MODELS / "no-system"))
    convs = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        },
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ]
    counts = measure_conversations([(10, convs[0]), (11, convs[1]), (12, convs[2])], loaded)
    assert counts.rows.tolist() == [10, 12]
    assert [r for r, _ in counts.render_errors] == [11]
    assert counts.render_errors[0][1]  # the template's own message


def test_rows_are_read_as_chat_dataset_reads_them(gen_tok):
    import json

    tok = gen_tok.tokenizer
    msgs = [{"role": "user", "content": "weather in Paris?"}, {"role": "assistant", "content": "sunny"}]
    as_string = {"messages": msgs, "tools": json.dumps([TOOL])}
    empty_tools = {"messages": msgs, "tools": []}  # ChatDataset passes None
    none_calls = {"messages": [msgs[0], {**msgs[1], "tool_calls": None}]}  # ChatDataset raises
    counts = measured([as_string, empty_tools, none_calls], gen_tok)
    reference = {"messages": msgs, "tools": [TOOL]}
    assert counts.total.tolist() == [naive_total(tok, reference), naive_total(tok, {"messages": msgs})]
    assert counts.supervised.tolist() == [
        sum(naive_masks(tok, reference)),
        sum(naive_masks(tok, {"messages": msgs})),
    ]
    assert [(r, c) for r, c, _ in counts.rejected] == [(3, "invalid_tool_call")]


def test_count_naive_matches_the_batched_path(convs, gen_tok):
    counts = measured(convs[:10], gen_tok)
    assert [count_naive(gen_tok.tokenizer, c) for c in convs[:10]] == list(
        zip(counts.total.tolist(), counts.supervised.tolist(), strict=True)
    )


def _pool_from_the_start(monkeypatch) -> list:
    """Make the pool take every batch: wait for its workers instead of measuring here meanwhile."""
    from concurrent.futures import wait

    from dataprep import measure

    used = []
    real = measure._Pool.serving

    def serving(self, rows):
        real(self, rows)
        if self._executor is not None:
            wait(self._ready)
            used.append(rows)
        return self._executor is not None

    monkeypatch.setattr(measure._Pool, "serving", serving)
    return used


@pytest.mark.parametrize("name", ["chatml-gen", "chatml"])
def test_worker_processes_give_the_same_counts(name, convs, monkeypatch):
    loaded = load_tokenizer(str(MODELS / name))
    if name == "chatml":
        loaded = load_tokenizer(str(MODELS / name), chat_template=_untagged(loaded.template))
    one = measured(convs, loaded)
    used = _pool_from_the_start(monkeypatch)
    two = measured(convs, loaded, workers=2)
    assert sum(used) == len(convs)  # every row went to the workers
    for name in (
        "rows",
        "total",
        "supervised",
        "turns",
        "run_row",
        "run_start",
        "run_end",
        "unmaskable_from",
    ):
        assert getattr(one, name).tolist() == getattr(two, name).tolist(), name
    assert one.rejected == two.rejected


def test_auto_workers_measure_here_below_the_threshold_and_bring_in_the_pool_above(convs, monkeypatch):
    from dataprep import measure

    loaded = load_tokenizer(str(MODELS / "chatml-gen"))
    one = measured(convs, loaded)
    monkeypatch.setattr(measure, "available_cores", lambda: 2)
    started = []
    real_start = measure._Pool._start
    monkeypatch.setattr(measure._Pool, "_start", lambda self: started.append(1) or real_start(self))
    small = measured(convs, loaded, workers="auto")
    assert not started  # 120 rows: no pool
    monkeypatch.setattr(measure, "AUTO_POOL_ROWS", 64)
    used = _pool_from_the_start(monkeypatch)
    big = measured(convs, loaded, workers="auto")
    assert started and 0 < sum(used) < len(convs)  # the first rows here, the rest in the pool
    for counts in (small, big):
        assert counts.total.tolist() == one.total.tolist()
        assert counts.supervised.tolist() == one.supervised.tolist()


def test_workers_must_be_a_count_or_auto():
    from dataprep.measure import resolve_workers

    assert resolve_workers(3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        resolve_workers(-1)


def test_counts_are_compact_int32(convs, gen_tok):
    counts = measured(convs[:5], gen_tok)
    assert counts.total.dtype == np.int32 and counts.supervised.dtype == np.int32


def test_overlapping_runs_follow_the_transformers_mask_rule():
    # tokens: [0,3) [3,5) [5,5) [5,9) [9,12); spans overlap tokens by the rule end > a and start < b
    offsets = [(0, 3), (3, 5), (5, 5), (5, 9), (9, 12)]

    def reference(spans):
        mask = [0] * len(offsets)
        for i, (ts, te) in enumerate(offsets):
            if any(te > a and ts < b for a, b in spans):
                mask[i] = 1
        return sum(mask)

    for spans in ([(4, 6)], [(3, 5)], [(0, 12)], [(5, 5)], [(2, 4), (4, 10)], [(12, 12)], [(1, 2), (2, 3)]):
        runs = _overlapping_runs(offsets, spans)
        assert sum(hi - lo for lo, hi in runs) == reference(spans), spans


# -- the piece counter: text between added tokens counted once per distinct piece --------------------------------
def _toy_tokenizer(scheme: str):
    """A small BPE with Metaspace (Llama/Phi-3 style) or ByteLevel, and added tokens that strip whitespace."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>" if scheme != "bytelevel" else None, byte_fallback=False))
    if scheme == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme, split=scheme == "always")
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], initial_alphabet=alphabet)
    tok.train_from_iterator([" ".join(WORDS) * 3, "hello there general kenobi \n\n tab\tbed"], trainer)
    tok.add_special_tokens(
        [
            AddedToken("<|end|>", rstrip=True, special=True, normalized=False),
            AddedToken("<|user|>", lstrip=True, special=True, normalized=False),
            AddedToken("<|u|>", special=True, normalized=False),
            AddedToken("<s>", special=True, normalized=False),
        ]
    )
    return tok


@pytest.mark.parametrize("scheme", ["first", "always", "bytelevel"])
def test_piece_counter_equals_whole_text_encoding(scheme):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dataprep.measure import PieceCounter

    tok = _toy_tokenizer(scheme)
    counter = PieceCounter.build(tok)
    assert counter is not None
    atoms = st.sampled_from(
        ["<|end|>", "<|user|>", "<|u|>", "<s>", " ", "\n", "\t", "  ", "\u3000", "\x1c", *WORDS]
    )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.lists(atoms, max_size=12).map("".join), min_size=1, max_size=8))
    def check(texts):
        direct = [len(e) for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
        assert counter.count(texts) == direct

    check()


def test_measurer_uses_the_piece_counter_on_the_fixtures_and_agrees_without_it():
    from dataprep.measure import Measurer, make_spec

    loaded = load_tokenizer(str(MODELS / "chatml"))
    m = Measurer(make_spec(loaded), loaded.tokenizer.backend_tokenizer)
    convs = make_conversations(40, seed=9)
    m.count_batch(m.render_batch(convs))
    assert m.piece_cache_active  # verified on that first batch
    with_cache = measured(convs, loaded)
    without = measured(convs, loaded, piece_cache=False)
    assert with_cache.total.tolist() == without.total.tolist()
    assert with_cache.supervised.tolist() == without.supervised.tolist()


@pytest.mark.parametrize("scheme", ["first", "bytelevel"])
def test_mask_runs_equal_transformers_char_to_token_rule(scheme):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dataprep.measure import _hf_runs
    from dataprep.trainer import hf_assistant_mask

    tok = _toy_tokenizer(scheme)
    atoms = st.sampled_from(["<|end|>", "<|user|>", " ", "\n", "🙂", "数据", "é", *WORDS[:8]])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(atoms, min_size=1, max_size=15).map("".join), st.lists(st.integers(0, 80), max_size=6))
    def check(text, cuts):
        enc = tok.encode(text, add_special_tokens=False)
        points = sorted(min(c, len(text)) for c in cuts)
        spans = [(a, b) for a, b in zip(points[::2], points[1::2], strict=False) if b > a]
        mask = [0] * len(enc)
        for lo, hi in _hf_runs(enc, spans):
            mask[lo:hi] = [1] * (hi - lo)
        assert mask == hf_assistant_mask(len(enc), spans, enc.char_to_token)

    check()


@pytest.mark.parametrize(
    "name", ["chatml", "double-bos", "default-system", "plain-markers", "mistral-like", "think-strip"]
)
@pytest.mark.parametrize("mgp", [False, True])
def test_aligned_prefix_rows_count_like_full_token_ids(name, mgp, convs, monkeypatch):
    """The shortcut for renders that line up at added-token boundaries gives what masking on ids gives."""
    from dataprep.measure import Measurer

    loaded = load_tokenizer(str(MODELS / name))
    if loaded.has_generation_tags:
        loaded = load_tokenizer(str(MODELS / name), chat_template=_untagged(loaded.template))
    sample = convs[:60]
    calls = []
    real = Measurer._align
    monkeypatch.setattr(Measurer, "_align", lambda self, *a: calls.append(r := real(self, *a)) or r)
    fast = measured(sample, loaded, mask_generation_prompt=mgp)
    monkeypatch.setattr(Measurer, "_align", lambda self, *a: None)
    exact = measured(sample, loaded, mask_generation_prompt=mgp)
    for field in ("rows", "total", "supervised", "run_row", "run_start", "run_end", "unmaskable_from"):
        assert getattr(fast, field).tolist() == getattr(exact, field).tolist(), field
    assert fast.rejected == exact.rejected
    if name in ("chatml", "default-system"):
        assert any(c is not None for c in calls)  # ChatML lines up: the shortcut is taken


@pytest.mark.real
@pytest.mark.parametrize("mgp", [False, True])
def test_aligned_shortcut_on_real_tokenizers(real_dir, mgp, monkeypatch):
    from dataprep.measure import Measurer

    convs = list(enumerate(make_conversations(150, seed=7), start=1))
    for folder in sorted((real_dir / "tokenizers").iterdir()):
        loaded = load_tokenizer(str(folder))
        fast = measure_conversations(convs, loaded, mask_generation_prompt=mgp)
        with monkeypatch.context() as m:
            m.setattr(Measurer, "_align", lambda self, *a: None)
            exact = measure_conversations(convs, loaded, mask_generation_prompt=mgp)
        for field in ("rows", "total", "supervised", "run_start", "run_end", "unmaskable_from"):
            assert getattr(fast, field).tolist() == getattr(exact, field).tolist(), (folder.name, field)


def test_a_worker_that_dies_costs_time_not_counts(convs, monkeypatch):
    """A worker killed mid-run (the OOM killer): its chunks and the rest are measured in this process."""
    import os
    import signal
    from concurrent.futures import wait

    from dataprep import measure

    loaded = load_tokenizer(str(MODELS / "chatml-gen"))
    one = measured(convs, loaded)
    real = measure._Pool.serving
    killed = []

    def serving(self, rows):
        real(self, rows)
        wait(self._ready)
        if not killed:
            pid = next(iter(self._executor._processes))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return True

    monkeypatch.setattr(measure._Pool, "serving", serving)
    monkeypatch.setattr(measure, "WORKER_BATCH_ROWS", 32)
    two = measured(convs, loaded, workers=3)
    assert killed
    for name in ("rows", "total", "supervised", "turns", "run_row", "run_start", "run_end"):
        assert getattr(one, name).tolist() == getattr(two, name).tolist(), name


def test_a_pool_that_breaks_before_a_submit_costs_time_not_counts(convs, monkeypatch):
    """submit itself raises once the pool is broken (a worker that could not start, or died between chunks)."""
    from concurrent.futures.process import BrokenProcessPool

    from dataprep import measure

    loaded = load_tokenizer(str(MODELS / "chatml-gen"))
    one = measured(convs, loaded)

    def broken(self, convs):
        raise BrokenProcessPool("a worker died")

    monkeypatch.setattr(measure._Pool, "serving", lambda self, rows: True)
    monkeypatch.setattr(measure._Pool, "submit", broken)
    monkeypatch.setattr(measure, "WORKER_BATCH_ROWS", 32)
    two = measured(convs, loaded, workers=2)
    for name in ("rows", "total", "supervised", "turns", "run_row", "run_start", "run_end"):
        assert getattr(one, name).tolist() == getattr(two, name).tolist(), name
