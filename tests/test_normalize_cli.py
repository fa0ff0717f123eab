"""``dataprep normalize``: every flag, refusal, exit code and the --json payload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.rows import chat, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
DATA = ROOT / "fixtures" / "data"
ALPACA = RECORDS / "alpaca.jsonl"


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


def test_dedup_finding_has_a_true_hint_and_grammar(cli, tmp_path):
    # "info[duplicate_row]: 1 exact duplicate rows dropped (--dedup)" with "hint: drop duplicates with --dedup".
    src = write_jsonl(tmp_path / "in.jsonl", [chat(0), chat(0), chat(1)])
    r = cli("normalize", src, tmp_path / "out.jsonl", "--dedup", "--json")
    f = next(f for f in r.json()["findings"] if f["code"] == "duplicate_row")
    assert f["message"] == "1 exact duplicate row dropped (--dedup)"
    assert "--dedup" not in f["hint"]


def test_map_syntax_error_hint_shows_a_column_mapping(cli, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat(0)])
    r = cli("normalize", src, tmp_path / "out.jsonl", "--map", "question")
    assert r.exit_code == 2 and "e.g. --map instruction=question" in r.stderr


def test_role_map_target_must_be_a_role(cli, tmp_path):
    # --role-map narrator=god rejected every narrator row as unknown_role instead of saying the flag is wrong.
    r = cli("normalize", RECORDS / "sharegpt.jsonl", tmp_path / "out.jsonl", "--role-map", "narrator=god")
    assert r.exit_code == 2 and "error[usage_error]: --role-map narrator=god" in r.stderr
    assert not (tmp_path / "out.jsonl").exists()
    r = cli(
        "normalize", RECORDS / "sharegpt.jsonl", tmp_path / "out.jsonl", "--role-map", "narrator=Assistant"
    )
    assert r.exit_code == 0, r


def test_normalize_out_dash_is_refused_not_a_file_named_dash(cli, tmp_path, monkeypatch):
    # `dataprep normalize in.jsonl -` wrote a file literally named "-" (and "-.rejects.jsonl").
    monkeypatch.chdir(tmp_path)
    r = cli("normalize", RECORDS / "alpaca.jsonl", "-")
    assert r.exit_code == 2 and "error[usage_error]" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_usual_file_mode_not_0600(cli, tmp_path):
    # mkstemp's 0600 leaked into every atomic output: a trainer running as another user could not read them.
    import os

    mask = os.umask(0o022)
    try:
        out = tmp_path / "out.jsonl"
        assert cli("normalize", RECORDS / "alpaca.jsonl", out).exit_code == 0
        for p in (out, tmp_path / "out.rejects.jsonl"):
            assert p.stat().st_mode & 0o777 == 0o644, p
    finally:
        os.umask(mask)


def test_normalize_of_a_file_where_no_line_parses_is_unreadable(cli, tmp_path):
    # It said "unknown_schema: the input holds no records" (exit 1) for a file of unparseable lines, e.g.
    # CSV piped to stdin, while inspect's hint promised normalize would send such lines to the rejects.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage one\ngarbage two\n", encoding="utf-8")
    r = cli("normalize", bad, tmp_path / "out.jsonl")
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr and "none of its 2 lines" in r.stderr, r
    r = cli("normalize", "-", tmp_path / "out.jsonl", input=(RECORDS / "alpaca.csv").read_text())
    assert r.exit_code == 2 and "is it really JSONL?" in r.stderr, r


def _shards(tmp_path: Path) -> Path:
    folder = tmp_path / "shards"
    folder.mkdir()
    lines = ALPACA.read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "a.jsonl").write_text("".join(lines[:3]), encoding="utf-8")
    (folder / "b.jsonl").write_text("".join(lines[3:6]), encoding="utf-8")
    return folder


@pytest.mark.parametrize("as_glob", [False, True])
def test_normalize_force_never_overwrites_a_shard_of_a_folder_or_glob_input(cli, tmp_path, as_glob):
    folder = _shards(tmp_path)
    before = (folder / "a.jsonl").read_bytes()
    inp = str(folder / "*.jsonl") if as_glob else str(folder)
    res = cli("normalize", inp, folder / "a.jsonl", "--force", "--json")
    assert res.exit_code == 2, res
    assert res.json()["findings"][0]["code"] == "output_would_overwrite_input"
    assert (folder / "a.jsonl").read_bytes() == before
    # a new file beside the shards is still allowed, as before
    assert cli("normalize", inp, folder / "new.jsonl").exit_code in (0, 1)
    assert (folder / "new.jsonl").is_file()


def test_map_rejects_record_is_the_line_as_written(cli, tmp_path):
    # `normalize x.jsonl --map messages=conv`: the rejects' record came from the Arrow table (1 -> 1.0, and
    # keys the line lacks as null) instead of the line.
    def rec(weight, answer):
        return {
            "conv": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": answer, "weight": weight},
            ]
        }

    p = write_jsonl(tmp_path / "c.jsonl", [rec(1, ""), rec(1.5, "a")])
    r = cli("normalize", p, tmp_path / "o.jsonl", "--map", "messages=conv")
    assert r.exit_code == 0, r
    (rej,) = [json.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert rej["row"] == 1
    assert (
        rej["record"]["messages"][1]["weight"] == 1
        and '"weight":1}' in (tmp_path / "o.rejects.jsonl").read_text()
    )
