"""normalize(): golden outputs, reconciliation, determinism, refusals, atomic output, conversations."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataprep.errors import DataprepError, FindingError, UsageError
from dataprep.messages import validate_conversation
from dataprep.normalize import default_rejects_path, normalize
from dataprep.pipeline import ConvertSpec, conversations, open_input

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
GOLDEN = ROOT / "fixtures" / "golden"
DATA = ROOT / "fixtures" / "data"
sys.path.insert(0, str(ROOT / "fixtures"))
from make_records import GOLDEN_CASES  # noqa: E402


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name, tmp_path):
    src, spec, kw = GOLDEN_CASES[name]
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    result = normalize(RECORDS / src, out, ConvertSpec(**spec), rejects=rej, **kw)
    assert out.read_bytes() == (GOLDEN / f"{name}.jsonl").read_bytes()
    assert rej.read_bytes() == (GOLDEN / f"{name}.rejects.jsonl").read_bytes()
    assert result.reconciled
    for line in out.read_text(encoding="utf-8").splitlines():
        conv = json.loads(line)
        assert validate_conversation(conv) == []
        assert set(conv) <= {"messages", "tools"}


def test_output_is_utf8_without_escapes_and_deterministic(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    normalize(RECORDS / "alpaca.jsonl", a)
    normalize(RECORDS / "alpaca.jsonl", b)
    assert a.read_bytes() == b.read_bytes()
    assert "Résume" in a.read_text(encoding="utf-8") and "\\u" not in a.read_text(encoding="utf-8")


def test_counts_and_findings(tmp_path):
    r = normalize(
        RECORDS / "malformed.jsonl", tmp_path / "o.jsonl", ConvertSpec(fmt="openai_messages"), dedup=True
    )
    assert (r.read, r.written, r.rejected, r.duplicates) == (9, 2, 6, 1)
    assert r.rejected_by_code == {
        "invalid_json": 1,
        "no_assistant_turn": 1,
        "role_order": 1,
        "unknown_role": 1,
        "empty_content": 1,
        "missing_field": 1,
    }
    fs = {f.code: f for f in r.findings()}
    assert fs["role_order"].severity.value == "warning" and fs["role_order"].rows == (4,)
    assert fs["duplicate_row"].severity.value == "info"
    d = r.to_dict()
    assert d["counts"]["read"] == 9 and d["reconciled"] is True and d["detection"]["forced"] is True
    rejects = [json.loads(x) for x in Path(r.rejects_path).read_text(encoding="utf-8").splitlines()]
    assert [x["row"] for x in rejects] == [2, 3, 4, 5, 6, 7]
    assert set(rejects[0]) == {"row", "code", "message", "record"}


def test_all_rows_rejected_is_an_error(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"instruction": "x", "output": ""}\n', encoding="utf-8")
    r = normalize(src, tmp_path / "o.jsonl")
    assert r.written == 0 and [f.severity.value for f in r.findings()] == ["error"]


def test_without_dedup_duplicates_are_written(tmp_path):
    r = normalize(RECORDS / "malformed.jsonl", tmp_path / "o.jsonl", ConvertSpec(fmt="openai_messages"))
    assert (r.written, r.duplicates) == (3, 0)


def test_csv_and_jsonl_give_the_same_output(tmp_path):
    normalize(RECORDS / "alpaca.csv", tmp_path / "c.jsonl")
    normalize(RECORDS / "alpaca.jsonl", tmp_path / "j.jsonl")
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "j.jsonl").read_bytes()


@pytest.mark.parametrize("name", ["alpaca.parquet", "alpaca.csv.gz", "alpaca.tsv", "chat.parquet", "hf_disk"])
def test_reader_formats(name, tmp_path):
    if not (DATA / name).exists():
        pytest.fail("sources fixtures not built: run `make fixtures`")
    r = normalize(DATA / name, tmp_path / "o.jsonl")
    assert r.written > 0 and r.reconciled


def test_map_renames_columns(tmp_path):
    src = tmp_path / "qa.jsonl"
    src.write_text('{"q": "Why?", "a": "Because."}\n', encoding="utf-8")
    r = normalize(src, tmp_path / "o.jsonl", ConvertSpec(mapping={"instruction": "q", "output": "a"}))
    assert r.detection.shape == "alpaca" and r.written == 1
    with pytest.raises(UsageError) as e:
        normalize(src, tmp_path / "o2.jsonl", ConvertSpec(mapping={"instruction": "nope"}))
    assert "nope" in e.value.finding.message


@pytest.mark.parametrize(
    ("src", "code"),
    [("preference.jsonl", "preference_data"), ("text.jsonl", "pretraining_text")],
)
def test_refusals(src, code, tmp_path):
    with pytest.raises(FindingError) as e:
        normalize(RECORDS / src, tmp_path / "o.jsonl")
    assert e.value.finding.code == code
    assert not (tmp_path / "o.jsonl").exists()


def test_packed_input_refused(tmp_path):
    packed = DATA / "inmem_pack.parquet"
    if not packed.exists():
        pytest.fail("sources fixtures not built: run `make fixtures`")
    with pytest.raises(FindingError) as e:
        normalize(packed, tmp_path / "o.jsonl")
    assert e.value.finding.code == "packed_parquet_used_with_automodel"


def test_images_rejected_without_text_only(tmp_path):
    r = normalize(RECORDS / "images.jsonl", tmp_path / "o.jsonl")
    assert r.rejected_by_code == {"non_text_content": 1} and r.written == 1


def test_output_paths(tmp_path):
    src = tmp_path / "in.jsonl"
    shutil.copy(RECORDS / "alpaca.jsonl", src)
    with pytest.raises(DataprepError) as e:
        normalize(src, src)
    assert e.value.finding.code == "output_would_overwrite_input"
    out = tmp_path / "out.jsonl"
    out.write_text("old", encoding="utf-8")
    with pytest.raises(DataprepError) as e:
        normalize(src, out)
    assert e.value.finding.code == "output_exists"
    assert out.read_text(encoding="utf-8") == "old"
    r = normalize(src, out, force=True)
    assert (
        r.written == 5 and Path(r.rejects_path) == default_rejects_path(out) == tmp_path / "out.rejects.jsonl"
    )


def test_failed_run_leaves_no_output(tmp_path, monkeypatch):
    import dataprep.converters.alpaca

    def boom(self, batch):
        raise RuntimeError("bug")

    monkeypatch.setattr(dataprep.converters.alpaca.Alpaca, "convert_lines", boom)
    with pytest.raises(RuntimeError):
        normalize(RECORDS / "alpaca.jsonl", tmp_path / "o.jsonl")
    assert os.listdir(tmp_path) == []


def test_small_batches_give_the_same_output(tmp_path):
    normalize(RECORDS / "malformed.jsonl", tmp_path / "a.jsonl", ConvertSpec(fmt="openai_messages"))
    normalize(
        RECORDS / "malformed.jsonl", tmp_path / "b.jsonl", ConvertSpec(fmt="openai_messages"), batch_rows=2
    )
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.rejects.jsonl").read_bytes() == (tmp_path / "b.rejects.jsonl").read_bytes()


def test_progress_reports_records_read(tmp_path):
    seen = []
    normalize(
        RECORDS / "malformed.jsonl",
        tmp_path / "o.jsonl",
        ConvertSpec(fmt="openai_messages"),
        batch_rows=4,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen and seen == sorted(seen) and seen[-1][0] == 9


def test_oasst_counts_conversations(tmp_path):
    r = normalize(RECORDS / "oasst.jsonl", tmp_path / "o.jsonl")
    assert (r.unit, r.records_read, r.read, r.written, r.rejected) == ("conversation", 8, 3, 2, 1)


def test_conversations_yields_valid_rows_with_source_numbers():
    items = list(conversations(RECORDS / "malformed.jsonl", ConvertSpec(fmt="openai_messages")))
    assert [r for r, _ in items] == [1, 8, 9]
    assert all(validate_conversation(c) == [] for _, c in items)
    with pytest.raises(FindingError):
        conversations(RECORDS / "preference.jsonl")
    assert len(list(conversations(RECORDS / "preference.jsonl", ConvertSpec(take="chosen")))) == 2


def test_detection_alone_does_not_refuse():
    # detection alone (instantiate=False) names the shape and refuses nothing
    assert open_input(RECORDS / "preference.jsonl", instantiate=False).detection.shape == "preference"
    assert open_input(RECORDS / "dolly.jsonl", instantiate=False).detection.shape == "dolly"


_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.text(max_size=6),
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "assistant", "gpt", "x", "system", "tool"]),
                "content": st.one_of(st.none(), st.text(max_size=4)),
            }
        ),
        max_size=3,
    ),
)
_record = st.dictionaries(
    st.sampled_from(["instruction", "input", "output", "messages", "system", "prompt", "completion"]),
    _value,
    max_size=4,
)
_line = st.one_of(
    _record.map(lambda r: json.dumps(r, ensure_ascii=False)),
    st.text(max_size=8).filter(lambda s: "\n" not in s and "\r" not in s),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(_line, min_size=1, max_size=12),
    st.sampled_from(["alpaca", "openai_messages", "prompt_completion", None]),
    st.booleans(),
)
def test_random_input_never_crashes_and_always_reconciles(tmp_path_factory, lines, fmt, dedup):
    d = tmp_path_factory.mktemp("prop")
    src = d / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        r1 = normalize(src, d / "a.jsonl", ConvertSpec(fmt=fmt), dedup=dedup)
    except DataprepError as e:  # a whole-input refusal, never a traceback
        assert e.finding.code in {"unknown_schema", "pretraining_text", "preference_data", "unreadable_input"}
        return
    assert r1.reconciled
    r2 = normalize(src, d / "b.jsonl", ConvertSpec(fmt=fmt), dedup=dedup, batch_rows=3)
    assert (d / "a.jsonl").read_bytes() == (d / "b.jsonl").read_bytes()
    assert (d / "a.rejects.jsonl").read_bytes() == (d / "b.rejects.jsonl").read_bytes()
    assert r2.reconciled and r2.read == r1.read
    # JSONL lines end at "\n" only (U+0085 or U+2028 inside a string are text, not line breaks)
    out_lines = (d / "a.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(out_lines) == r1.written
    assert (d / "a.rejects.jsonl").read_text(encoding="utf-8").count("\n") == r1.rejected
    for line in out_lines:
        assert validate_conversation(json.loads(line)) == []


def test_batches_of_empty_objects_do_not_change_the_detected_shape(tmp_path):
    """Found by the property test above: a first batch of ``{}`` rows is a table with no columns, which pyarrow
    slices to any length asked, so the detection sample filled with empty rows at batch_rows=3 and the shape
    (and so the output) depended on how the input was batched."""
    src = tmp_path / "in.jsonl"
    lines = [
        "{}",
        "{}",
        "{}",
        '{"messages": [{"role": "user", "content": null}], "instruction": 0, "output": 0}',
    ]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    normalize(src, tmp_path / "a.jsonl")
    normalize(src, tmp_path / "b.jsonl", batch_rows=3)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.rejects.jsonl").read_bytes() == (tmp_path / "b.rejects.jsonl").read_bytes()


def test_a_role_map_onto_no_role_is_refused_before_the_input_is_opened(tmp_path):
    with pytest.raises(UsageError, match="role_map"):
        normalize(tmp_path / "missing.jsonl", tmp_path / "o.jsonl", ConvertSpec(role_map={"gpt": "god"}))
