"""``dataprep validate`` and validate_file: per-line findings with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

from dataprep.messages import validate_file

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
GOLDEN = ROOT / "fixtures" / "golden"


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
