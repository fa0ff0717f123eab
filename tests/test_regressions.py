"""Regressions found in QA: each test names the command line that misbehaved and what it must do instead."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MODELS = FIXTURES / "models"
CONFIGS = FIXTURES / "configs"
RECORDS = FIXTURES / "records"
GOLDEN = FIXTURES / "golden"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


# -- validate: reads line-oriented text only, and reads it the way ChatDataset does -----------------------


def test_validate_truncated_gzip_is_unreadable_not_aborted(cli, tmp_path):
    # `dataprep validate x.jsonl.gz` on a truncated archive printed click's "Aborted!" with exit 1.
    data = gzip.compress(b"".join(json.dumps(_chat(i)).encode() + b"\n" for i in range(5000)))
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
    r = cli("validate", _jsonl(tmp_path / "t.jsonl", [row]))
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
    doc = cli("validate", _jsonl(tmp_path / "t.jsonl", [image, broken_call]), "--json").json()
    assert [(p["line"], p["code"]) for p in doc["problems"]] == [
        (1, "non_text_content"),
        (2, "invalid_tool_call"),
    ]
    hint = next(f["hint"] for f in doc["findings"] if f["code"] == "non_text_content")
    assert "normalize --text-only" in hint


def test_validate_names_an_empty_messages_list(cli, tmp_path):
    doc = cli("validate", _jsonl(tmp_path / "t.jsonl", [{"messages": []}]), "--json").json()
    assert doc["problems"][0]["message"] == "the row has an empty 'messages' list"


# -- command-line errors are findings too ---------------------------------------------------------------


def test_bad_flag_is_a_usage_error_finding(cli):
    r = cli("inspect", "--bogus", "x")
    assert r.exit_code == 2
    assert "error[usage_error]: No such option '--bogus'." in r.stderr
    assert "hint: see `dataprep inspect --help`" in r.stderr


def test_bad_flag_with_json_prints_one_json_document(cli):
    # `dataprep plan ... --method foo --json` printed nothing on stdout: a pipeline had nothing to parse.
    r = cli("plan", "--model", CONFIGS / "llama-3.2-1b", "--method", "foo", "--json")
    assert r.exit_code == 2
    doc = r.json()
    assert [f["code"] for f in doc["findings"]] == ["usage_error"]
    assert "--method" in doc["findings"][0]["message"]


def test_help_and_no_args_still_work(cli):
    assert cli("inspect", "--help").exit_code == 0
    assert cli("--version").exit_code == 0


# -- plan ---------------------------------------------------------------------------------------------------


def test_plan_seq_length_zero_names_the_flag(cli):
    # It said "plan needs --stats, --dataset or --seq-length" although --seq-length was given.
    r = cli("plan", "--model", CONFIGS / "llama-3.2-1b", "--seq-length", "0")
    assert r.exit_code == 2 and "error[usage_error]: --seq-length 0: must be positive" in r.stderr


def test_plan_negative_memory_must_be_positive(cli):
    # It said "'-5GiB': not a size with a unit".
    r = cli("plan", "--model", CONFIGS / "llama-3.2-1b", "--seq-length", "1024", "--gpu-memory=-5GiB")
    assert r.exit_code == 2 and "'-5GiB': must be positive" in r.stderr


def test_plan_model_not_found_hint_names_no_missing_flag(cli, tmp_path):
    # The hint said "or add --allow-download", a flag plan does not have.
    r = cli("plan", "--model", "some-org/no-such-model", "--seq-length", "1024")
    assert r.exit_code == 2 and "error[model_not_found]" in r.stderr
    assert "--allow-download" not in r.stderr
    assert "huggingface-cli download some-org/no-such-model" in r.stderr
    r = cli("plan", "--model", tmp_path, "--seq-length", "1024")
    assert r.exit_code == 2 and "--allow-download" not in r.stderr and "config.json" in r.stderr


# -- check-template -------------------------------------------------------------------------------------------

_LLAMA31_LIKE = (
    "{% if date_string is not defined %}{% set date_string = '26 Jul 2024' %}{% endif %}"
    "<|im_start|>system\nToday Date: {{ date_string }}<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_date_variable_with_a_fixed_fallback_is_not_called_daily(cli):
    # Llama 3.1 writes a fixed "26 Jul 2024" unless the caller passes date_string: "renderings change by
    # day" was wrong for it (that is strftime_now's case).
    doc = cli("check-template", MODELS / "chatml", "--chat-template", _LLAMA31_LIKE, "--json").json()
    date = next(f for f in doc["findings"] if f["code"] == "date_injected")
    assert "'date_string'" in date["message"] and "change by day" not in date["message"]
    assert "change by day" not in date["hint"]
    doc = cli("check-template", MODELS / "date", "--json").json()
    date = next(f for f in doc["findings"] if f["code"] == "date_injected")
    assert "strftime_now()" in date["message"] and "change by day" in date["message"]


def test_unreadable_template_file_hint_names_no_missing_flag(cli, tmp_path):
    # The catalogue's default hint said "... and --encoding", which check-template has not.
    bad = tmp_path / "t.jinja"
    bad.write_bytes(b"\xfe\xff\x00garbage\xff")
    r = cli("check-template", MODELS / "chatml", "--chat-template", bad)
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr and "--encoding" not in r.stderr


# -- normalize --------------------------------------------------------------------------------------------------


def test_dedup_finding_has_a_true_hint_and_grammar(cli, tmp_path):
    # "info[duplicate_row]: 1 exact duplicate rows dropped (--dedup)" with "hint: drop duplicates with --dedup".
    src = _jsonl(tmp_path / "in.jsonl", [_chat(0), _chat(0), _chat(1)])
    r = cli("normalize", src, tmp_path / "out.jsonl", "--dedup", "--json")
    f = next(f for f in r.json()["findings"] if f["code"] == "duplicate_row")
    assert f["message"] == "1 exact duplicate row dropped (--dedup)"
    assert "--dedup" not in f["hint"]


def test_map_syntax_error_hint_shows_a_column_mapping(cli, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [_chat(0)])
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


# -- preflight / verify-manifest ----------------------------------------------------------------------------


def test_preflight_oom_summary_says_it_does_not_fit(cli, tmp_path):
    # The summary line read "local_batch_size None x grad_accumulation None".
    model = tmp_path / "big"
    shutil.copytree(MODELS / "chatml-gen", model)
    shutil.copy(CONFIGS / "llama-3.1-70b" / "config.json", model / "config.json")
    r = cli("preflight", "--model", model, "--dataset", GOLDEN / "openai_messages.jsonl", "--out", tmp_path / "o",
            "--gpu-memory", "24GiB")  # fmt: skip
    assert r.exit_code == 1 and "error[oom]" in r.stderr
    assert "None" not in r.stderr and "plan: does not fit at seq_length" in r.stderr


def test_verify_manifest_of_a_wrong_file_hints_at_the_manifest(cli, tmp_path):
    other = tmp_path / "report.json"
    other.write_text("{}", encoding="utf-8")
    for path in (other, RECORDS / "alpaca.csv"):
        r = cli("verify-manifest", path, "--model", MODELS / "chatml")
        assert r.exit_code == 2 and "hint: pass the manifest.json preflight wrote" in r.stderr, r


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


def test_inspect_shows_the_shape_normalize_uses(cli, tmp_path):
    # A folder of shards whose first file is alpaca and second messages: inspect said alpaca (the first
    # file's schema), normalize detected openai_messages from the first rows' column union.
    folder = tmp_path / "shards"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(3)])
    _jsonl(folder / "b.jsonl", [_chat(i) for i in range(3)])
    shape = cli("inspect", folder, "--json").json()["shape"]["shape"]
    r = cli("normalize", folder, tmp_path / "out.jsonl", "--json")
    assert r.json()["detection"]["shape"] == shape


def test_preflight_reads_every_shard_of_a_messages_jsonl_folder(cli, tmp_path):
    # Only the first file of a folder of messages JSONL shards was read: 20 rows in, 10 out, no word.
    folder = tmp_path / "shards"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", [_chat(i) for i in range(10)])
    _jsonl(folder / "b.jsonl", [_chat(i) for i in range(10, 20)])
    out = tmp_path / "o"
    r = cli("preflight", "--model", MODELS / "chatml-gen", "--dataset", folder, "--out", out)
    assert r.exit_code == 0, r
    kept = [
        json.loads(x) for n in ("train.jsonl", "validation.jsonl") for x in (out / n).read_text().splitlines()
    ]
    assert sorted(c["messages"][0]["content"] for c in kept) == sorted(f"q{i}" for i in range(20))


def test_preflight_rejects_a_non_utf8_line_instead_of_replacing_bytes(cli, tmp_path):
    # Invalid bytes were decoded with errors="replace": "caf\ufffd" went into train.jsonl silently.
    data = tmp_path / "d.jsonl"
    good = json.dumps(_chat(1)).encode()
    data.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}\n'
                     + good + b"\n")  # fmt: skip
    out = tmp_path / "o"
    r = cli("preflight", "--model", MODELS / "chatml-gen", "--dataset", data, "--out", out, "--json")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(x["row"], x["code"]) for x in rejects] == [(1, "invalid_json")], r
    assert "\ufffd" not in (out / "train.jsonl").read_text() + (out / "validation.jsonl").read_text()


def test_preflight_says_how_many_duplicates_it_kept(cli, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [_chat(i % 3) for i in range(12)])
    r = cli(
        "preflight", "--model", MODELS / "chatml-gen", "--dataset", data, "--out", tmp_path / "o", "--json"
    )
    assert r.exit_code == 0, r
    dup = [f for f in r.json()["findings"] if f["code"] == "duplicate_row"]
    assert len(dup) == 1 and dup[0]["severity"] == "info" and dup[0]["message"].startswith("9 of 12 ")


def test_default_global_batch_adapts_to_the_gpus(cli, tmp_path):
    # `plan --gpus 3` (or `preflight --gpus 6`) failed with global_batch_not_divisible for a global batch of
    # 32 the user never asked for. An explicit --global-batch-size 32 still is an error (tests/test_plan_cli).
    doc = cli(
        "plan", "--model", CONFIGS / "llama-3.2-1b", "--seq-length", "1024", "--gpus", "3", "--json"
    ).json()
    rec = doc["recommendation"]
    assert doc["findings"] == [] and rec["global_batch_size"] % (rec["local_batch_size"] * 3) == 0
    r = cli("preflight", "--model", MODELS / "chatml-gen", "--dataset", GOLDEN / "openai_messages.jsonl",
            "--out", tmp_path / "o", "--gpus", "6")  # fmt: skip
    assert r.exit_code == 0 and "preflight: PASS" in r.stderr, r


def test_normalize_of_a_file_where_no_line_parses_is_unreadable(cli, tmp_path):
    # It said "unknown_schema: the input holds no records" (exit 1) for a file of unparseable lines, e.g.
    # CSV piped to stdin, while inspect's hint promised normalize would send such lines to the rejects.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage one\ngarbage two\n", encoding="utf-8")
    r = cli("normalize", bad, tmp_path / "out.jsonl")
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr and "none of its 2 lines" in r.stderr, r
    r = cli("normalize", "-", tmp_path / "out.jsonl", input=(RECORDS / "alpaca.csv").read_text())
    assert r.exit_code == 2 and "is it really JSONL?" in r.stderr, r


def test_validate_empty_stdin_is_unreadable(cli):
    r = cli("validate", "-", input="")
    assert r.exit_code == 2 and "error[unreadable_input]: -: empty input on stdin" in r.stderr, r
    r = cli("validate", "-", input=(GOLDEN / "openai_messages.jsonl").read_text())
    assert r.exit_code == 0, r
