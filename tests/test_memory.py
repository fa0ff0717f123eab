"""The per-GPU estimate: what each component counts, and how the total moves with its inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.memory import COMPONENTS, GIB, LOSSES, MemoryInputs, estimate
from dataprep.modelconfig import config_from_dict, load_model_config

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"


def _m(name: str):
    return load_model_config(str(CONFIGS / name))


def test_breakdown_has_every_component_and_sums_to_total():
    e = estimate(MemoryInputs(model=_m("llama-3.2-1b"), local_batch_size=2, padded_len=1024))
    assert tuple(e.breakdown) == COMPONENTS
    assert e.total == pytest.approx(sum(e.breakdown.values()))
    assert e.to_dict()["per_gpu_gib"] == pytest.approx(e.total / GIB, abs=1e-3)


@pytest.mark.parametrize("dtype,per_param", [("bf16", 8), ("fp32", 16)])
@pytest.mark.parametrize("dp", [1, 8])
def test_full_finetune_states_are_sharded_over_dp(dtype, per_param, dp):
    m = _m("llama-3.1-8b")
    b = estimate(MemoryInputs(model=m, dp=dp, param_dtype=dtype)).breakdown
    states = b["weights"] + b["gradients"] + b["optimizer_states"]
    assert states == pytest.approx(per_param * m.parameters / dp)


def test_lora_trains_only_the_adapters():
    m = _m("llama-3.1-8b")
    e = estimate(MemoryInputs(model=m, method="lora", lora_rank=16, lora_targets="*_proj"))
    assert e.trainable_parameters == 41_943_040
    assert e.breakdown["gradients"] == e.breakdown["optimizer_states"] == 0
    assert e.breakdown["weights"] == pytest.approx(2 * m.parameters)
    assert e.breakdown["lora_adapters"] == pytest.approx(16 * 41_943_040)


def test_qlora_base_is_about_half_a_byte_per_linear_parameter():
    m = _m("llama-3.1-8b")
    lora = estimate(MemoryInputs(model=m, method="lora")).breakdown["weights"]
    qlora = estimate(MemoryInputs(model=m, method="qlora")).breakdown["weights"]
    embeddings = 2 * m.embedding_parameters  # stay bf16
    linear = m.parameters - m.embedding_parameters
    assert 0.5 * linear < qlora - embeddings < 0.6 * linear
    assert qlora < lora / 2.5


def test_loss_functions_order_the_logits_buffer():
    m = _m("llama-3.2-1b")
    logits = {
        loss: estimate(MemoryInputs(model=m, local_batch_size=8, padded_len=2048, loss=loss)).breakdown[
            "logits"
        ]
        for loss in LOSSES
    }
    assert logits["masked_ce"] > logits["chunked_ce"] > logits["fused_linear_ce"]
    # about 12-13 bytes per (token x vocab) element with the fp32 upcast (calibration.md)
    assert 12 <= logits["masked_ce"] / (16384 * m.vocab_size) <= 16
    assert logits["fused_linear_ce"] < 0.05 * logits["masked_ce"]


def test_activation_checkpointing_keeps_layer_inputs_only():
    m = _m("llama-3.1-8b")
    off = estimate(MemoryInputs(model=m, padded_len=4096)).breakdown["activations"]
    on = estimate(MemoryInputs(model=m, padded_len=4096, activation_checkpointing=True)).breakdown[
        "activations"
    ]
    assert on < off / 5
    assert on > 4096 * m.num_layers * 2 * m.hidden_size  # at least each layer's bf16 input


def test_packed_or_padded_tokens_are_what_counts():
    m = _m("llama-3.2-1b")
    a = estimate(MemoryInputs(model=m, local_batch_size=4, padded_len=1024))
    b = estimate(MemoryInputs(model=m, local_batch_size=1, padded_len=4096))
    assert a.tokens == b.tokens == 4096
    assert a.total == pytest.approx(b.total)


def test_single_gpu_has_no_gathered_layer():
    m = _m("llama-3.2-1b")
    assert estimate(MemoryInputs(model=m, dp=1)).breakdown["fsdp_gathered"] == 0
    assert estimate(MemoryInputs(model=m, dp=8)).breakdown["fsdp_gathered"] > 0


def test_moe_activations_use_the_routed_width():
    moe = _m("qwen3-30b-a3b")
    assert moe.active_mlp_intermediate == 8 * 768
    e = estimate(MemoryInputs(model=moe, dp=8, padded_len=4096))
    assert e.breakdown["weights"] == pytest.approx(2 * moe.parameters / 8)


# -- properties ------------------------------------------------------------------------------------------

methods = st.sampled_from(["sft", "lora", "qlora"])
losses = st.sampled_from(list(LOSSES))
names = st.sampled_from(
    ["llama-3.2-1b", "llama-3.1-8b", "qwen2.5-3b", "gemma-2-2b", "mixtral-8x7b", "phi-3-mini-4k"]
)
MODELS = {}


def _cached(name):
    if name not in MODELS:
        MODELS[name] = _m(name)
    return MODELS[name]


def _inputs(name, method, loss, ac, dp, batch, seq):
    return MemoryInputs(
        model=_cached(name),
        method=method,
        loss=loss,
        activation_checkpointing=ac,
        dp=dp,
        local_batch_size=batch,
        padded_len=seq,
    )


@settings(max_examples=150, deadline=None)
@given(names, methods, losses, st.booleans(), st.integers(1, 64), st.integers(1, 32), st.integers(1, 16384),
       st.integers(1, 4096))  # fmt: skip
def test_memory_grows_with_seq_length_and_batch(name, method, loss, ac, dp, batch, seq, more):
    base = estimate(_inputs(name, method, loss, ac, dp, batch, seq)).total
    assert estimate(_inputs(name, method, loss, ac, dp, batch, seq + more)).total > base
    assert estimate(_inputs(name, method, loss, ac, dp, batch + 1, seq)).total > base


@settings(max_examples=150, deadline=None)
@given(names, methods, losses, st.booleans(), st.integers(1, 512), st.integers(1, 512), st.integers(1, 8),
       st.integers(1, 8192))  # fmt: skip
def test_more_gpus_never_need_more_memory_per_gpu(name, method, loss, ac, dp, extra, batch, seq):
    fewer = estimate(_inputs(name, method, loss, ac, dp, batch, seq)).total
    more = estimate(_inputs(name, method, loss, ac, dp + extra, batch, seq)).total
    assert more <= fewer * (1 + 1e-12)


@st.composite
def configs(draw):
    heads = draw(st.sampled_from([4, 8, 16, 32]))
    head_dim = draw(st.sampled_from([32, 64, 128]))
    return {
        "model_type": draw(st.sampled_from(["llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3"])),
        "hidden_size": heads * head_dim,
        "intermediate_size": draw(st.integers(64, 30000)),
        "num_hidden_layers": draw(st.integers(1, 96)),
        "num_attention_heads": heads,
        "num_key_value_heads": draw(st.sampled_from([h for h in (1, 2, 4, 8, 16, 32) if heads % h == 0])),
        "head_dim": head_dim,
        "vocab_size": draw(st.integers(1000, 260000)),
        "tie_word_embeddings": draw(st.booleans()),
    }


@settings(max_examples=150, deadline=None)
@given(configs(), st.sampled_from(["num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size"]),
       methods, losses, st.booleans(), st.integers(1, 64), st.integers(1, 8), st.integers(1, 8192))  # fmt: skip
def test_memory_grows_with_model_size(cfg, key, method, loss, ac, dp, batch, seq):
    bigger = dict(cfg)
    if key == "hidden_size":  # more heads keep head_dim and the head layout valid
        bigger["num_attention_heads"] *= 2
        bigger["hidden_size"] *= 2
    else:
        bigger[key] += max(1, cfg[key] // 4)
    small, large = config_from_dict(cfg), config_from_dict(bigger)
    assert large.parameters > small.parameters

    def total(m):
        return estimate(MemoryInputs(model=m, method=method, loss=loss, activation_checkpointing=ac, dp=dp,
                                     local_batch_size=batch, padded_len=seq)).total  # fmt: skip

    assert total(large) > total(small)
