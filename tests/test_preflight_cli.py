"""`dataprep preflight` end to end: summaries, shard folders, rejects, duplicates, outputs that overlap the inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.rows import chat, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MODELS = FIXTURES / "models"
CONFIGS = FIXTURES / "configs"
GOLDEN = FIXTURES / "golden"
MODEL = MODELS / "chatml"
ALPACA = FIXTURES / "records" / "alpaca.jsonl"


def test_preflight_oom_summary_says_it_does_not_fit(cli, tmp_path):
    # The summary line read "local_batch_size None x grad_accumulation None".
    model = tmp_path / "big"
    shutil.copytree(MODELS / "chatml-gen", model)
    shutil.copy(CONFIGS / "llama-3.1-70b" / "config.json", model / "config.json")
    r = cli("preflight", "--model", model, "--dataset", GOLDEN / "openai_messages.jsonl", "--out", tmp_path / "o",
            "--gpu-memory", "24GiB")  # fmt: skip
    assert r.exit_code == 1 and "error[oom]" in r.stderr
    assert "None" not in r.stderr and "plan: does not fit at seq_length" in r.stderr


def test_preflight_reads_every_shard_of_a_messages_jsonl_folder(cli, tmp_path):
    # Only the first file of a folder of messages JSONL shards was read: 20 rows in, 10 out, no word.
    folder = tmp_path / "shards"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [chat(i) for i in range(10)])
    write_jsonl(folder / "b.jsonl", [chat(i) for i in range(10, 20)])
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
    good = json.dumps(chat(1)).encode()
    data.write_bytes(b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}\n'
                     + good + b"\n")  # fmt: skip
    out = tmp_path / "o"
    r = cli("preflight", "--model", MODELS / "chatml-gen", "--dataset", data, "--out", out, "--json")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(x["row"], x["code"]) for x in rejects] == [(1, "invalid_json")], r
    assert "\ufffd" not in (out / "train.jsonl").read_text() + (out / "validation.jsonl").read_text()


def test_preflight_says_how_many_duplicates_it_kept(cli, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [chat(i % 3) for i in range(12)])
    r = cli(
        "preflight", "--model", MODELS / "chatml-gen", "--dataset", data, "--out", tmp_path / "o", "--json"
    )
    assert r.exit_code == 0, r
    dup = [f for f in r.json()["findings"] if f["code"] == "duplicate_row"]
    assert len(dup) == 1 and dup[0]["severity"] == "info" and dup[0]["message"].startswith("9 of 12 ")


def test_preflight_out_folder_never_overwrites_a_shard_of_the_dataset_folder(cli, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    lines = ALPACA.read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "train.jsonl").write_text("".join(lines[:6]), encoding="utf-8")
    before = (folder / "train.jsonl").read_bytes()
    res = cli("preflight", "--model", MODEL, "--dataset", folder, "--out", folder, "--json")
    assert res.exit_code == 2, res
    assert "output_would_overwrite_input" in res.stdout
    assert (folder / "train.jsonl").read_bytes() == before


def test_a_bad_conversion_option_is_a_usage_error_before_anything_is_read_or_written(cli, tmp_path):
    """The conversion options are checked when they become a ConvertSpec, like every other bad option: exit 2,
    no report, and an unreadable dataset does not hide the bad option."""
    for args, said in (
        (("--format", "no-such-shape"), "unknown format"),
        (("--role-map", "gpt=god"), "--role-map"),
    ):
        out = tmp_path / args[0].strip("-")
        r = cli("preflight", "--model", MODEL, "--dataset", tmp_path / "missing.jsonl", "--out", out, *args)
        assert r.exit_code == 2 and "error[usage_error]" in r.stderr and said in r.stderr, r
        assert not out.exists()


def test_the_report_records_every_conversion_option(cli, tmp_path):
    r = cli("preflight", "--model", MODEL, "--dataset", ALPACA, "--out", tmp_path / "o", "--all-paths",
            "--system", "Be brief.")  # fmt: skip
    assert r.exit_code in (0, 1), r
    inputs = json.loads((tmp_path / "o" / "report.json").read_text())["inputs"]
    assert inputs["convert"]["all_paths"] is True and inputs["convert"]["system"] == "Be brief."
