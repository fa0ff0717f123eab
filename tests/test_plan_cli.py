"""`dataprep plan` end to end: flags, JSON, human output, the overrides file, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "fixtures" / "configs"
MODELS = ROOT / "fixtures" / "models"
GOLDEN = ROOT / "fixtures" / "golden"
MODEL = MODELS / "chatml"
L1B = str(CONFIGS / "llama-3.2-1b")
L8B = str(CONFIGS / "llama-3.1-8b")

STATS = {
    "rows": 10,
    "tokens": {"total": {"count": 10, "mean": 300.0, "min": 50, "p50": 250, "p90": 700, "p95": 900, "p99": 1000,
                         "max": 1100}},
    "recommended_seq_length": 1024,
    "padding": [{"batch_size": 1, "random_efficiency": 1.0, "grouped_efficiency": 1.0, "expected_max_len_random": 300}],
}  # fmt: skip


@pytest.fixture
def stats_file(tmp_path):
    p = tmp_path / "stats.json"
    p.write_text(json.dumps(STATS))
    return p


def test_json_document_on_stdout(cli, stats_file):
    r = cli("plan", "--model", L8B, "--stats", stats_file, "--gpus", "8", "--gpu-memory", "80GiB",
            "--method", "lora", "--lora-rank", "16", "--global-batch-size", "64", "--json")  # fmt: skip
    assert r.exit_code == 0, r
    d = r.json()
    assert d["parameters"] == 8_030_261_248
    assert d["trainable_parameters"] == 41_943_040
    assert d["fits"] is True
    rec = d["recommendation"]
    assert rec["seq_length"] == 1024 and rec["dp_size"] == 8 and rec["global_batch_size"] == 64
    assert 64 % (rec["local_batch_size"] * 8) == 0
    assert d["memory"]["per_gpu_gib"] <= 72
    assert d["overrides"]["peft"]["dim"] == 16
    assert f"--step_scheduler.local_batch_size {rec['local_batch_size']}" in d["cli_overrides"]
    assert d["findings"] == []


def test_human_output_table_recommendation_and_overrides(cli):
    r = cli("plan", "--model", L1B, "--seq-length", "2048", "--gpus", "2", "--gpu-memory", "40GiB")
    assert r.exit_code == 0, r
    assert r.stdout == ""
    for text in ("weights", "optimizer states", "activations", "logits", "peak estimate", "recommendation:",
                 "step_scheduler:", "local_batch_size:", "--dataset.seq_length 2048"):  # fmt: skip
        assert text in r.stderr, text


def test_quiet_prints_nothing(cli):
    r = cli("plan", "--model", L1B, "--seq-length", "2048", "--quiet")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


def test_overrides_file_is_the_yaml_automodel_reads(cli, tmp_path):
    out = tmp_path / "plan" / "overrides.yaml"
    r = cli("plan", "--model", L1B, "--seq-length", "4096", "--method", "qlora", "--packing",
            "--loss", "fused_linear_ce", "--overrides", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r
    written = yaml.safe_load(out.read_text())
    assert written == r.json()["overrides"]
    assert written["packed_sequence"] == {"packed_sequence_size": 4096}
    assert (
        written["loss_fn"]["_target_"] == "nemo_automodel.components.loss.linear_ce.FusedLinearCrossEntropy"
    )
    assert written["quantization"]["load_in_4bit"] is True
    assert written["peft"]["_target_"] == "nemo_automodel.components._peft.lora.PeftConfig"
    assert not list(out.parent.glob(".*.tmp"))


def test_oom_exits_1_with_remedies(cli):
    r = cli("plan", "--model", L8B, "--seq-length", "8192", "--gpus", "1", "--gpu-memory", "80GiB",
            "--activation-checkpointing", "off")  # fmt: skip
    assert r.exit_code == 1, r
    assert "error[oom]" in r.stderr
    assert "fits at seq_length" in r.stderr and "LoRA r16 fits with local_batch_size" in r.stderr


def test_not_divisible_exits_1(cli):
    r = cli(
        "plan", "--model", L1B, "--seq-length", "1024", "--gpus", "3", "--global-batch-size", "32", "--json"
    )
    assert r.exit_code == 1
    (f,) = r.json()["findings"]
    assert f["code"] == "global_batch_not_divisible" and f["nearest_valid"]


@pytest.mark.parametrize(
    "args",
    [
        ["--gpus", "0"],
        ["--gpus", "-2"],
        ["--gpu-memory", "-80GiB"],
        ["--gpu-memory", "0GiB"],
        ["--gpu-memory", "eighty"],
        ["--gpu-memory", "80"],
        ["--margin", "1.5"],
        ["--global-batch-size", "0"],
        ["--seq-length", "0"],
        ["--method", "lora", "--lora-targets", "nope"],
    ],
)
def test_bad_budgets_exit_2(cli, args):
    r = cli("plan", "--model", L1B, "--seq-length", "1024", *args)
    assert r.exit_code == 2, r
    assert "error[usage_error]" in r.stderr or "Error" in r.stderr


def test_needs_stats_dataset_or_seq_length(cli):
    r = cli("plan", "--model", L1B)
    assert r.exit_code == 2 and "--stats, --dataset or --seq-length" in r.stderr


def test_unknown_architecture_exits_2_listing_supported(cli):
    r = cli("plan", "--model", CONFIGS / "unknown-arch", "--seq-length", "1024")
    assert r.exit_code == 2
    assert "error[unsupported_architecture]" in r.stderr
    assert "qwen3_moe" in r.stderr and "hidden_size" in r.stderr


def test_missing_model_exits_2(cli):
    r = cli("plan", "--model", "no-org/no-model", "--seq-length", "1024")
    assert r.exit_code == 2 and "error[model_not_found]" in r.stderr


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"hello": 1}'])
def test_bad_stats_file_exits_2(cli, tmp_path, content):
    p = tmp_path / "stats.json"
    p.write_text(content)
    r = cli("plan", "--model", L1B, "--stats", p)
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr


def test_dataset_path_computes_stats(cli):
    model = ROOT / "fixtures" / "models" / "chatml"
    data = ROOT / "fixtures" / "data" / "chat.jsonl"
    if not (model / "config.json").is_file() or not data.is_file():
        pytest.fail("tokenizer / chat fixtures not built: run `make fixtures`")
    r = cli("plan", "--model", model, "--dataset", data, "--gpu-memory", "1GiB", "--json")
    assert r.exit_code in (0, 1), r
    d = r.json()
    assert d["parameters"] > 0
    assert d["recommendation"]["seq_length"] > 0
    assert d["memory"]["expected_padded_length"] is not None


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
