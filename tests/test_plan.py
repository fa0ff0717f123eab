"""make_plan: the recommendation, the divisibility rule, oom remedies that fit, and the AutoModel overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.errors import UsageError
from dataprep.memory import GIB, MemoryInputs, estimate
from dataprep.modelconfig import load_model_config
from dataprep.plan import LOSS_TARGETS, PEFT_TARGET, expected_padded_length, make_plan, parse_size
from dataprep.stats import StatsSummary

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"
M1B = load_model_config(str(CONFIGS / "llama-3.2-1b"))
M8B = load_model_config(str(CONFIGS / "llama-3.1-8b"))
M70B = load_model_config(str(CONFIGS / "llama-3.1-70b"))

STATS_DOC = {
    "rows": 1000,
    "tokens": {"total": {"count": 1000, "mean": 700.0, "min": 20, "p50": 600, "p90": 1500, "p95": 1900,
                         "p99": 2900, "max": 7000}},
    "recommended_seq_length": 3072,
    "padding": [
        {"batch_size": 1, "random_efficiency": 1.0, "grouped_efficiency": 1.0, "expected_max_len_random": 700.0},
        {"batch_size": 2, "random_efficiency": 0.7, "grouped_efficiency": 0.99, "expected_max_len_random": 1000.0},
        {"batch_size": 4, "random_efficiency": 0.5, "grouped_efficiency": 0.98, "expected_max_len_random": 1400.0,
         "capped": [{"seq_length": 3072, "expected_max_len_random": 1350.0}]},
        {"batch_size": 8, "random_efficiency": 0.4, "grouped_efficiency": 0.97, "expected_max_len_random": 1800.0},
    ],
}  # fmt: skip
STATS = StatsSummary.from_json(STATS_DOC)


def test_result_has_the_issue_keys():
    d = make_plan(M8B, stats=STATS, gpus=8, gpu_memory_bytes=80 * GIB, method="lora").to_dict()
    assert d["parameters"] == 8_030_261_248
    assert d["trainable_parameters"] == M8B.lora_parameters(8, "*_proj")
    assert set(d["memory"]) >= {"per_gpu_gib", "breakdown"}
    assert set(d["memory"]["breakdown"]) >= {"weights", "activations", "logits", "cuda_context"}
    assert isinstance(d["fits"], bool)
    assert set(d["recommendation"]) >= {"seq_length", "local_batch_size", "global_batch_size", "grad_accumulation",
                                        "dp_size", "activation_checkpointing", "loss"}  # fmt: skip
    assert d["findings"] == []


def test_seq_length_comes_from_stats_unless_given():
    assert make_plan(M1B, stats=STATS, gpus=1).recommendation.seq_length == 3072
    assert make_plan(M1B, stats=STATS, seq_length=1024, gpus=1).recommendation.seq_length == 1024
    with pytest.raises(UsageError):
        make_plan(M1B, stats=None, gpus=1)


@pytest.mark.parametrize("gpus,global_bs", [(1, 32), (8, 64), (8, 8), (2, 6), (4, 1024)])
def test_largest_batch_that_fits_and_divides(gpus, global_bs):
    p = make_plan(M1B, seq_length=2048, gpus=gpus, gpu_memory_bytes=40 * GIB, global_batch_size=global_bs,
                  activation_checkpointing="off")  # fmt: skip
    r = p.recommendation
    assert p.fits and not p.findings
    assert r.global_batch_size == global_bs
    assert global_bs % (r.local_batch_size * gpus) == 0
    assert r.local_batch_size * gpus * r.grad_accumulation == global_bs
    assert p.estimate.total <= p.usable_bytes
    # the next larger local batch that also divides the global batch does not fit
    bigger = next(
        (b for b in range(r.local_batch_size + 1, global_bs // gpus + 1) if (global_bs // gpus) % b == 0),
        None,
    )
    if bigger is not None:
        e = estimate(MemoryInputs(model=M1B, dp=gpus, local_batch_size=bigger, padded_len=2048))
        assert e.total > p.usable_bytes


def test_margin_is_kept_free():
    loose = make_plan(
        M1B, seq_length=2048, gpus=1, gpu_memory_bytes=40 * GIB, global_batch_size=64, margin=0.0
    )
    tight = make_plan(
        M1B, seq_length=2048, gpus=1, gpu_memory_bytes=40 * GIB, global_batch_size=64, margin=0.5
    )
    assert tight.estimate.total <= 20 * GIB
    assert tight.recommendation.local_batch_size <= loose.recommendation.local_batch_size


def test_global_batch_not_divisible_gives_the_nearest_valid_values():
    p = make_plan(M1B, seq_length=1024, gpus=3, gpu_memory_bytes=80 * GIB, global_batch_size=32)
    (f,) = p.findings
    assert f.code == "global_batch_not_divisible" and f.severity.value == "error"
    unit = p.recommendation.local_batch_size * 3
    valid = f.to_dict()["nearest_valid"]
    assert all(v % unit == 0 for v in valid)
    assert min(valid) <= 32 <= max(valid)
    assert p.recommendation.global_batch_size in valid
    assert p.recommendation.global_batch_size % unit == 0


def test_activation_checkpointing_auto_turns_on_only_when_needed():
    easy = make_plan(M1B, seq_length=1024, gpus=1, gpu_memory_bytes=80 * GIB)
    assert easy.recommendation.activation_checkpointing is False
    hard = make_plan(M8B, seq_length=16384, gpus=8, gpu_memory_bytes=80 * GIB, method="lora")
    assert hard.fits and hard.recommendation.activation_checkpointing is True
    off = make_plan(M8B, seq_length=16384, gpus=8, gpu_memory_bytes=80 * GIB, method="lora",
                    activation_checkpointing="off")  # fmt: skip
    assert not off.fits
    on = make_plan(M1B, seq_length=1024, gpus=1, activation_checkpointing="on")
    assert on.recommendation.activation_checkpointing is True


def test_oom_remedies_come_in_order_and_each_fits():
    p = make_plan(M8B, seq_length=8192, gpus=1, gpu_memory_bytes=80 * GIB, activation_checkpointing="off")
    assert not p.fits and p.recommendation.local_batch_size is None
    (f,) = p.findings
    assert f.code == "oom" and f.severity.value == "error"
    remedies = f.to_dict()["remedies"]
    kinds = [r["remedy"] for r in remedies]
    assert kinds[:3] == ["reduce_seq_length", "switch_to_lora", "smaller_model"]
    assert "activation_checkpointing" in kinds and "fused_linear_ce" in kinds
    by = {r["remedy"]: r for r in remedies}
    common = dict(gpus=1, gpu_memory_bytes=80 * GIB, activation_checkpointing="off")
    s = by["reduce_seq_length"]["seq_length"]
    assert s and f"fits at seq_length {s}" in f.hint
    assert make_plan(M8B, seq_length=s, **common).fits
    assert not make_plan(M8B, seq_length=s + 256, global_batch_size=1, **common).fits
    lora = by["switch_to_lora"]
    assert f"LoRA r16 fits with local_batch_size {lora['local_batch_size']}" in f.hint
    q = make_plan(M8B, seq_length=8192, method="lora", lora_rank=16, global_batch_size=lora["local_batch_size"],
                  **common)  # fmt: skip
    assert q.fits and q.recommendation.local_batch_size == lora["local_batch_size"]
    n = by["smaller_model"]["max_parameters"]
    assert n < M8B.parameters
    assert make_plan(M1B, seq_length=8192, **common).fits == (M1B.parameters < n)
    # with 8 B/param of states (60 GiB) neither AC nor fused CE alone makes room for 8192 tokens
    assert by["activation_checkpointing"]["local_batch_size"] is None
    assert "activation checkpointing: still does not fit alone" in f.hint
    assert not make_plan(
        M8B, seq_length=8192, gpus=1, gpu_memory_bytes=80 * GIB, activation_checkpointing="on"
    ).fits
    assert f.hint.index("reduce sequence length") < f.hint.index("LoRA") < f.hint.index("smaller model")


def test_oom_ac_and_fused_ce_remedies_give_batches_that_fit():
    p = make_plan(M1B, seq_length=16384, gpus=1, gpu_memory_bytes=48 * GIB, activation_checkpointing="off")
    (f,) = p.findings
    by = {r["remedy"]: r for r in f.to_dict()["remedies"]}
    for kind, kwargs in (
        ("activation_checkpointing", {"activation_checkpointing": "on"}),
        ("fused_linear_ce", {"loss": "fused_linear_ce", "activation_checkpointing": "off"}),
    ):
        b = by[kind]["local_batch_size"]
        assert b and f"fits with local_batch_size {b}" in f.hint
        q = make_plan(M1B, seq_length=16384, gpus=1, gpu_memory_bytes=48 * GIB, global_batch_size=b, **kwargs)
        assert q.fits and q.recommendation.local_batch_size == b
        assert not make_plan(M1B, seq_length=16384, gpus=1, gpu_memory_bytes=48 * GIB, global_batch_size=b + 1,
                             **kwargs).recommendation.local_batch_size == b + 1  # fmt: skip


def test_oom_mentions_ac_and_fused_ce_only_when_off():
    p = make_plan(M70B, seq_length=8192, gpus=1, gpu_memory_bytes=80 * GIB, activation_checkpointing="on",
                  loss="fused_linear_ce")  # fmt: skip
    kinds = [r["remedy"] for r in p.findings[0].to_dict()["remedies"]]
    assert "activation_checkpointing" not in kinds and "fused_linear_ce" not in kinds
    assert "more_gpus" in kinds


# -- padding ------------------------------------------------------------------------------------------------


def test_chatdataset_pads_to_seq_length_so_the_plan_does_too():
    p = make_plan(M1B, stats=STATS, gpus=1, gpu_memory_bytes=80 * GIB)
    assert p.padded_length == 3072
    assert p.estimate.tokens == p.recommendation.local_batch_size * 3072
    assert p.expected_padded_length is not None and p.expected_padded_length < 3072


def test_dynamic_padding_uses_the_expected_longest_row():
    assert expected_padded_length(STATS, 2, 3072) == 1000
    assert expected_padded_length(STATS, 3, 3072) == 1350  # next larger batch row, capped column
    assert expected_padded_length(STATS, 8, 1024) == 1024  # capped at seq_length
    assert expected_padded_length(STATS, 64, 8192) == 1800
    assert expected_padded_length(StatsSummary.from_json({"tokens": {"total": {"max": 500}}}), 4, 2048) == 500
    assert expected_padded_length(None, 4, 2048) is None
    p = make_plan(
        M1B, stats=STATS, gpus=1, gpu_memory_bytes=80 * GIB, dynamic_padding=True, global_batch_size=2
    )
    assert p.padded_length == 1000


def test_packing_uses_the_pack_size():
    p = make_plan(M1B, stats=STATS, gpus=1, packing=True, global_batch_size=1)
    assert p.padded_length == 3072 and p.expected_padded_length is None
    assert p.overrides()["packed_sequence"] == {"packed_sequence_size": 3072}


# -- overrides ----------------------------------------------------------------------------------------------


def test_sft_overrides_have_exactly_the_automodel_keys():
    o = make_plan(M1B, seq_length=2048, gpus=2, global_batch_size=32).overrides()
    assert set(o) == {"step_scheduler", "dataset", "distributed"}
    assert set(o["step_scheduler"]) == {"local_batch_size", "global_batch_size"}
    assert o["dataset"] == {"seq_length": 2048, "truncation": True, "padding": "do_not_pad"}
    assert set(o["distributed"]) == {"activation_checkpointing"}


def test_lora_and_qlora_overrides():
    o = make_plan(M8B, seq_length=2048, gpus=8, method="lora", lora_rank=16, lora_alpha=32,
                  lora_targets="q_proj,v_proj").overrides()  # fmt: skip
    assert o["peft"] == {"_target_": PEFT_TARGET, "target_modules": ["q_proj", "v_proj"], "dim": 16, "alpha": 32,
                         "dropout": 0.0}  # fmt: skip
    assert "quantization" not in o
    q = make_plan(M8B, seq_length=2048, gpus=1, method="qlora").overrides()
    assert q["peft"]["target_modules"] == ["*_proj"]
    assert q["quantization"]["load_in_4bit"] is True and q["quantization"]["bnb_4bit_quant_type"] == "nf4"


@pytest.mark.parametrize("loss", ["chunked_ce", "fused_linear_ce"])
def test_loss_fn_only_when_not_the_default(loss):
    assert "loss_fn" not in make_plan(M1B, seq_length=1024, gpus=1).overrides()
    o = make_plan(M1B, seq_length=1024, gpus=1, loss=loss).overrides()
    assert o["loss_fn"] == {"_target_": LOSS_TARGETS[loss]}
    assert LOSS_TARGETS[loss].startswith("nemo_automodel.components.loss.")


def test_cli_overrides_mirror_the_yaml():
    p = make_plan(M8B, seq_length=2048, gpus=8, method="lora", global_batch_size=64)
    cli = p.cli_overrides()
    r = p.recommendation
    assert f"--step_scheduler.local_batch_size {r.local_batch_size}" in cli
    assert "--step_scheduler.global_batch_size 64" in cli
    assert "--dataset.seq_length 2048" in cli
    assert "--dataset.truncation true" in cli
    assert "--peft._target_ nemo_automodel.components._peft.lora.PeftConfig" in cli
    assert """--peft.target_modules '["*_proj"]'""" in cli
    assert all(c.startswith("--") for c in cli)


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gpus": 0},
        {"gpus": -1},
        {"gpu_memory_bytes": 0},
        {"gpu_memory_bytes": -5},
        {"margin": 1.0},
        {"margin": -0.1},
        {"method": "dpo"},
        {"loss": "mse"},
        {"param_dtype": "fp8"},
        {"global_batch_size": 0},
        {"seq_length": 0},
        {"activation_checkpointing": "sometimes"},
        {"method": "lora", "lora_targets": "nothing_matches"},
    ],
)
def test_bad_budgets_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        make_plan(M1B, **{"seq_length": 1024, "gpus": 1, **kwargs})


@pytest.mark.parametrize(
    "text,expected",
    [
        ("80GiB", 80 * 1024**3),
        ("80G", 80 * 1024**3),
        ("80gib", 80 * 1024**3),
        ("80GB", 80 * 10**9),
        ("81920MiB", 80 * 1024**3),
        ("0.5TiB", 512 * 1024**3),
        (" 24 GiB ", 24 * 1024**3),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "eighty", "80", "-80GiB", "0GiB", "80XB", "GiB", "8 0GiB"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 16), st.sampled_from([1, 2, 4, 8]), st.integers(1, 256), st.sampled_from([512, 2048, 8192])
)
def test_recommendation_always_divides_or_says_so(gpus, _, global_bs, seq):
    p = make_plan(M1B, seq_length=seq, gpus=gpus, gpu_memory_bytes=80 * GIB, global_batch_size=global_bs)
    r = p.recommendation
    if not p.fits:
        assert [f.code for f in p.findings] == ["oom"]
        return
    assert r.global_batch_size % (r.local_batch_size * gpus) == 0
    assert r.grad_accumulation * r.local_batch_size * gpus == r.global_batch_size
    codes = [f.code for f in p.findings]
    assert codes == ([] if global_bs % gpus == 0 and global_bs >= gpus else ["global_batch_not_divisible"])


def test_a_stats_document_is_read_once_malformed_values_ignored_good_ones_kept():
    def padded(doc, batch, seq):
        return expected_padded_length(StatsSummary.from_json(doc), batch, seq)

    good = {"padding": [{"batch_size": "x"}, {"batch_size": 8, "expected_max_len_random": 300.2}]}
    assert padded(good, 4, 1024) == 301
    assert padded({"tokens": {"total": {"max": "a"}}}, 4, 1024) is None
    assert padded({"tokens": {"total": {"max": 700}}}, 4, 512) == 512
    # anything at all is a summary (a foreign file): what is not a number where one belongs is left out
    for doc in (
        None,
        [],
        "x",
        {"rows": True, "padding": {"a": 1}, "histogram": {"edges": [1], "counts": [2]}},
    ):
        empty = StatsSummary.from_json(doc)
        assert empty.rows is None and not empty.padding and not empty.histogram
        assert empty.recommended_seq_length is None
