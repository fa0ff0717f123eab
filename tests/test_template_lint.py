"""template_lint: every fixture triggers exactly its quirks, and every template code has a fixture that does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataprep.findings import CATALOGUE
from dataprep.pipeline import conversations
from dataprep.template_lint import assistant_spans, lint_template
from dataprep.tokenizer import load_tokenizer

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"

# fixture -> the codes it must report (and no other)
EXPECTED: dict[str, set[str]] = {
    "chatml-gen": set(),
    "chatml": {"generation_tags_missing"},
    "double-bos": {"double_bos"},
    "no-system": {"system_role_unsupported", "generation_tags_missing", "reasoning_dropped"},
    "mistral-like": {
        "strict_alternation",
        "system_message_dropped",
        "prefix_unstable",
        "mask_unbuildable",  # the system text moves to the last user turn: prefixes are not prefixes
        "reasoning_dropped",
        "template_render_error",  # info: its tool role raises
    },
    "default-system": {"default_system_prompt_injected"},
    "think-strip": {"prefix_unstable", "mask_unbuildable"},
    "date": {"date_injected"},
    "needs-tools": {"tools_required"},
    "pad-eos": {"pad_equals_eos"},
    "no-eos": {"eos_not_trained"},
    "plain-markers": {"marker_not_special_token", "generation_tags_missing", "reasoning_dropped"},
    "no-reasoning": {"reasoning_dropped"},
    "sentencepiece-only": {
        "strict_alternation",
        "marker_not_special_token",
        "double_bos",
        "generation_tags_missing",
        "reasoning_dropped",
        "template_render_error",
    },  # fmt: skip
    "tojson-args": {"tool_arguments_double_encoded"},
    "think-strip-gen": {"prefix_unstable"},  # info: the tags make the mask, so AutoModel trains it
    "no-template": {"chat_template_missing"},
}

TEMPLATE_CODES = {
    "chat_template_missing",
    "template_render_error",
    "system_role_unsupported",
    "system_message_dropped",
    "default_system_prompt_injected",
    "strict_alternation",
    "generation_tags_missing",
    "prefix_unstable",
    "double_bos",
    "eos_not_trained",
    "pad_equals_eos",
    "marker_not_special_token",
    "date_injected",
    "tools_required",
    "reasoning_dropped",
    "mask_unbuildable",
    "tool_arguments_double_encoded",
}


@pytest.fixture(scope="module")
def reports():
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = lint_template(load_tokenizer(str(MODELS / name)))
        return cache[name]

    return get


def test_every_fixture_folder_is_in_the_table():
    assert sorted(p.name for p in MODELS.iterdir() if p.is_dir()) == sorted(EXPECTED)


def test_every_template_code_has_a_fixture_that_triggers_it_and_one_that_does_not():
    assert TEMPLATE_CODES <= set(CATALOGUE)
    for code in TEMPLATE_CODES:
        assert any(code in codes for codes in EXPECTED.values()), code
        assert any(code not in codes for codes in EXPECTED.values()), code


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_reports_exactly_its_quirks(reports, name):
    codes = {f.code for f in reports(name).findings}
    assert codes == EXPECTED[name]


def _one(report, code):
    (f,) = [f for f in report.findings if f.code == code]
    return f


def test_generation_tags_missing_says_the_header_is_trained(reports):
    f = _one(reports("chatml"), "generation_tags_missing")
    assert "header is trained" in f.message and "mask_generation_prompt: true" in f.message
    assert f.severity.value == "info"
    failing = _one(reports("think-strip"), "mask_unbuildable")
    assert "Cannot build an answer-only loss mask" in failing.message and failing.severity.value == "error"


def test_generation_tag_without_spaces_is_not_seen_by_automodel(tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(MODELS / "chatml-gen", d)
    t = (d / "chat_template.jinja").read_text()
    (d / "chat_template.jinja").write_text(
        t.replace("{% generation %}", "{%generation%}").replace("{% endgeneration %}", "{%endgeneration%}")
    )
    lt = load_tokenizer(str(d))
    assert not lt.has_generation_tags
    f = _one(lint_template(lt), "generation_tags_missing")
    assert "without spaces" in f.message and f.severity.value == "warning"
    assert (
        assistant_spans(
            lt, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
        ).mask_source
        == "prefix_with_header"
    )


def test_default_system_prompt_reports_text_and_token_cost(reports):
    f = _one(reports("default-system"), "default_system_prompt_injected")
    assert "You are Tiny, a helpful assistant." in f.data["injected_text"]
    tok = load_tokenizer(str(MODELS / "default-system")).tokenizer
    assert f.data["token_cost"] == len(tok.encode(f.data["injected_text"], add_special_tokens=False))
    assert f.data["token_cost"] > 5


def test_system_attached_to_last_user_turn(reports):
    f = _one(reports("mistral-like"), "system_message_dropped")
    assert f.data["attached_to_turn"] == 3


def test_think_strip_prefix_unstable_names_the_stripped_reasoning(reports):
    assert (
        "reasoning_content of earlier assistant turns"
        in _one(reports("think-strip"), "prefix_unstable").message
    )


def test_double_bos_only_when_rendering_then_tokenizing(reports):
    f = _one(reports("double-bos"), "double_bos")
    assert f.data["where"] == ["rendering to text then tokenizing with special tokens, as many scripts do"]


def test_markers_listed_with_token_counts(reports):
    f = _one(reports("plain-markers"), "marker_not_special_token")
    assert set(f.data["markers"]) == {"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"}
    assert all(n > 1 for n in f.data["markers"].values())


def test_eos_not_trained_names_the_closing_token(reports):
    f = _one(reports("no-eos"), "eos_not_trained")
    assert "<|im_end|>" in f.message and "<|endoftext|>" in f.message


def test_hostile_template_is_a_render_error_not_a_hang():
    lt = load_tokenizer(
        str(MODELS / "chatml"),
        chat_template="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    from dataprep.render import Limits

    report = lint_template(lt, limits=Limits(seconds=0.3))
    (f,) = report.findings
    assert f.code == "template_render_error" and "timeout" in f.message
    assert report.sample is None


def test_escape_attempt_is_a_render_error():
    lt = load_tokenizer(
        str(MODELS / "chatml"), chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    (f,) = lint_template(lt).findings
    assert f.code == "template_render_error" and "security" in f.message


def test_assistant_spans_generation_tags_match_transformers():
    lt = load_tokenizer(str(MODELS / "chatml-gen"))
    conv = {
        "messages": [
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "And three plus three?"},
            {"role": "assistant", "content": "Six.", "reasoning_content": "add"},
        ]
    }
    sr = assistant_spans(lt, conv)
    hf = lt.tokenizer.apply_chat_template(conv["messages"], tokenize=True, return_assistant_tokens_mask=True)
    assert sr.mask_source == "generation_tags"
    assert list(sr.input_ids) == hf["input_ids"]
    assert list(sr.mask) == hf["assistant_masks"]
    assert [s.message_index for s in sr.spans] == [1, 3]
    assert [sr.text[s.start : s.end] for s in sr.spans] == [
        "Four.<|im_end|>",
        "<think>add</think>\nSix.<|im_end|>",
    ]
    assert sum(s.tokens for s in sr.spans) == sr.supervised_tokens


def test_assistant_spans_prefix_diff_covers_answer_and_closing_marker():
    lt = load_tokenizer(str(MODELS / "chatml"))
    msgs = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Ciao"},
    ]
    sr = assistant_spans(lt, msgs)  # AutoModel's default: the header is trained too
    assert sr.mask_source == "prefix_with_header"
    assert [sr.text[s.start : s.end] for s in sr.spans] == [
        "<|im_start|>assistant\nHello<|im_end|>\n",
        "<|im_start|>assistant\nCiao<|im_end|>\n",
    ]
    sr = assistant_spans(lt, msgs, mask_generation_prompt=True)
    assert sr.mask_source == "prefix_without_header"
    assert [sr.text[s.start : s.end] for s in sr.spans] == ["Hello<|im_end|>\n", "Ciao<|im_end|>\n"]
    supervised = lt.tokenizer.decode([t for t, m in zip(sr.input_ids, sr.mask, strict=True) if m])
    assert supervised == "Hello<|im_end|>\nCiao<|im_end|>\n"


def test_report_json_shape(reports):
    d = reports("chatml-gen").to_dict()
    json.dumps(d)
    assert {"model", "template_source", "template_sha256", "special_tokens", "findings", "sample"} <= set(d)
    sample = d["sample"]
    assert sample["mask_source"] == "generation_tags"
    assert sample["supervised_tokens"] == sum(s["tokens"] for s in sample["spans"])
    for s in sample["spans"]:
        assert sample["text"][s["start"] : s["end"]].endswith("<|im_end|>")
    assert "token_ids" not in sample and "token_ids" in reports("chatml-gen").to_dict(tokens=True)["sample"]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_dataset_rows_that_fail_are_reported_by_row_number(tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    with_system = {"messages": [{"role": "system", "content": "Be nice."}, *good["messages"]]}
    data = _write_jsonl(tmp_path / "d.jsonl", [good, with_system, good, with_system])
    rows = conversations(data)
    report = lint_template(load_tokenizer(str(MODELS / "no-system")), rows, dataset=str(data), samples=10)
    (f,) = [f for f in report.findings if f.rows]
    assert f.code == "template_render_error" and f.rows == (2, 4)
    assert report.dataset.rows_rendered == 2 and report.dataset.rows_failed == 2
    # the sample is the dataset's first row
    assert report.sample_messages == tuple(good["messages"])


def test_dataset_samples_limit(tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    data = _write_jsonl(tmp_path / "d.jsonl", [good] * 5)
    report = lint_template(load_tokenizer(str(MODELS / "chatml-gen")), conversations(data), samples=3)
    assert report.dataset.rows_rendered == 3 and report.dataset.reader == "dataprep.pipeline"


CHATML_HEAD = (
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if loop.last %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}"
    "<|im_end|>{{ '\\n' }}{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{{ '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_generation_block_that_leaves_out_eos_and_earlier_turns():
    lt = load_tokenizer(str(MODELS / "chatml"), chat_template=CHATML_HEAD)
    codes = {f.code: f for f in lint_template(lt).findings}
    assert "eos_not_trained" in codes  # <|im_end|> sits outside {% generation %}
    assert codes["generation_tags_missing"].severity.value == "warning"
    assert "only 1 of 3" in codes["generation_tags_missing"].message


def test_trainer_view_matches_chat_dataset():
    from dataprep.template_lint import trainer_view

    conv = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "x", "type": "function", "function": {"name": "f", "arguments": {"q": 1}}}
                ],
            },
        ],
        "tools": '[{"type": "function", "function": {"name": "f"}}]',
    }
    messages, tools = trainer_view(conv)
    assert messages[0]["content"] == "a b"
    assert messages[1]["content"] == ""
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{"q": 1}'
    assert tools == [{"type": "function", "function": {"name": "f"}}]
    assert conv["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"q": 1}  # input untouched
    from dataprep.trainer import RowRejected

    with pytest.raises(RowRejected, match="not a list"):  # ChatDataset raises on it
        trainer_view({"messages": [], "tools": {"not": "a list"}})
