"""Incremental prefixes (dataprep.measure): each prefix render read off the whole's render, never a different count.

Prefix masking renders every prefix of a conversation; a template that reads ``messages`` once, front to back,
writes each prefix as the whole's first characters plus a closing text. The measurer learns that on the first
rows (rendering every prefix and comparing) and afterwards renders the whole once. These tests hold the counts
to rendering every prefix, on templates where the shortcut applies, where it must switch itself off for the run,
and where single rows must be rendered because the template reads the list some other way.
"""

from __future__ import annotations

import pytest

from dataprep.measure import Measurer, count_naive, make_spec, measure_conversations
from dataprep.tokenizer import load_tokenizer
from tests.test_measure import MODELS, _untagged, make_conversations

FIELDS = ("rows", "total", "supervised", "turns", "run_row", "run_start", "run_end", "unmaskable_from")


def _loaded(name: str, template: str | None = None):
    loaded = load_tokenizer(str(MODELS / name), chat_template=template)
    if template is None and loaded.has_generation_tags:
        loaded = load_tokenizer(str(MODELS / name), chat_template=_untagged(loaded.template))
    return loaded


def _both(convs, loaded, monkeypatch, **kw):
    """(incremental, every prefix rendered) counts of the same rows."""
    rows = list(enumerate(convs, start=1))
    fast = measure_conversations(rows, loaded, batch_rows=16, **kw)
    with monkeypatch.context() as m:
        m.setattr("dataprep.measure._reads_messages_in_order", lambda spec: False)
        slow = measure_conversations(rows, loaded, batch_rows=16, **kw)
    return fast, slow


def _same(fast, slow) -> None:
    for name in FIELDS:
        assert getattr(fast, name).tolist() == getattr(slow, name).tolist(), name
    assert fast.rejected == slow.rejected


def _used(loaded, convs, **kw) -> Measurer:
    """A measurer after three batches of ``convs``: whether it trusts the marks now."""
    m = Measurer(make_spec(loaded, **kw), loaded.tokenizer.backend_tokenizer)
    for i in range(0, 48, 16):
        m.count_batch(m.render_batch(convs[i : i + 16]))
    return m


@pytest.mark.parametrize(
    "name",
    ["chatml", "double-bos", "default-system", "no-eos", "plain-markers", "think-strip", "mistral-like"],
)
@pytest.mark.parametrize("mgp", [False, True])
def test_incremental_prefixes_count_what_rendering_every_prefix_counts(name, mgp, monkeypatch):
    convs = make_conversations(160, seed=3)
    fast, slow = _both(convs, _loaded(name), monkeypatch, mask_generation_prompt=mgp)
    _same(fast, slow)


def test_the_shortcut_is_taken_on_a_template_that_reads_messages_in_order():
    convs = make_conversations(80, seed=4)
    m = _used(_loaded("chatml"), convs)
    assert m._incremental is True
    assert {role for *_, role in m._tails} >= {"user", "assistant"}


LOOKS_AHEAD = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% if loop.last %}<|im_start|>end\n{% endif %}{% endfor %}"
)


def test_a_template_that_looks_ahead_is_rendered_prefix_by_prefix(monkeypatch):
    loaded = _loaded("chatml", LOOKS_AHEAD)
    assert Measurer(make_spec(loaded), loaded.tokenizer.backend_tokenizer)._incremental is False
    convs = make_conversations(40, seed=5, rich=False)
    counts = measure_conversations(list(enumerate(convs, 1)), loaded, batch_rows=8)
    for k, conv in enumerate(convs):
        try:
            want = count_naive(loaded.tokenizer, conv)
        except Exception:  # noqa: BLE001 - such rows are reported, not counted
            continue
        at = counts.rows.tolist().index(k + 1)
        assert (int(counts.total[at]), int(counts.supervised[at])) == want


# Rows whose content says COUNT make the template ask for the list's length, which a prefix render answers
# differently: those rows must be rendered prefix by prefix even after the shortcut is trusted.
COUNTS_SOMETIMES = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if 'COUNT' in m.content %} of {{ messages|length }}{% endif %}<|im_end|>\n{% endfor %}"
)


def test_rows_that_read_the_list_otherwise_are_rendered_prefix_by_prefix(monkeypatch):
    loaded = _loaded("chatml", COUNTS_SOMETIMES)
    convs = make_conversations(120, seed=6, rich=False)
    for conv in convs[64::3]:  # only after the first batches
        conv["messages"][0]["content"] += " COUNT"
    m = _used(loaded, convs)
    assert m._incremental is True  # learned on rows without COUNT
    fast, slow = _both(convs, loaded, monkeypatch)
    _same(fast, slow)
    # the length a prefix render prints differs from the whole's: the trainer cannot mask those rows
    unmaskable = set(fast.rows[fast.unmaskable()].tolist())
    for k in (64, 67, 70):
        with pytest.raises(Exception, match="answer-only loss mask"):
            count_naive(loaded.tokenizer, convs[k])
        assert k + 1 in unmaskable


# A closing text that depends on the content of the last message: the marks cannot tell, the first rows do.
CLOSES_BY_CONTENT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% set ns = namespace(last=m.content) %}{% endfor %}"
    "{% if messages[0].content.endswith('a') %}<|im_start|>x\n{% endif %}"
)


def test_a_closing_text_the_marks_cannot_predict_switches_the_shortcut_off(monkeypatch):
    loaded = _loaded("chatml", CLOSES_BY_CONTENT)
    convs = make_conversations(120, seed=8, rich=False)
    assert _used(loaded, convs)._incremental is False
    fast, slow = _both(convs, loaded, monkeypatch)
    _same(fast, slow)


# A closing text only rows with tools get: learned on rows without tools, it must not be assumed for rows with.
CLOSES_WITH_TOOLS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if tools %}<|im_start|>system\nTools: {{ tools | length }}<|im_end|>\n{% endif %}"
)


def test_rows_with_tools_after_rows_without_are_not_given_their_closing_text(monkeypatch):
    loaded = _loaded("chatml", CLOSES_WITH_TOOLS)
    convs = make_conversations(120, seed=9, rich=False)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    for conv in convs[70::4]:
        conv["tools"] = [tool]
    assert _used(loaded, convs)._incremental is True  # learned on the first 48 rows, none with tools
    fast, slow = _both(convs, loaded, monkeypatch)
    _same(fast, slow)
    # the trainer cannot mask those multi-turn rows: each prefix closes without the tools block the whole has
    for k in (70, 74):
        if sum(m["role"] == "assistant" for m in convs[k]["messages"]) > 0:
            with pytest.raises(Exception, match="answer-only loss mask"):
                count_naive(loaded.tokenizer, convs[k])


# The last message, read through a slice and a negative index before the loop: a look the probe must catch.
READS_THE_LAST = (
    "{% set rest = messages[1:] %}{% if rest and rest[-1].content.endswith('ZZZ') %}<|im_start|>x\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


def test_a_negative_index_on_a_slice_marks_the_row(monkeypatch):
    loaded = _loaded("chatml", READS_THE_LAST)
    convs = make_conversations(120, seed=10, rich=False)
    for conv in convs[70::3]:  # only after the first rows
        conv["messages"][-1]["content"] += " ZZZ"
    fast, slow = _both(convs, loaded, monkeypatch)
    _same(fast, slow)


def test_a_template_that_does_not_compile_is_check_templates_finding(cli, tmp_path):
    """preflight: measuring in the pass needs a compiled template; a broken one is reported, not a crash."""
    import json

    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 3
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = tmp_path / "t.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }{% endfor %}")
    r = cli(
        "preflight", "--model", MODELS / "chatml", "--dataset", data, "--chat-template", bad,
        "--out", tmp_path / "out", "--gpus", "1", "--gpu-memory", "24GiB",
    )  # fmt: skip
    assert r.exit_code in (1, 2), r.stderr
    assert "internal_error" not in r.stderr and "Traceback" not in r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["stopped_at"] == "check-template"
