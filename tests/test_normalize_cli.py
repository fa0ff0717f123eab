"""``dataprep normalize``: every flag, refusal, exit code and the --json payload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
DATA = ROOT / "fixtures" / "data"


def lines(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def test_summary_on_stderr_and_exit_0_with_rejects(cli, tmp_path):
    out = tmp_path / "o.jsonl"
    r = cli("normalize", RECORDS / "alpaca.jsonl", out)
    assert r.exit_code == 0, r
    assert r.stdout == ""
    assert "shape: alpaca (detected, confidence 0.95; columns: instruction, input, output)" in r.stderr
    assert "rows: read 6 = written 5 + rejected 1 + duplicates 0" in r.stderr
    assert "warning[empty_content]: 1 row rejected (first: row 5: output is empty)" in r.stderr
    assert len(lines(out)) == 5 and len(lines(tmp_path / "o.rejects.jsonl")) == 1


def test_strict_makes_rejects_fail(cli, tmp_path):
    r = cli("normalize", RECORDS / "alpaca.jsonl", tmp_path / "o.jsonl", "--strict")
    assert r.exit_code == 1 and "error[empty_content]" in r.stderr


def test_json_payload(cli, tmp_path):
    r = cli("normalize", RECORDS / "alpaca.csv", tmp_path / "o.jsonl", "--json")
    assert r.exit_code == 0
    doc = r.json()
    assert doc["counts"] == {
        "read": 6,
        "written": 5,
        "rejected": 1,
        "duplicates": 0,
        "records_read": 6,
        "rejected_by_code": {"empty_content": 1},
    }
    assert doc["detection"]["shape"] == "alpaca" and doc["reconciled"] is True
    assert doc["findings"][0]["code"] == "empty_content" and doc["findings"][0]["rows"] == [5]


def test_quiet(cli, tmp_path):
    r = cli("normalize", RECORDS / "dolly.jsonl", tmp_path / "o.jsonl", "--quiet")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


def test_format_forces_and_unknown_format_lists_names(cli, tmp_path):
    r = cli("normalize", RECORDS / "malformed.jsonl", tmp_path / "o.jsonl", "--format", "openai_messages")
    assert r.exit_code == 0 and "(forced," in r.stderr
    r = cli("normalize", RECORDS / "alpaca.jsonl", tmp_path / "p.jsonl", "--format", "alpacca")
    assert r.exit_code == 2 and "error[usage_error]: unknown format 'alpacca'" in r.stderr
    assert "sharegpt" in r.stderr


def test_unknown_schema(cli, tmp_path):
    src = tmp_path / "odd.jsonl"
    src.write_text('{"foo": "a", "bar": "b"}\n', encoding="utf-8")
    r = cli("normalize", src, tmp_path / "o.jsonl")
    assert r.exit_code == 1
    assert "error[unknown_schema]" in r.stderr and "foo, bar" in r.stderr and "--map" in r.stderr


def test_map(cli, tmp_path):
    src = tmp_path / "qa.csv"
    src.write_text("q,a\nWhy?,Because.\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    r = cli("normalize", src, out, "--map", "instruction=q", "--map", "output=a")
    assert r.exit_code == 0, r
    assert lines(out) == [
        {"messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]}
    ]
    r = cli("normalize", src, tmp_path / "x.jsonl", "--map", "instruction")
    assert r.exit_code == 2 and "--map 'instruction': expected NAME=VALUE" in r.stderr


def test_role_map_and_system(cli, tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text(
        '{"conversations": [{"from": "asker", "value": "q"}, {"from": "gpt", "value": "a"}]}\n',
        encoding="utf-8",
    )
    out = tmp_path / "o.jsonl"
    r = cli("normalize", src, out, "--role-map", "asker=user", "--system", "Be kind.")
    assert r.exit_code == 0, r
    assert [m["role"] for m in lines(out)[0]["messages"]] == ["system", "user", "assistant"]
    r = cli("normalize", src, tmp_path / "o2.jsonl")
    assert r.exit_code == 1 and "error[unknown_role]" in r.stderr  # every row rejected


def test_preference_refused_then_take_chosen(cli, tmp_path):
    r = cli("normalize", RECORDS / "preference.jsonl", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and "error[preference_data]" in r.stderr and "--take chosen" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
    r = cli("normalize", RECORDS / "preference.jsonl", tmp_path / "o.jsonl", "--take", "chosen")
    assert r.exit_code == 0 and len(lines(tmp_path / "o.jsonl")) == 2


def test_pretraining_text_refused(cli, tmp_path):
    r = cli("normalize", RECORDS / "text.jsonl", tmp_path / "o.jsonl")
    assert r.exit_code == 1 and "error[pretraining_text]" in r.stderr


def test_text_only(cli, tmp_path):
    r = cli("normalize", RECORDS / "images.jsonl", tmp_path / "o.jsonl")
    assert r.exit_code == 0 and "warning[non_text_content]" in r.stderr
    r = cli("normalize", RECORDS / "images.jsonl", tmp_path / "t.jsonl", "--text-only")
    assert r.exit_code == 0 and len(lines(tmp_path / "t.jsonl")) == 2


def test_dedup(cli, tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text('{"prompt": "p", "completion": "c"}\n' * 3, encoding="utf-8")
    r = cli("normalize", src, tmp_path / "o.jsonl", "--dedup", "--json")
    assert r.json()["counts"]["duplicates"] == 2 and r.json()["counts"]["written"] == 1
    assert any(f["code"] == "duplicate_row" and f["severity"] == "info" for f in r.json()["findings"])


def test_all_paths(cli, tmp_path):
    r = cli("normalize", RECORDS / "oasst.jsonl", tmp_path / "o.jsonl", "--all-paths")
    assert r.exit_code == 0 and len(lines(tmp_path / "o.jsonl")) == 3
    assert "conversations: read 4 = written 3 + rejected 1 + duplicates 0  (from 8 input rows)" in r.stderr


def test_rejects_path(cli, tmp_path):
    rej = tmp_path / "sub" / "bad.jsonl"
    r = cli("normalize", RECORDS / "alpaca.jsonl", tmp_path / "o.jsonl", "--rejects", rej)
    assert r.exit_code == 0 and lines(rej)[0]["code"] == "empty_content"
    assert not (tmp_path / "o.rejects.jsonl").exists()


def test_force_and_overwrite_input(cli, tmp_path):
    src = tmp_path / "in.jsonl"
    shutil.copy(RECORDS / "alpaca.jsonl", src)
    before = src.read_bytes()
    r = cli("normalize", src, src)
    assert r.exit_code == 2 and "error[output_would_overwrite_input]" in r.stderr
    assert src.read_bytes() == before
    out = tmp_path / "o.jsonl"
    out.write_text("keep", encoding="utf-8")
    r = cli("normalize", src, out)
    assert r.exit_code == 2 and "error[output_exists]" in r.stderr and out.read_text() == "keep"
    r = cli("normalize", src, out, "--force")
    assert r.exit_code == 0 and len(lines(out)) == 5


def test_encoding(cli, tmp_path):
    src = DATA / "alpaca_latin1.csv"
    if not src.exists():
        pytest.fail("sources fixtures not built: run `make fixtures`")
    r = cli("normalize", src, tmp_path / "o.jsonl")
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr and "--encoding" in r.stderr
    r = cli("normalize", src, tmp_path / "o.jsonl", "--encoding", "latin-1")
    assert r.exit_code == 0, r


def test_packed_refused(cli, tmp_path):
    src = DATA / "inmem_pack.parquet"
    if not src.exists():
        pytest.fail("sources fixtures not built: run `make fixtures`")
    r = cli("normalize", src, tmp_path / "o.jsonl")
    assert r.exit_code == 1 and "error[packed_parquet_used_with_automodel]" in r.stderr


def test_missing_input_is_exit_2(cli, tmp_path):
    r = cli("normalize", tmp_path / "nope.jsonl", tmp_path / "o.jsonl")
    assert r.exit_code == 2 and "error[" in r.stderr


def test_help_has_an_example_and_the_exit_policy(cli):
    r = cli("normalize", "--help")
    assert r.exit_code == 0
    assert "dataprep normalize train.csv train.jsonl" in r.stdout and "--strict" in r.stdout
