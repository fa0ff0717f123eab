"""Inputs as real exports write them (issue 13): pandas CSV cells, LLaMA-Factory v1 messages, ShareGPT preference
pairs and KTO labels. Fixtures: fixtures/make_real_world.py."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.converters import registry
from dataprep.converters._common import (
    MAX_LITERAL_CHARS,
    ConvertOptions,
    Notes,
    RowReject,
    content_text,
    maybe_json,
)
from dataprep.converters.openai_messages import OpenAIMessages
from dataprep.errors import FindingError
from dataprep.messages import validate_conversation
from dataprep.normalize import normalize
from dataprep.pipeline import ConvertSpec, conversations
from dataprep.sources.base import Batch

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
PANDAS_CSV = RECORDS / "pandas_messages.csv"
V1 = RECORDS / "llamafactory_v1.jsonl"
SHAREGPT_PREF = RECORDS / "sharegpt_preference.jsonl"
KTO_SHAREGPT = RECORDS / "kto_sharegpt.jsonl"
KTO_PC = RECORDS / "kto_prompt_completion.jsonl"
sys.path.insert(0, str(ROOT / "fixtures"))
import make_real_world  # noqa: E402


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _finding(findings, code: str) -> dict:
    (f,) = [f for f in findings if f["code"] == code]
    return f


# -- 1. pandas to_csv: Python literals in list/dict columns ----------------------------------------------------
def test_the_csv_fixture_is_what_pandas_writes():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([{"id": i, "messages": m, "tools": t} for i, m, t in make_real_world.PANDAS_ROWS])
    assert df.to_csv(index=False) == PANDAS_CSV.read_text(encoding="utf-8")


def test_pandas_csv_converts_like_the_same_rows_written_as_json(tmp_path):
    """The Python-literal rows give exactly the output the same values written as JSON give."""
    res = normalize(PANDAS_CSV, tmp_path / "out.jsonl")
    assert (res.read, res.written, res.rejected) == (5, 4, 1) and res.reconciled
    as_json = tmp_path / "as_json.csv"
    with open(as_json, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "messages", "tools"])
        for rid, messages, tools in make_real_world.PANDAS_ROWS[:3]:
            w.writerow([rid, json.dumps(messages), "" if tools is None else json.dumps(tools)])
    ref = normalize(as_json, tmp_path / "ref.jsonl")
    assert ref.notes.counts == {}
    got = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert got[:3] == (tmp_path / "ref.jsonl").read_text(encoding="utf-8").splitlines()
    # None became "", the dict arguments a JSON string, True true; no key is invented
    oslo = json.loads(got[1])
    assert oslo["messages"][1]["content"] == "" and oslo["messages"][1]["tool_calls"][0]["function"][
        "arguments"
    ] == json.dumps({"city": "Oslo"})
    assert oslo["tools"][0]["function"]["strict"] is True
    assert all(not validate_conversation(json.loads(x)) for x in got)


def test_python_literal_rows_are_counted_once_per_input_and_the_broken_row_names_both_syntaxes(tmp_path):
    res = normalize(PANDAS_CSV, tmp_path / "out.jsonl")
    assert res.notes.counts == {"python_literal_cells": 3} and res.notes.rows["python_literal_cells"] == [
        1,
        2,
        3,
    ]
    f = _finding([f.to_dict() for f in res.findings()], "python_literal_cells")
    assert f["severity"] == "info" and f["count"] == 3 and f["rows"] == [1, 2, 3]
    (rej,) = _lines(tmp_path / "out.rejects.jsonl")
    assert (rej["row"], rej["code"]) == (5, "invalid_json")
    assert (
        rej["message"].startswith("messages is neither JSON (") and "nor a Python literal (" in rej["message"]
    )
    assert rej["record"]["id"] == "b2"  # the original record, kept


def test_cli_normalize_reports_python_literal_cells(cli, tmp_path):
    r = cli("normalize", PANDAS_CSV, tmp_path / "out.jsonl")
    assert r.exit_code == 0, r
    assert "rows: read 5 = written 4 + rejected 1" in r.stderr
    assert "info[python_literal_cells]: 3 rows held a list or dict written as a Python literal" in r.stderr
    r = cli("normalize", PANDAS_CSV, tmp_path / "out2.jsonl", "--json")
    f = _finding(r.json()["findings"], "python_literal_cells")
    assert (f["count"], f["rows"]) == (3, [1, 2, 3])


def test_alpaca_history_written_by_pandas_is_read(tmp_path):
    path = tmp_path / "alpaca.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["instruction", "output", "history"])
        w.writerow(["And 3+3?", "6", str([["What is 2+2?", "4"]])])
        w.writerow(["Hi", "Hello", ""])
    res = normalize(path, tmp_path / "out.jsonl")
    assert res.written == 2 and res.notes.counts == {"python_literal_cells": 1}
    first = _lines(tmp_path / "out.jsonl")[0]["messages"]
    assert [m["content"] for m in first] == ["What is 2+2?", "4", "And 3+3?", "6"]


def test_conversational_prompt_completion_in_a_csv_is_parsed_not_written_as_text(tmp_path):
    """TRL's conversational form through a CSV: the vectorized text path must not take message lists as text."""
    path = tmp_path / "pc.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["prompt", "completion"])
        w.writerow(
            [
                json.dumps([{"role": "user", "content": "2+2?"}]),
                json.dumps([{"role": "assistant", "content": "4"}]),
            ]
        )
        w.writerow([str([{"role": "user", "content": "3+3?"}]), str([{"role": "assistant", "content": "6"}])])
        w.writerow(["[plain] text prompt", "text answer"])
    res = normalize(path, tmp_path / "out.jsonl")
    assert res.written == 3 and res.notes.counts == {"python_literal_cells": 1}
    assert [[m["content"] for m in c["messages"]] for c in _lines(tmp_path / "out.jsonl")] == [
        ["2+2?", "4"],
        ["3+3?", "6"],
        ["[plain] text prompt", "text answer"],
    ]


def test_a_rejected_row_is_not_counted_as_read_as_a_literal():
    batch = Batch.from_records(
        [
            {"messages": "[{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'a'}]"},
            {"messages": "[{'content': 'no role'}]"},
        ]
    )
    conv = OpenAIMessages()
    out, rejects = conv.convert(batch)
    assert [r for r, _ in out] == [1] and [(r.row, r.code) for r in rejects] == [(2, "missing_field")]
    assert conv.notes.counts == {"python_literal_cells": 1} and conv.notes.rows["python_literal_cells"] == [1]


@pytest.mark.parametrize(
    "text",
    [
        "{1, 2}",  # a set
        "[b'bytes']",
        "[(1, 2)]",  # a tuple
        "{1: 'int key'}",
        "[nan]",  # pandas writes nan for a missing float inside a list
        "[__import__('os').system('false')]",  # a call: never evaluated
        "[1 + 2]",
        "[" * 500 + "'deep'" + "]" * 500,  # the parser's nesting limit, not a crash
        "[" + "'0'," * (MAX_LITERAL_CHARS // 4) + "'0']",  # over the length read as a literal
    ],
)
def test_text_that_is_no_plain_literal_stays_invalid_json(text):
    with pytest.raises(RowReject) as e:
        maybe_json(text, "messages")
    assert e.value.code == "invalid_json"
    assert (
        e.value.message.startswith("messages is neither JSON (")
        and "nor a Python literal (" in e.value.message
    )
    assert " at 0x" not in e.value.message  # deterministic: no memory address from ast


def test_json_is_tried_first_and_plain_text_is_left_alone():
    assert maybe_json('["a", null]') == ["a", None]
    assert maybe_json("['a', None, True]") == ["a", None, True]  # outside a conversion: nothing to note
    assert maybe_json("hello [world]") == "hello [world]"


_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.lists(_plain, max_size=4) | st.dictionaries(st.text(max_size=8), _plain, max_size=4))
def test_any_plain_list_or_dict_written_with_repr_round_trips(value):
    """pandas writes a cell's repr; reading it back gives the same value (types included: True is not 1)."""
    got = maybe_json(repr(value))
    assert json.dumps(got) == json.dumps(value)


# -- 2. LLaMA-Factory v1: "value" text parts, loss_weight ------------------------------------------------------
def test_text_parts_may_carry_their_text_under_value():
    assert (
        content_text([{"type": "text", "value": "hi"}, {"type": "text", "text": "there"}], False, "m")
        == "hi\nthere"
    )
    assert (
        content_text([{"type": "text", "text": "text wins", "value": "not this"}], False, "m") == "text wins"
    )
    with pytest.raises(RowReject) as e:
        content_text([{"type": "text"}], False, "messages[0]")
    assert e.value.message == "messages[0]: text part without text (no 'text' or 'value')"


def test_llamafactory_v1_converts_and_zero_loss_weight_is_reported(tmp_path):
    res = normalize(V1, tmp_path / "out.jsonl")
    assert (res.written, res.rejected) == (4, 0)
    out = _lines(tmp_path / "out.jsonl")
    assert out[1]["messages"][-1] == {"role": "assistant", "content": "Soft rain on the roof\ncounting"}
    assert out[2]["messages"][1]["content"] == "And value here."
    assert all("loss_weight" not in m for c in out for m in c["messages"])  # AutoModel has no such key
    assert all(not validate_conversation(c) for c in out)
    # row 1 weights only system/user turns 0, row 3 has no weights: only rows 2 and 4 train a 0-weighted answer
    f = _finding([f.to_dict() for f in res.findings()], "loss_weight_ignored")
    assert (f["severity"], f["count"], f["rows"]) == ("warning", 2, [2, 4])


def test_cli_loss_weight_ignored_is_a_warning(cli, tmp_path):
    r = cli("normalize", V1, tmp_path / "out.jsonl")
    assert r.exit_code == 0, r
    assert "warning[loss_weight_ignored]: 2 rows have an assistant turn with loss_weight 0" in r.stderr
    r = cli("normalize", V1, tmp_path / "strict.jsonl", "--strict")
    assert r.exit_code == 1  # --strict: the rows would train turns the data says not to


# -- 3. preference data in ShareGPT form, and KTO ---------------------------------------------------------------
def test_sharegpt_preference_is_detected_as_preference():
    sample = _lines(SHAREGPT_PREF)
    d = registry.detect(["conversations", "chosen", "rejected", "system"], sample)
    assert d.shape == "preference" and "conversations" in d.matched


def test_cli_sharegpt_preference_is_preference_data_until_take_chosen(cli, tmp_path):
    r = cli("inspect", SHAREGPT_PREF, "--json")
    assert r.json()["shape"]["shape"] == "preference"
    r = cli("normalize", SHAREGPT_PREF, tmp_path / "out.jsonl")
    assert r.exit_code == 1 and "error[preference_data]" in r.stderr and "--take chosen" in r.stderr
    r = cli("normalize", SHAREGPT_PREF, tmp_path / "out.jsonl", "--take", "chosen")
    assert r.exit_code == 0, r
    assert "rows: read 3 = written 3 + rejected 0" in r.stderr
    out = _lines(tmp_path / "out.jsonl")
    assert out[0]["messages"] == [
        {"role": "user", "content": "Suggest a name for a bakery."},
        {"role": "assistant", "content": "Rise & Shine Bakehouse."},
    ]
    # the shared prefix (with its earlier answer) and the system column, then the chosen answer
    assert [(m["role"], m["content"]) for m in out[1]["messages"]] == [
        ("system", "Answer with the number only."),
        ("user", "What is 12 * 12?"),
        ("assistant", "144."),
        ("user", "And 13 * 13?"),
        ("assistant", "169."),
    ]


def test_a_lone_chosen_answer_without_a_prompt_is_rejected_not_written_alone():
    conv = registry.get("preference")(ConvertOptions(take="chosen"))
    out, rejects = conv.convert(
        Batch.from_records([{"chosen": {"from": "gpt", "value": "x"}, "rejected": "y"}])
    )
    assert out == [] and rejects[0].code == "missing_field" and "prompt is missing" in rejects[0].message


@pytest.mark.parametrize(
    ("path", "label", "kept", "dropped"),
    [
        (KTO_SHAREGPT, "kto_tag", ["Red.", "Eight."], [2]),
        (KTO_PC, "label", [" blue.", " 100 °C at sea level."], [2, 4]),
    ],
)
def test_kto_is_preference_data_and_take_chosen_keeps_the_desirable_rows(
    cli, tmp_path, path, label, kept, dropped
):
    r = cli("normalize", path, tmp_path / "refused.jsonl")
    assert r.exit_code == 1 and "error[preference_data]" in r.stderr and "KTO" in r.stderr
    res = normalize(path, tmp_path / "out.jsonl", ConvertSpec(take="chosen"))
    assert res.detection.shape == "kto" and res.reconciled
    assert [c["messages"][-1]["content"] for c in _lines(tmp_path / "out.jsonl")] == kept
    rejects = _lines(tmp_path / "out.rejects.jsonl")
    assert [(x["row"], x["code"]) for x in rejects] == [(r, "preference_data") for r in dropped]
    assert rejects[0]["message"].startswith(f"{label} is false") and rejects[0]["record"][label] is False
    f = _finding([f.to_dict() for f in res.findings()], "preference_data")
    assert f["severity"] == "warning" and "undesirable" in f["hint"]


def test_kto_label_must_be_boolean_and_a_class_label_is_not_kto():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert registry.detect(["messages", "label"], [{"messages": msgs, "label": "positive"}]).shape == (
        "openai_messages"
    )
    assert registry.detect(["messages", "label"], [{"messages": msgs, "label": True}]).shape == "kto"
    with pytest.raises(FindingError) as e:
        registry.get("kto")(ConvertOptions())
    assert e.value.finding.code == "preference_data"
    conv = registry.get("kto")(ConvertOptions(take="chosen"))
    conv.bind(["messages", "kto_tag"])
    recs = [{"messages": msgs, "kto_tag": t} for t in ("true", 1, "maybe", None)]
    out, rejects = conv.convert(Batch.from_records(recs))
    assert [r for r, _ in out] == [1, 2]
    assert [(r.row, r.code, r.message) for r in rejects] == [
        (3, "missing_field", "kto_tag is 'maybe', not true or false"),
        (4, "missing_field", "kto_tag is missing"),
    ]


# -- the other consumers: stats' stream, and the Ray engine ------------------------------------------------------
def test_conversations_fills_the_notes_it_is_given():
    notes = Notes()
    rows = list(conversations(V1, notes=notes))
    assert len(rows) == 4 and notes.counts == {"loss_weight_ignored": 2}


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    pytest.importorskip("ray.data")
    from dataprep import engine_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    engine_ray.session._quiet_data_context(ray)
    yield
    ray.shutdown()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_ray_engine_gives_the_same_bytes_and_findings(local_ray, tmp_path):
    from dataprep.engine_ray import normalize_ray

    for path, kw in [
        (PANDAS_CSV, {}),
        (V1, {}),
        (SHAREGPT_PREF, {"take": "chosen"}),
        (KTO_PC, {"take": "chosen"}),
    ]:
        spec = ConvertSpec(**kw)
        local = normalize(path, tmp_path / "l.jsonl", spec, rejects=tmp_path / "l.rej", force=True)
        remote = normalize_ray(
            path, tmp_path / "r.jsonl", spec, rejects=tmp_path / "r.rej", merge=True, force=True
        )
        assert (tmp_path / "r.jsonl").read_bytes() == (tmp_path / "l.jsonl").read_bytes()
        assert (tmp_path / "r.rej").read_bytes() == (tmp_path / "l.rej").read_bytes()
        ours = [f.to_dict() for f in local.findings()]
        theirs = [f.to_dict() for f in remote.findings()]
        assert json.dumps(theirs).replace("r.rej", "l.rej") == json.dumps(ours), path.name
