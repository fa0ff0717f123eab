"""Converters and detection, on batches built in the tests (no reader involved)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataprep.converters import registry
from dataprep.converters._common import ConvertOptions
from dataprep.converters.alpaca import Alpaca
from dataprep.converters.dolly import Dolly
from dataprep.converters.oasst import OASST
from dataprep.converters.openai_messages import OpenAIMessages
from dataprep.converters.prompt_completion import PromptCompletion
from dataprep.converters.sharegpt import ShareGPT
from dataprep.errors import DataprepError, FindingError, UsageError
from dataprep.messages import validate_conversation
from dataprep.pipeline import dumps_line
from dataprep.sources.base import Batch


def convert(conv_cls, records, **opts):
    out, rejects = conv_cls(ConvertOptions(**opts)).convert(Batch.from_records(records))
    return [c for _, c in out], rejects


def table_batch(records):
    return Batch(start=1, table=pa.Table.from_pylist(records))


# -- detection ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "sample", "shape"),
    [
        (["messages"], [{"messages": [{"role": "user", "content": "x"}]}], "openai_messages"),
        (["messages", "tools"], [{"messages": '[{"role": "user", "content": "x"}]'}], "openai_messages"),
        (["conversations", "system"], [{"conversations": [{"from": "human", "value": "x"}]}], "sharegpt"),
        (["instruction", "input", "output"], [], "alpaca"),
        (["instruction", "output"], [], "alpaca"),
        (["instruction", "context", "response", "category"], [], "dolly"),
        (["prompt", "completion"], [], "prompt_completion"),
        (["question", "answer"], [], "prompt_completion"),
        (["context", "question", "answer"], [], "prompt_completion"),
        (["query", "response"], [], "prompt_completion"),
        (["instruction", "response"], [], "prompt_completion"),
        (["input", "output"], [], "prompt_completion"),
        (["message_id", "parent_id", "role", "text", "rank"], [], "oasst"),
        (["prompt", "chosen", "rejected"], [], "preference"),
        (["text"], [{"text": "lorem"}], "pretraining_text"),
    ],
)
def test_detect_picks_the_shape(columns, sample, shape):
    d = registry.detect(columns, sample)
    assert d.shape == shape
    assert 0 < d.confidence <= 1
    assert set(d.matched) <= set(columns) and d.matched
    assert d.to_dict()["shape"] == shape


def test_detect_nothing_matches_lists_columns_and_flags():
    with pytest.raises(DataprepError) as e:
        registry.detect(["foo", "bar"], [{"foo": 1, "bar": 2}])
    f = e.value.finding
    assert f.code == "unknown_schema"
    assert "foo, bar" in f.message
    assert "with fmt NAME" in f.hint and "mapping target=source" in f.hint and "alpaca" in f.hint
    assert "--" not in f.hint  # a Python caller reads the keywords; the CLI shows --format and --map


def test_detect_tie_is_unknown_schema(monkeypatch):
    monkeypatch.setattr(Dolly, "score", classmethod(lambda cls, c, s: (0.95, ["instruction"])))
    with pytest.raises(DataprepError) as e:
        registry.detect(["instruction", "input", "output"], [])
    assert e.value.finding.code == "unknown_schema"
    assert "equally" in e.value.finding.message


def test_unknown_format_name_lists_valid_names():
    with pytest.raises(UsageError) as e:
        registry.get("alpacca")
    assert "alpaca" in e.value.finding.hint and "sharegpt" in e.value.finding.hint


def test_registry_has_one_module_per_shape():
    assert registry.names() == [
        "openai_messages",
        "sharegpt",
        "alpaca",
        "prompt_completion",
        "dolly",
        "oasst",
        "preference",
        "kto",
        "pretraining_text",
    ]


# -- message lists --------------------------------------------------------------------------------------


def test_sharegpt_aliases_system_column_and_function_calls():
    rec = {
        "system": "be nice",
        "conversations": [
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "w", "arguments": {"c": "P"}}'},
            {"from": "observation", "value": "sunny"},
            {"from": "chatgpt", "value": "It is sunny."},
        ],
    }
    (conv,), rejects = convert(ShareGPT, [rec])
    assert rejects == []
    m = conv["messages"]
    assert [x["role"] for x in m] == ["system", "user", "assistant", "tool", "assistant"]
    assert m[2]["tool_calls"][0]["function"] == {"name": "w", "arguments": '{"c": "P"}'}
    assert m[3]["tool_call_id"] == m[2]["tool_calls"][0]["id"]
    assert validate_conversation(conv) == []


@pytest.mark.parametrize("alias", ["gpt", "assistant", "chatgpt", "model", "bot"])
def test_assistant_aliases(alias):
    (conv,), _ = convert(
        ShareGPT, [{"conversations": [{"from": "human", "value": "q"}, {"from": alias, "value": "a"}]}]
    )
    assert conv["messages"][1]["role"] == "assistant"


def test_role_map_renames_before_aliases():
    recs = [{"conversations": [{"from": "asker", "value": "q"}, {"from": "answerer", "value": "a"}]}]
    (conv,), _ = convert(ShareGPT, recs, role_map={"asker": "user", "answerer": "gpt"})
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]


def test_openai_parts_null_content_and_dict_arguments():
    rec = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": {"x": 1}}}],
            },
            {"role": "tool", "tool_call_id": "1", "content": "r"},
            {"role": "assistant", "content": "ok", "reasoning_content": "why"},
        ],
        "tools": '[{"type": "function", "function": {"name": "f"}}]',
    }
    (conv,), _ = convert(OpenAIMessages, [rec])
    m = conv["messages"]
    assert m[0]["content"] == "a\nb"
    assert m[1]["content"] == "" and m[1]["tool_calls"][0]["type"] == "function"
    assert m[1]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    assert conv["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert validate_conversation(conv) == []


def test_arrow_unified_null_keys_do_not_leak_into_tools():
    recs = [
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"a": 1}}}],
        },
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "tools": [{"type": "function", "function": {"name": "g", "parameters": {"b": 2}}}],
        },
    ]
    out, _ = OpenAIMessages().convert(table_batch(recs))
    assert out[0][1]["tools"][0]["function"]["parameters"] == {"a": 1}


@pytest.mark.parametrize(
    "part", [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "input_audio"}, {"type": "hologram"}]
)
def test_non_text_parts_reject_unless_text_only(part):
    rec = {
        "messages": [
            {"role": "user", "content": [part, {"type": "text", "text": "what?"}]},
            {"role": "assistant", "content": "a"},
        ]
    }
    convs, rejects = convert(OpenAIMessages, [rec])
    assert convs == [] and rejects[0].code == "non_text_content" and rejects[0].row == 1
    if part["type"] != "hologram":  # an unknown part type is never skipped silently
        convs, rejects = convert(OpenAIMessages, [rec], text_only=True)
        assert convs[0]["messages"][0]["content"] == "what?"


def test_json_string_messages_column_bad_json_is_rejected():
    convs, rejects = convert(OpenAIMessages, [{"messages": '[{"role": "user"'}])
    assert convs == [] and rejects[0].code == "invalid_json"


def test_system_option_added_only_where_missing():
    recs = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {
            "messages": [
                {"role": "system", "content": "own"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        },
    ]
    convs, _ = convert(OpenAIMessages, recs, system="default")
    assert [c["messages"][0]["content"] for c in convs] == ["default", "own"]


# -- flat shapes ------------------------------------------------------------------------------------------


def test_alpaca_input_history_and_system():
    rec = {"instruction": "I", "input": "X", "output": "O", "system": "S", "history": [["q1", "a1"]]}
    (conv,), _ = convert(Alpaca, [rec])
    assert conv["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "I\n\nX"},
        {"role": "assistant", "content": "O"},
    ]


@pytest.mark.parametrize(
    ("rec", "code", "message"),
    [
        ({"instruction": None, "output": "o"}, "missing_field", "instruction is missing"),
        ({"instruction": "i", "output": None}, "missing_field", "output is missing"),
        ({"instruction": " ", "output": "o"}, "empty_content", "instruction is empty"),
        ({"instruction": "i", "output": ""}, "empty_content", "output is empty"),
        ({"instruction": ["i"], "output": "o"}, "missing_field", "instruction is a list, not text"),
    ],
)
def test_alpaca_rejects(rec, code, message):
    convs, rejects = convert(Alpaca, [rec])
    assert convs == [] and (rejects[0].code, rejects[0].message) == (code, message)
    assert rejects[0].record == rec


def test_dolly_context_and_category():
    rec = {"instruction": "When?", "context": "In 2000.", "response": "2000", "category": "closed_qa"}
    (conv,), _ = convert(Dolly, [rec])
    assert conv["messages"][0]["content"] == "When?\n\nIn 2000."
    assert len(conv["messages"]) == 2


@pytest.mark.parametrize(
    ("rec", "user"),
    [
        ({"prompt": "p", "completion": "c"}, "p"),
        ({"question": "q", "answer": "c"}, "q"),
        ({"context": "ctx", "question": "q", "answer": "c"}, "ctx\n\nq"),
        ({"query": "q", "response": "c"}, "q"),
        ({"input": "q", "output": "c"}, "q"),
    ],
)
def test_prompt_completion_synonyms(rec, user):
    (conv,), _ = convert(PromptCompletion, [rec])
    assert conv["messages"] == [{"role": "user", "content": user}, {"role": "assistant", "content": "c"}]


def test_prompt_completion_conversational_form():
    rec = {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": '[{"role": "assistant", "content": "a"}]',
    }
    (conv,), _ = convert(PromptCompletion, [rec])
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]


def test_forced_flat_shape_on_wrong_columns_is_unknown_schema():
    with pytest.raises(DataprepError) as e:
        Alpaca().convert(Batch.from_records([{"a": 1}]))
    assert e.value.finding.code == "unknown_schema"


_text = st.one_of(
    st.none(), st.text(max_size=12), st.sampled_from(["", " ", "\x1c", "\u3000x", "é"]), st.integers(-5, 5)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries({"instruction": _text, "input": _text, "output": _text, "system": _text}),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([None, "SYS"]),
)
def test_vectorized_path_equals_record_path(records, system):
    """The polars path and the per-record path give the same conversations, lines and rejects."""
    # one type per column, as Arrow needs
    for col in ("instruction", "input", "output", "system"):
        if len({type(r[col]) for r in records if r[col] is not None}) > 1:
            for r in records:
                r[col] = None if r[col] is None else str(r[col])
    conv = Alpaca(ConvertOptions(system=system))
    fast_rows, fast_lines, fast_rej = conv.convert_lines(table_batch(records))
    slow, slow_rej = conv.convert(Batch.from_records(records))
    assert fast_rows == [r for r, _ in slow]
    assert fast_lines.to_list() == [dumps_line(c) + "\n" for _, c in slow]
    assert [(r.row, r.code, r.message) for r in fast_rej] == [(r.row, r.code, r.message) for r in slow_rej]
    for _, c in slow:
        assert validate_conversation(c) == []
    vec, vec_rej = conv.convert(table_batch(records))
    assert vec == slow


# -- OASST and refusals -----------------------------------------------------------------------------------


def _oasst_rows():
    recs = [
        {"message_id": "1", "parent_id": None, "role": "prompter", "text": "q", "rank": None},
        {"message_id": "2", "parent_id": "1", "role": "assistant", "text": "worse", "rank": 1},
        {"message_id": "3", "parent_id": "1", "role": "assistant", "text": "best", "rank": 0},
        {"message_id": "4", "parent_id": "3", "role": "prompter", "text": "dangling follow-up", "rank": 0},
        {"message_id": "5", "parent_id": None, "role": "prompter", "text": "unanswered", "rank": None},
        {"message_id": "6", "parent_id": "missing", "role": "assistant", "text": "orphan", "rank": 0},
    ]
    return list(enumerate(recs, start=1))


def test_oasst_best_path_trims_trailing_prompter():
    out, rejects = OASST().convert_all(_oasst_rows())
    assert [(r, [m["content"] for m in c["messages"]]) for r, c in out] == [(3, ["q", "best"])]
    assert sorted((r.row, r.code) for r in rejects) == [(5, "no_assistant_turn"), (6, "missing_field")]


def test_oasst_all_paths():
    out, _ = OASST(ConvertOptions(all_paths=True)).convert_all(_oasst_rows())
    assert sorted(tuple(m["content"] for m in c["messages"]) for _, c in out) == [
        ("q", "best"),
        ("q", "worse"),
    ]


def test_preference_refused_unless_take_chosen():
    conv_cls = registry.get("preference")
    with pytest.raises(FindingError) as e:
        conv_cls(ConvertOptions())
    assert e.value.finding.code == "preference_data"
    (conv,), _ = convert(conv_cls, [{"prompt": "p", "chosen": "good", "rejected": "bad"}], take="chosen")
    assert conv["messages"][-1] == {"role": "assistant", "content": "good"}
    full = [{"role": "user", "content": "p"}, {"role": "assistant", "content": "good"}]
    (conv,), _ = convert(conv_cls, [{"chosen": full, "rejected": full}], take="chosen")
    assert conv["messages"] == full


def test_pretraining_text_refused():
    with pytest.raises(FindingError) as e:
        registry.get("pretraining_text")(ConvertOptions())
    assert e.value.finding.code == "pretraining_text"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "from",
                    "content",
                    "value",
                    "type",
                    "text",
                    "tool_calls",
                    "id",
                    "function",
                    "name",
                    "arguments",
                    "tool_call_id",
                    "reasoning_content",
                ]
            ),
            c,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([OpenAIMessages, ShareGPT, Alpaca, PromptCompletion, Dolly]),
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "messages",
                    "conversations",
                    "instruction",
                    "input",
                    "output",
                    "prompt",
                    "completion",
                    "response",
                    "context",
                    "system",
                    "tools",
                    "history",
                ]
            ),
            _json,
            max_size=5,
        ),
        max_size=5,
    ),
)
def test_random_records_never_crash_a_converter(conv_cls, records):
    try:
        out, rejects = conv_cls().convert(Batch.from_records(records))
    except DataprepError as e:  # a forced flat shape on columns it cannot use
        assert e.finding.code == "unknown_schema"
        return
    assert len(out) + len(rejects) == len(records)
    for _, c in out:
        json.dumps(c)
