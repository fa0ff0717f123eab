"""Regression tests for the fixes of the review pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataprep.plan import expected_padded_length

MODEL = Path(__file__).resolve().parent.parent / "fixtures" / "models" / "chatml"


@pytest.mark.parametrize(
    "stats",
    [
        {"tokens": 5},
        {"tokens": {"total": 5}},
        {"tokens": {"total": {"max": "a"}}},
        {"padding": 5, "tokens": []},
        {"padding": [{"batch_size": "x"}]},
        {"padding": [{"batch_size": 4, "capped": [3], "expected_max_len_random": "z"}]},
        {"padding": [{"batch_size": 4, "expected_max_len_random": float("nan")}]},
    ],
)
def test_plan_malformed_stats_is_no_traceback(cli, tmp_path, stats):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats), encoding="utf-8")
    res = cli("plan", "--model", MODEL, "--stats", path, "--seq-length", "1024", "--json")
    assert res.exit_code in (0, 1)
    assert json.loads(res.stdout)["overrides"]["dataset"]["seq_length"] == 1024


def test_expected_padded_length_ignores_malformed_values_keeps_good_ones():
    good = {"padding": [{"batch_size": "x"}, {"batch_size": 8, "expected_max_len_random": 300.2}]}
    assert expected_padded_length(good, 4, 1024) == 301
    assert expected_padded_length({"tokens": {"total": {"max": "a"}}}, 4, 1024) is None
    assert expected_padded_length({"tokens": {"total": {"max": 700}}}, 4, 512) == 512


ALPACA = Path(__file__).resolve().parent.parent / "fixtures" / "records" / "alpaca.jsonl"


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


def test_check_template_non_utf8_chat_template_jinja_in_model_folder_is_unreadable_input(cli, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    (model / "chat_template.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    res = cli("check-template", model, "--json")
    assert res.exit_code == 2, res
    assert res.json()["findings"][0]["code"] == "unreadable_input"


@pytest.mark.parametrize(
    "doc",
    [
        {"base_model": 5, "tokenizer_files": 5},
        {"base_model": {}, "tokenizer_files": [1]},
        {"base_model": {}, "tokenizer_files": {"a": 5}},
        {"base_model": {}, "tokenizer_files": {}, "weights": 5},
        {"base_model": {}, "tokenizer_files": {}, "weights": {"model.safetensors": 3}},
        {"base_model": {}, "tokenizer_files": {}, "chat_template": 5},
    ],
)
def test_verify_manifest_malformed_manifest_is_unreadable_input(cli, tmp_path, doc):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = cli("verify-manifest", path, "--model", MODEL, "--json")
    assert res.exit_code == 2, res
    assert res.json()["findings"][0]["code"] == "unreadable_input"
