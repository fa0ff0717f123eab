"""The time estimate: FLOPs per token, tokens computed, GPU presets, plan's time figures, and the calibration.

Calibration: every row of AutoModel's performance summary (shared/calibration-throughput.md: its LoRA table on
DGX-H100 and the full-training Llama 3 70B row) is reproduced within TOLERANCE with MFU_TUNED, the settings each
row ran with taken from the row and from its benchmark recipe in NVIDIA-NeMo/Automodel (examples/llm_benchmark):

- llama3_1/llama3_1_8b_peft_benchmark.yaml (e05319eb): Llama-3.1-8B, LoRA r16 '*_proj', no AC.
- qwen/qwen2_5_7b_peft_benchmark.yaml (4f5f8641): Qwen2.5-7B, LoRA r16 '*_proj', no AC.
- llama3_3/custom_llama3_3_70b_instruct_peft_benchmark.yaml (9892fa9c): Llama-3.3-70B-Instruct (Llama 3.1 70B's
  architecture), LoRA r16 '*_proj', TP 2, activation checkpointing on, compile.
- qwen/custom_qwen2_5_32b_peft_benchmark.yaml (6b7342af): Qwen2.5-32B-Instruct, LoRA r16 '*_proj', TP 2, AC on.
- llama3_3/custom_llama3_1_70b_pretrain_benchmark_8nodes.yaml (f5b942f6): Llama-3.1-70B, full, CP 2, AC on.
The two-node rows use the same recipes ("_2nodes" variants) on 16 GPUs.

The efficiency of a stock run (HF modelling code, FSDP2, no Transformer Engine, no compile) is not measured by
these rows: plan assumes MFU_STOCK (0.30) by default, and says so (see dataprep/throughput.py for why).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dataprep.errors import UsageError
from dataprep.measure import TokenCounts
from dataprep.memory import GIB
from dataprep.modelconfig import load_model_config
from dataprep.plan import make_plan
from dataprep.stats import stats_from_counts
from dataprep.throughput import (
    GPUS,
    MFU_STOCK,
    MFU_TUNED,
    Hardware,
    Workload,
    epoch_tokens,
    estimate_time,
    flops_per_token,
    fsdp_bytes_per_step,
    gpu_preset,
)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "fixtures" / "configs"
SHARED = ROOT.parent / "shared" / "calibration-throughput.md"
TOLERANCE = 0.15
H100 = Hardware.resolve("H100-80GB")
PAGE = "AutoModel performance summary, DGX-H100 BF16"


def model(name: str):
    return load_model_config(str(CONFIGS / name))


# -- calibration ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    model: str  # fixtures/configs folder
    page_model: str  # as the page names it
    method: str
    gpus: int
    global_batch: int
    local_batch: int
    seq: int
    tokens_per_s_per_gpu: float  # published
    ac: bool = False
    tp: int = 1
    cp: int = 1


ROWS = [
    Row("llama3-8b-lora-1gpu", "llama-3.1-8b", "Llama3 8B", "lora", 1, 32, 2, 4096, 12472.87),
    Row("qwen2.5-7b-lora-1gpu", "qwen2.5-7b", "Qwen2.5 7B", "lora", 1, 32, 2, 4096, 14110.05),
    Row("llama3-70b-lora-8gpu", "llama-3.1-70b", "Llama3 70B", "lora", 8, 32, 2, 4096, 1091.85, ac=True, tp=2),
    Row("qwen2.5-32b-lora-8gpu", "qwen2.5-32b-instruct", "Qwen2.5 32B", "lora", 8, 32, 2, 4096, 2250.31, ac=True,
        tp=2),
    Row("llama3-70b-lora-16gpu", "llama-3.1-70b", "Llama3 70B, 2 nodes", "lora", 16, 32, 2, 4096, 984.85, ac=True,
        tp=2),
    Row("qwen2.5-32b-lora-16gpu", "qwen2.5-32b-instruct", "Qwen2.5 32B, 2 nodes", "lora", 16, 32, 2, 4096,
        2072.89, ac=True, tp=2),
    Row("llama3-70b-full-64gpu", "llama-3.1-70b", "Llama3 70B", "sft", 64, 128, 1, 8192, 866.77, ac=True, cp=2),
]  # fmt: skip


def _estimate(row: Row, mfu: float = MFU_TUNED) -> float:
    """Tokens/s/GPU the estimate gives for the row's settings (mock data: full sequences, nothing padded)."""
    w = Workload(model(row.model), row.method, row.seq, row.local_batch, row.global_batch, row.gpus,
                 activation_checkpointing=row.ac, lora_rank=16, lora_targets="*_proj", tp=row.tp, cp=row.cp)  # fmt: skip
    t = estimate_time(w, None, hardware=H100, mfu=mfu)
    assert t.bound == "compute"  # the calibration is of the compute model alone
    return row.global_batch * row.seq / (t.step_seconds * row.gpus)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_calibration_row(row: Row):
    est = _estimate(row)
    residual = est / row.tokens_per_s_per_gpu - 1
    assert abs(residual) <= TOLERANCE, (
        f"{row.id}: estimate {est:.0f} vs published {row.tokens_per_s_per_gpu:.0f} ({residual:+.1%})"
    )


def test_mfu_tuned_is_the_fit_of_the_rows():
    """MFU_TUNED is (to 0.01) the value that minimizes the largest residual: a constant the rows decide."""
    implied = [row.tokens_per_s_per_gpu / _estimate(row, 1.0) for row in ROWS]
    best = 2 / (1 / min(implied) + 1 / max(implied))  # equalizes the two extreme residuals
    assert abs(MFU_TUNED - best) <= 0.01
    assert MFU_STOCK < MFU_TUNED  # a stock run is assumed slower than the tuned benchmark stack


def test_every_shared_row_is_reproduced():
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} is absent (shared reference data, not part of the project)")
    published = []
    for line in SHARED.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and re.fullmatch(r"\d+(\.\d+)?", cells[-1]) and cells[1].isdigit():
            published.append((cells[0], int(cells[1]), float(cells[-1])))
    assert len(published) == len(ROWS) == 7
    for name, gpus, tps in published:
        match = [r for r in ROWS if r.page_model == name and r.gpus == gpus and r.tokens_per_s_per_gpu == tps]
        assert len(match) == 1, f"no test row for {name} on {gpus} GPU(s), {tps} tokens/s/GPU"


def test_new_fixture_configs_count_the_published_parameters():
    # Qwen2.5-7B: 7.61B (Qwen2.5 model card); Qwen2.5-32B-Instruct: the Hub's safetensors total, 32.8B
    assert model("qwen2.5-7b").parameters == 7_615_616_512
    assert model("qwen2.5-32b-instruct").parameters == 32_763_876_352


def residual_table() -> str:
    """Markdown: each row, its published tokens/s/GPU, the estimate and the residual (for bench/README.md)."""
    lines = [
        "| row | GPUs | method | AC | published tokens/s/GPU | estimate | residual |",
        "|---|--:|---|---|--:|--:|--:|",
    ]
    for r in ROWS:
        est = _estimate(r)
        par = (f", TP {r.tp}" if r.tp > 1 else "") + (f", CP {r.cp}" if r.cp > 1 else "")
        lines.append(
            f"| {r.page_model} ({r.id}){par} | {r.gpus} | {r.method} | {'on' if r.ac else 'off'} | "
            f"{r.tokens_per_s_per_gpu:,.0f} | {est:,.0f} | {est / r.tokens_per_s_per_gpu - 1:+.1%} |"
        )
    return "\n".join(lines)


# -- FLOPs ------------------------------------------------------------------------------------------------------


def test_full_sft_is_six_flops_per_matmul_parameter():
    """Short rows (attention negligible): forward 2 and backward 4 FLOPs per weight a token meets."""
    m = model("llama-3.1-8b")
    f = flops_per_token(m, method="sft", context=1)
    matmul_params = m.parameters - m.vocab_size * m.hidden_size  # the embedding is a lookup, not a GEMM
    assert f.total == pytest.approx(6 * matmul_params, rel=0.001)


def test_lora_skips_the_frozen_weight_gradients():
    m = model("llama-3.1-8b")
    full = flops_per_token(m, method="sft", context=1)
    lora = flops_per_token(m, method="lora", context=1, lora_rank=16)
    assert 0.66 < lora.total / full.total < 0.68  # 4/6, plus the adapters
    assert (
        flops_per_token(m, method="qlora", context=1).total
        == flops_per_token(m, method="lora", context=1).total
    )


def test_moe_counts_the_active_experts_only():
    m = model("mixtral-8x7b")
    f = flops_per_token(m, method="sft", context=1)
    # Mixtral 8x7B: ~12.9B active of ~46.7B parameters
    assert 5.8 * 12.5e9 < f.total < 6.2 * 13.2e9
    assert f.total < 0.3 * 6 * m.parameters


def test_attention_makes_a_sequence_cost_more_than_linearly():
    m = model("llama-3.1-8b")
    per_seq = {s: s * flops_per_token(m, context=s).total for s in (2048, 4096, 8192)}
    assert per_seq[4096] > 2 * per_seq[2048] and per_seq[8192] > 2 * per_seq[4096]
    # and the per-token increase is linear in the context (causal attention over the row)
    d1 = flops_per_token(m, context=4096).total - flops_per_token(m, context=2048).total
    d2 = flops_per_token(m, context=8192).total - flops_per_token(m, context=4096).total
    assert d2 == pytest.approx(2 * d1)


@pytest.mark.parametrize("method,low,high", [("sft", 1.28, 1.34), ("lora", 1.40, 1.50)])
def test_activation_checkpointing_recomputes_one_forward(method, low, high):
    """Full SFT: one forward on top of three (~4/3); LoRA: one on top of two (~3/2); a little less where the
    lm_head (not recomputed) weighs in."""
    m = model("llama-3.1-8b")
    off = flops_per_token(m, method=method, context=2048)
    on = flops_per_token(m, method=method, context=2048, activation_checkpointing=True)
    assert low < on.total / off.total < high
    assert on.total / off.total == pytest.approx(off.checkpointing_factor)


# -- tokens from the stats ----------------------------------------------------------------------------------


def _lengths(n: int = 3000, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [max(16, int(rng.lognormvariate(6.3, 0.8))) for _ in range(n)]  # median ~550, a long tail


def _result(lengths: list[int], **kw):
    return stats_from_counts(TokenCounts.from_lists(lengths), seq_lengths=(1024, 2048, 4096),
                             batch_sizes=(1, 2, 4, 8, 16), **kw)  # fmt: skip


def _stats(lengths: list[int], **kw):
    return _result(lengths, **kw).summary()


def test_real_tokens_are_the_rows_after_truncation():
    lengths = _lengths()
    e = epoch_tokens(_stats(lengths), seq_length=1024, local_batch_size=1, packing=False)
    assert e.rows == len(lengths)
    assert e.real_tokens == pytest.approx(sum(min(n, 1024) for n in lengths))


def test_padding_matches_a_simulated_collator():
    """computed tokens = rows x the expected longest row of a random micro-batch (capped at seq_length): the
    same as shuffling, batching and padding each batch to its longest row."""
    lengths = _lengths()
    stats = _stats(lengths)
    rng = random.Random(1)
    for b in (2, 8):
        e = epoch_tokens(stats, seq_length=2048, local_batch_size=b, packing=False)
        simulated = []
        for _ in range(20):
            order = rng.sample(lengths, len(lengths))
            simulated.append(sum(b * min(2048, max(order[i : i + b])) for i in range(0, len(order), b)))
        assert e.computed_tokens == pytest.approx(sum(simulated) / len(simulated), rel=0.02)
    small = epoch_tokens(stats, seq_length=2048, local_batch_size=1, packing=False)
    big = epoch_tokens(stats, seq_length=2048, local_batch_size=16, packing=False)
    assert small.computed_tokens == pytest.approx(small.real_tokens, rel=0.01)  # one row: no padding
    assert big.computed_tokens > 1.5 * small.computed_tokens


def test_packing_computes_the_packs():
    lengths = _lengths()
    stats = _stats(lengths)
    row = next(p for p in _result(lengths).to_dict()["packing"] if p["seq_length"] == 2048)
    e = epoch_tokens(stats, seq_length=2048, local_batch_size=4, packing=True)
    assert e.sequences == pytest.approx(row["packs"], rel=0.001)
    assert e.computed_tokens == pytest.approx(row["packs"] * 2048, rel=0.001)
    # attention runs within each packed row: shorter than the pack
    assert e.attention_context < 2048


def test_a_sample_is_scaled_to_the_rows_read():
    lengths = _lengths(1000)
    stats = _stats(lengths, rows_read=10_000, sampled=True)
    e = epoch_tokens(stats, seq_length=4096, local_batch_size=1, packing=False)
    assert e.rows == pytest.approx(10_000)


def test_time_follows_the_computed_tokens():
    lengths = _lengths()
    stats = _stats(lengths)
    m = model("llama-3.1-8b")
    padded = estimate_time(Workload(m, "lora", 2048, 8, 64, 8), stats, hardware=H100)
    packed = estimate_time(Workload(m, "lora", 2048, 8, 64, 8, packing=True), stats, hardware=H100)
    ratio = padded.epoch.computed_tokens / packed.epoch.computed_tokens
    assert ratio > 1.3
    # per token the packed run costs a little less (attention within shorter rows), so time drops a bit more
    assert packed.epoch_seconds < padded.epoch_seconds / ratio * 1.02


# -- epoch, run, GPU-hours -----------------------------------------------------------------------------------


def test_epochs_steps_gpu_hours_and_cost():
    stats = _stats(_lengths())
    m = model("llama-3.1-8b")
    t = estimate_time(Workload(m, "lora", 2048, 4, 32, 8), stats, hardware=H100, epochs=3, gpu_hour_price=2.5)
    assert t.steps_per_epoch == math.ceil(3000 / 32)
    assert t.run_seconds == pytest.approx(3 * t.epoch_seconds)
    assert t.gpu_hours == pytest.approx(t.run_seconds * 8 / 3600)
    d = t.to_dict()
    assert d["run"]["cost"] == pytest.approx(d["run"]["gpu_hours"] * 2.5, rel=0.001)
    # max_steps stops earlier when it comes first
    short = estimate_time(Workload(m, "lora", 2048, 4, 32, 8), stats, hardware=H100, epochs=3, max_steps=10)
    assert short.run_steps == 10 and short.limited_by == "max_steps"
    assert short.run_seconds == pytest.approx(10 * short.step_seconds)


def test_more_gpus_cut_wall_time_not_gpu_hours():
    stats = _stats(_lengths())
    m = model("llama-3.1-8b")
    one = estimate_time(Workload(m, "sft", 2048, 4, 64, 8), stats, hardware=H100)
    two = estimate_time(Workload(m, "sft", 2048, 4, 64, 16), stats, hardware=H100)
    assert two.run_seconds == pytest.approx(one.run_seconds / 2)
    assert two.gpu_hours == pytest.approx(one.gpu_hours)


def test_no_stats_means_full_sequences_and_no_epoch():
    m = model("llama-3.1-8b")
    t = estimate_time(Workload(m, "lora", 4096, 2, 32, 1), None, hardware=H100, max_steps=100)
    assert t.epoch is None and t.run_steps == 100
    assert t.to_dict()["tokens_per_step"]["computed"] == 32 * 4096
    assert any("no stats" in a for a in t.assumptions)


def test_fsdp_traffic_floor_binds_on_pcie_not_on_nvlink():
    """Micro-batches of 1,000 tokens, 8 GPUs, an 8B model: the all-gathers outlast the compute over PCIe (32 GB/s),
    not over NVLink (450 GB/s)."""
    stats = _stats([500] * 3000)
    w = Workload(model("llama-3.1-8b"), "lora", 2048, 2, 64, 8)
    pcie = estimate_time(w, stats, hardware=Hardware.resolve("l40s"))
    nvlink = estimate_time(w, stats, hardware=Hardware.resolve("h100"))
    assert pcie.bound == "communication" and pcie.step_seconds == pcie.communication_seconds
    assert nvlink.bound == "compute" and nvlink.step_seconds == nvlink.compute_seconds
    # the floor is the bytes over the link: the parameters gathered twice per micro-batch (forward, backward)
    params_bytes = 2 * w.model.parameters * 7 / 8
    assert pcie.communication_seconds == pytest.approx(2 * params_bytes * w.micro_batches / 32e9)
    # one GPU has nothing to gather; beyond a node no floor is drawn
    assert (
        estimate_time(replace(w, gpus=1), stats, hardware=Hardware.resolve("l40s")).communication_seconds
        is None
    )
    assert (
        estimate_time(replace(w, gpus=16), stats, hardware=Hardware.resolve("l40s")).communication_seconds
        is None
    )


def test_full_sft_also_reduce_scatters_its_gradients():
    w = Workload(model("llama-3.2-1b"), "sft", 2048, 4, 32, 8)
    lora = replace(w, method="lora")
    extra = fsdp_bytes_per_step(w) - fsdp_bytes_per_step(lora)
    assert extra == pytest.approx(2 * w.model.parameters * 7 / 8)


# -- GPU presets -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["h100", "H100", "h100-80gb", "H100-SXM", "h100_sxm5"])
def test_gpu_names_are_case_insensitive_with_aliases(name):
    assert gpu_preset(name).name == "H100-80GB"


def test_every_preset_has_a_peak_memory_and_source():
    for spec in GPUS:
        assert spec.peak_tflops > 0 and spec.memory_bytes > 10 * GIB
        assert re.search(r"\d", spec.source) and "MiB" in spec.source, spec.name
        assert gpu_preset(spec.name.lower()) == spec


def test_unknown_or_ambiguous_gpu_is_a_usage_error_with_names():
    with pytest.raises(UsageError) as err:
        gpu_preset("tpu-v5")
    assert "H100-80GB" in err.value.finding.hint
    with pytest.raises(UsageError, match="A100-80GB or A100-40GB"):
        gpu_preset("a100")


def test_gpu_memory_wins_over_the_preset_and_says_so():
    m = model("llama-3.1-8b")
    p = make_plan(m, seq_length=2048, gpus=8, gpu="h200", gpu_memory_bytes=80 * GIB, method="lora")
    assert p.gpu_memory_bytes == 80 * GIB
    assert "overrides the H200 preset" in p.to_dict()["budget"]["gpu_memory_source"]
    p = make_plan(m, seq_length=2048, gpus=8, gpu="h200", method="lora")
    assert p.gpu_memory_bytes == gpu_preset("h200").memory_bytes
    assert p.time.hardware.peak_tflops == gpu_preset("h200").peak_tflops


def test_without_a_gpu_the_memory_is_80gib_and_the_peak_an_assumed_h100():
    p = make_plan(model("llama-3.1-8b"), seq_length=2048, gpus=8, method="lora")
    assert p.gpu_memory_bytes == 80 * GIB
    t = p.to_dict()["time"]
    assert t["peak_assumed"] is True and t["gpu"] == "H100-80GB"
    assert any("assumed" in a for a in t["assumptions"])


def test_gpu_tflops_overrides_the_peak():
    m = model("llama-3.1-8b")
    base = make_plan(m, seq_length=2048, gpus=8, gpu="h100", method="lora")
    half = make_plan(m, seq_length=2048, gpus=8, gpu="h100", gpu_tflops=989.4 / 2, method="lora")
    assert half.time.step_seconds == pytest.approx(2 * base.time.step_seconds)
    assert half.time.hardware.source.startswith("gpu_tflops 494.7")


def test_a_bigger_gpu_changes_the_plan():
    m = model("llama-3.1-8b")
    small = make_plan(m, seq_length=4096, gpus=8, gpu="a10g", method="lora")
    big = make_plan(m, seq_length=4096, gpus=8, gpu="b200", method="lora")
    assert big.recommendation.largest_local_batch_size > small.recommendation.largest_local_batch_size
    assert big.time.step_seconds < small.time.step_seconds / 10  # 2,250 vs 70 TFLOPS


@pytest.mark.parametrize("kw", [{"mfu": 0}, {"mfu": 1.5}, {"epochs": 0}, {"max_steps": 0}, {"gpu_hour_price": -1},
                                {"gpu_tflops": 0}, {"gpu": "nope"}])  # fmt: skip
def test_bad_time_options_are_usage_errors(kw):
    with pytest.raises(UsageError):
        make_plan(model("llama-3.2-1b"), seq_length=1024, **kw)


# -- plan ------------------------------------------------------------------------------------------------------


def test_plan_time_is_self_describing():
    """What preflight's report takes: make_plan computes it from the stats, units in the key names."""
    stats = _stats(_lengths())
    p = make_plan(model("llama-3.1-8b"), stats=stats, seq_length=2048, gpus=8, gpu_memory_bytes=80 * GIB,
                  method="lora", gpu="h100", epochs=2, gpu_hour_price=3.0)  # fmt: skip
    d = json.loads(json.dumps(p.to_dict()))["time"]
    assert {"step_seconds", "sequences_per_step", "tokens_per_step", "tokens_per_second_per_gpu", "epoch", "run",
            "mfu", "mfu_source", "peak_tflops_per_gpu", "peak_source", "gflops_per_computed_token",
            "activation_checkpointing_step_time_factor", "assumptions", "alternatives"} <= set(d)  # fmt: skip
    assert {"rows", "real_tokens", "computed_tokens", "steps", "seconds", "hours"} <= set(d["epoch"])
    assert {"epochs", "steps", "seconds", "hours", "gpu_hours", "cost", "gpu_hour_price"} <= set(d["run"])
    assert d["run"]["epochs"] == 2 and d["run"]["cost"] > 0
    assert d["epoch"]["steps"] == math.ceil(3000 / p.recommendation.global_batch_size)


def test_plan_offers_packing_when_padding_wastes_compute():
    stats = _stats(_lengths())
    p = make_plan(model("llama-3.1-8b"), stats=stats, seq_length=4096, gpus=8, method="lora", gpu="h100")
    alt = next(a for a in p.time.alternatives if a["change"] == "packing")
    assert alt["computed_tokens_ratio"] < 0.8 and alt["time_ratio"] < 0.8
    assert "fewer computed tokens" in alt["text"]


def test_full_sft_plan_says_what_lora_would_save():
    p = make_plan(model("llama-3.2-1b"), seq_length=2048, gpus=8, method="sft", gpu="h100")
    alt = next(a for a in p.time.alternatives if a["change"] == "lora")
    assert 0.6 < alt["time_ratio"] < 0.75


def test_oom_remedies_carry_their_time_consequence():
    m = model("llama-3.1-8b")
    p = make_plan(m, seq_length=8192, gpus=1, method="sft", activation_checkpointing="off", gpu="h100")
    assert p.time is None  # nothing fits: nothing to time
    remedies = {r["remedy"]: r for r in p.findings[0].data["remedies"]}
    lora = remedies["switch_to_lora"]
    assert lora["time_ratio"] < 1 and "time per epoch" in lora["text"]
    with_ac = [r for r in remedies.values() if r.get("activation_checkpointing") and r.get("time_ratio")]
    assert with_ac and all("recomputes" in r["text"] or "frozen" in r["text"] for r in with_ac)
    more = remedies["more_gpus"]
    assert "the same GPU-hours" in more["text"] or "GPU-hours" in more["text"]


def test_ac_remedy_costs_the_checkpointing_factor():
    """An oom that AC alone fixes: its remedy's time ratio is the checkpointing factor."""
    m = model("llama-3.2-1b")
    p = make_plan(m, seq_length=8192, gpus=1, gpu_memory_bytes=32 * GIB, method="sft",
                  activation_checkpointing="off", global_batch_size=1)  # fmt: skip
    remedies = {r["remedy"]: r for r in p.findings[0].data["remedies"]}
    ac = remedies["activation_checkpointing"]
    assert ac["local_batch_size"] == 1 and "recomputes each layer's forward" in ac["text"]
    factor = flops_per_token(m, method="sft", context=8192).checkpointing_factor
    assert ac["time_ratio"] == pytest.approx(factor, rel=0.01)


# -- command line ------------------------------------------------------------------------------------------------


@pytest.fixture
def stats_file(tmp_path):
    p = tmp_path / "stats.json"
    p.write_text(json.dumps(_result(_lengths()).to_dict()))
    return p


def test_plan_prints_memory_step_epoch_and_gpu_hours(cli, stats_file):
    r = cli("plan", "--model", CONFIGS / "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--stats", stats_file,
            "--method", "lora", "--epochs", "3", "--gpu-hour-price", "2.5")  # fmt: skip
    assert r.exit_code == 0, r
    for text in ("peak estimate", "H100-80GB preset", "per optimizer step", "tokens per epoch", "epoch:",
                 "3 epochs", "GPU-hours", "cost", "instead: packing"):  # fmt: skip
        assert text in r.stderr, text


def test_plan_json_has_the_time_keys(cli, stats_file):
    r = cli("plan", "--model", CONFIGS / "llama-3.1-8b", "--gpu", "H200", "--gpus", "8", "--stats", stats_file,
            "--method", "lora", "--max-steps", "50", "--mfu", "0.4", "--json")  # fmt: skip
    assert r.exit_code == 0, r
    t = r.json()["time"]
    assert t["gpu"] == "H200" and t["mfu"] == 0.4 and t["mfu_source"] == "--mfu"
    assert t["run"]["steps"] == 50 and t["run"]["limited_by"] == "max_steps"
    assert r.json()["budget"]["gpu"] == "H200"


def test_plan_gpu_memory_overrides_the_preset_and_says_so(cli):
    r = cli("plan", "--model", CONFIGS / "llama-3.2-1b", "--seq-length", "2048", "--gpu", "h200", "--gpu-memory",
            "40GiB")  # fmt: skip
    assert r.exit_code == 0, r
    assert "40.0 GiB per GPU (--gpu-memory (overrides the H200 preset's" in r.stderr


@pytest.mark.parametrize("args,words", [(("--mfu", "0"), "--mfu"), (("--gpu", "v100x"), "H100-80GB"),
                                        (("--gpu", "a100"), "A100-80GB or A100-40GB")])  # fmt: skip
def test_plan_bad_time_flags_exit_2_with_a_hint(cli, args, words):
    r = cli("plan", "--model", CONFIGS / "llama-3.2-1b", "--seq-length", "2048", *args)
    assert r.exit_code == 2, r
    assert words in r.stderr and "Traceback" not in r.stderr


def test_preflight_takes_the_time_flags(cli, tmp_path):
    out = tmp_path / "prep"
    r = cli("preflight", "--model", ROOT / "fixtures" / "models" / "chatml", "--dataset",
            ROOT / "fixtures" / "data" / "chat.jsonl", "--out", out, "--gpu", "l40s", "--gpus", "2",
            "--epochs", "2", "--mfu", "0.25")  # fmt: skip
    assert r.exit_code == 0, r
    assert "time: ~" in r.stderr and "2 x L40S" in r.stderr
    report = json.loads((out / "report.json").read_text())
    inputs = json.dumps(report)
    assert '"gpu": "l40s"' in inputs or '"gpu": "L40S"' in inputs


if __name__ == "__main__":
    print(residual_table())
