"""``dataprep validate`` and validate_file: per-line findings with line numbers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from dataprep.messages import validate_file
from tests.rows import chat, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
GOLDEN = ROOT / "fixtures" / "golden"
FIXTURES = ROOT / "fixtures"


def test_validate_file_counts_and_lines():
    r = validate_file(str(RECORDS / "malformed.jsonl"))
    assert (r.rows, r.valid, r.invalid) == (9, 3, 6)
    assert r.first_rows["role_order"] == (4,)
    assert r.first_rows["invalid_json"] == (2,)
    p = next(p for p in r.problems if p["code"] == "unknown_role")
    assert p == {"line": 5, "code": "unknown_role", "message": "message 1 has role 'wizard'", "index": 1}


def test_golden_outputs_validate():
    for path in GOLDEN.glob("*.jsonl"):
        if not path.name.endswith(".rejects.jsonl"):
            assert validate_file(str(path)).invalid == 0, path


def test_cli_validate_ok(cli):
    r = cli("validate", GOLDEN / "openai_messages.jsonl")
    assert r.exit_code == 0 and "3 rows, 3 valid, 0 invalid" in r.stderr


def test_cli_validate_errors_with_line_numbers(cli):
    r = cli("validate", RECORDS / "malformed.jsonl")
    assert r.exit_code == 1
    assert (
        "error[role_order]: 1 line (first: line 4: system message at index 1; system goes only first)"
        in r.stderr
    )
    assert "line 5, message 1: [unknown_role]" in r.stderr


def test_cli_validate_json(cli):
    r = cli("validate", RECORDS / "malformed.jsonl", "--json")
    doc = r.json()
    assert doc["rows"] == 9 and doc["invalid"] == 6
    assert {f["code"] for f in doc["findings"]} == {
        "invalid_json",
        "no_assistant_turn",
        "role_order",
        "unknown_role",
        "empty_content",
        "missing_field",
    }
    assert all(f["severity"] == "error" for f in doc["findings"])


def test_cli_validate_sharegpt_row_points_to_normalize(cli, tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"conversations": [{"from": "human", "value": "x"}]}) + "\n", encoding="utf-8")
    r = cli("validate", src)
    assert r.exit_code == 1 and "dataprep normalize" in r.stderr


def test_cli_validate_tools_as_json_string_is_accepted(cli, tmp_path):
    src = tmp_path / "t.jsonl"
    row = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "tools": json.dumps([{"type": "function", "function": {"name": "f"}}]),
    }
    src.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert cli("validate", src).exit_code == 0


def test_cli_validate_missing_file_is_exit_2(cli, tmp_path):
    r = cli("validate", tmp_path / "nope.jsonl")
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr
    r = cli("validate", tmp_path)
    assert r.exit_code == 2 and "directory" in r.stderr


def test_files_chat_dataset_cannot_read_are_flagged(cli, tmp_path):
    import gzip
    import shutil

    src = GOLDEN / "alpaca.jsonl"
    ok = cli("validate", src, "--json")
    assert ok.exit_code == 0 and ok.json()["file_problem"] is None
    as_json = tmp_path / "train.json"  # JSONL under .json: ChatDataset parses one document ("Extra data")
    shutil.copy(src, as_json)
    gz = tmp_path / "train.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    for path, why in ((as_json, "one JSON document"), (gz, "does not decompress")):
        r = cli("validate", path, "--json")
        f = [f for f in r.json()["findings"] if f["code"] == "chat_dataset_cannot_read"]
        assert f and why in f[0]["message"] and f[0]["severity"] == "warning", r


def test_validate_truncated_gzip_is_unreadable_not_aborted(cli, tmp_path):
    # `dataprep validate x.jsonl.gz` on a truncated archive printed click's "Aborted!" with exit 1.
    data = gzip.compress(b"".join(json.dumps(chat(i)).encode() + b"\n" for i in range(5000)))
    bad = tmp_path / "t.jsonl.gz"
    bad.write_bytes(data[: len(data) // 2])
    r = cli("validate", bad)
    assert r.exit_code == 2, r
    assert "error[unreadable_input]" in r.stderr and "Aborted" not in r.stderr


def test_validate_compressed_file_is_read(cli, tmp_path):
    gz = tmp_path / "ok.jsonl.gz"
    gz.write_bytes(gzip.compress((GOLDEN / "openai_messages.jsonl").read_bytes()))
    r = cli("validate", gz)
    assert r.exit_code == 0 and "3 rows, 3 valid, 0 invalid" in r.stderr, r


@pytest.mark.parametrize(
    "name, content",
    [("empty.jsonl", b""), ("garbage.jsonl", bytes(range(256)) * 8), ("chat.parquet", None)],
)
def test_validate_refuses_what_is_not_jsonl_with_exit_2(cli, tmp_path, name, content):
    # An empty file passed (exit 0, "0 rows"); binary data and Parquet gave one invalid_json per "line".
    path = FIXTURES / "data" / name if content is None else tmp_path / name
    if content is not None:
        path.write_bytes(content)
    r = cli("validate", path, "--json")
    assert r.exit_code == 2, r
    assert [f["code"] for f in r.json()["findings"]] == ["unreadable_input"]


def test_validate_accepts_what_chat_dataset_reads(cli, tmp_path):
    # OpenAI form: content null next to tool_calls, dict arguments, content as a list of text parts.
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get", "arguments": {"a": 1}}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    r = cli("validate", write_jsonl(tmp_path / "t.jsonl", [row]))
    assert r.exit_code == 0 and "1 rows, 1 valid, 0 invalid" in r.stderr, r


def test_validate_reports_one_problem_per_cause(cli, tmp_path):
    # An image part was reported twice (non_text_content + missing_field); a broken tool call also made its
    # tool answer a role_order problem.
    image = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "q"}],
            },
            {"role": "assistant", "content": "a"},
        ]
    }
    broken_call = {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{x"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "assistant", "content": "a"},
        ]
    }
    doc = cli("validate", write_jsonl(tmp_path / "t.jsonl", [image, broken_call]), "--json").json()
    assert [(p["line"], p["code"]) for p in doc["problems"]] == [
        (1, "non_text_content"),
        (2, "invalid_tool_call"),
    ]
    hint = next(f["hint"] for f in doc["findings"] if f["code"] == "non_text_content")
    assert "normalize --text-only" in hint


def test_validate_names_an_empty_messages_list(cli, tmp_path):
    doc = cli("validate", write_jsonl(tmp_path / "t.jsonl", [{"messages": []}]), "--json").json()
    assert doc["problems"][0]["message"] == "the row has an empty 'messages' list"


def test_validate_empty_stdin_is_unreadable(cli):
    r = cli("validate", "-", input="")
    assert r.exit_code == 2 and "error[unreadable_input]: -: empty input on stdin" in r.stderr, r
    r = cli("validate", "-", input=(GOLDEN / "openai_messages.jsonl").read_text())
    assert r.exit_code == 0, r


def test_validate_reads_list_content_as_the_trainer_model_does():
    """validate's view of a row is the trainer's: text parts joined with " " (not the converters' "\\n"), and
    a part ChatDataset would drop without a word is a problem."""
    from dataprep import trainer
    from dataprep.messages import _as_chat_dataset_reads

    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    row = {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "c"}]}
    seen, problems = _as_chat_dataset_reads(row)
    assert problems == []
    assert seen["messages"][0]["content"] == trainer.row_inputs(row)[0][0]["content"] == "a b"
    for part, code in (
        (
            {"type": "text", "value": "x"},
            "missing_field",
        ),  # LLaMA-Factory's key: ChatDataset reads only "text"
        ({"type": "image_url", "image_url": {"url": "u"}}, "non_text_content"),
        ("plain", "missing_field"),
    ):
        bad = {"messages": [{"role": "user", "content": [part]}, {"role": "assistant", "content": "c"}]}
        assert [p.code for p in _as_chat_dataset_reads(bad)[1]] == [code], part
