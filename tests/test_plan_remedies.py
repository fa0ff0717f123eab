"""QA fixes to plan: oom remedies that fit (combined with the cheap switches when one change is not enough),
valid global batch sizes with a lowered local batch, the lowered-local-batch note, seq_length past the model's
max_position_embeddings, and no overrides file for a plan that does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.memory import GIB
from dataprep.modelconfig import load_model_config
from dataprep.plan import make_plan, valid_global_batches

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"
M1B = load_model_config(str(CONFIGS / "llama-3.2-1b"))
M8B = load_model_config(str(CONFIGS / "llama-3.1-8b"))
M70B = load_model_config(str(CONFIGS / "llama-3.1-70b"))
PHI3 = load_model_config(str(CONFIGS / "phi-3-mini-4k"))
L8B = str(CONFIGS / "llama-3.1-8b")
L1B = str(CONFIGS / "llama-3.2-1b")


def _remedies(p) -> dict[str, dict]:
    (f,) = [f for f in p.findings if f.code == "oom"]
    return {r["remedy"]: r for r in f.to_dict()["remedies"]}


def _rerun(model, r: dict, gpu_memory_bytes: int):
    """make_plan with exactly the configuration a remedy names (its batch as the global batch per GPU)."""
    return make_plan(
        model,
        seq_length=r["seq_length"],
        gpus=r["gpus"],
        gpu_memory_bytes=gpu_memory_bytes,
        method=r["method"],
        lora_rank=r.get("lora_rank", 8),
        activation_checkpointing="on" if r["activation_checkpointing"] else "off",
        loss=r["loss"],
        global_batch_size=r["local_batch_size"] * r["gpus"],
    )


# -- 1. remedies that fit ---------------------------------------------------------------------------------


def test_qa_example_qlora_with_the_cheap_switches_fits():
    # 8B LoRA at 8192 on 1x24 GiB: QLoRA alone (22.9 GiB) and fused CE alone (22.1) miss 21.6 usable; together
    # (with the activation checkpointing auto turned on) they fit.
    p = make_plan(M8B, seq_length=8192, gpus=1, gpu_memory_bytes=24 * GIB, method="lora")
    assert not p.fits
    (f,) = p.findings
    by = _remedies(p)
    q = by["switch_to_qlora"]
    assert q["with"] == ["activation_checkpointing", "fused_linear_ce"]
    assert q["method"] == "qlora" and q["loss"] == "fused_linear_ce" and q["activation_checkpointing"] is True
    b = q["local_batch_size"]
    assert (
        b
        and f"QLoRA r8 with activation checkpointing and fused linear CE fits with local_batch_size {b}"
        in f.hint
    )
    again = _rerun(M8B, q, 24 * GIB)
    assert again.fits and again.recommendation.local_batch_size == b
    # QLoRA alone really does not fit (so the switches are needed) and b + 1 does not fit with them
    alone = make_plan(M8B, seq_length=8192, gpus=1, gpu_memory_bytes=24 * GIB, method="qlora",
                      activation_checkpointing="on", global_batch_size=1)  # fmt: skip
    assert not alone.fits
    assert (
        _rerun(M8B, {**q, "local_batch_size": b + 1}, 24 * GIB).recommendation.largest_local_batch_size == b
    )


def _oom_cases():
    return [
        (M8B, dict(seq_length=8192, gpus=1, gpu_memory_bytes=24 * GIB, method="lora")),
        (M8B, dict(seq_length=8192, gpus=1, gpu_memory_bytes=80 * GIB, activation_checkpointing="off")),
        (M8B, dict(seq_length=32768, gpus=1, gpu_memory_bytes=24 * GIB, method="sft")),
        (M1B, dict(seq_length=16384, gpus=1, gpu_memory_bytes=48 * GIB, activation_checkpointing="off")),
        (M1B, dict(seq_length=65536, gpus=1, gpu_memory_bytes=16 * GIB)),
        (M70B, dict(seq_length=8192, gpus=1, gpu_memory_bytes=40 * GIB, method="qlora")),
        (M70B, dict(seq_length=8192, gpus=2, gpu_memory_bytes=80 * GIB)),
    ]


@pytest.mark.parametrize("model,kwargs", _oom_cases())
def test_every_remedy_with_numbers_fits_when_applied(model, kwargs):
    p = make_plan(model, **kwargs)
    assert not p.fits
    remedies = list(_remedies(p).values())
    kinds = [r["remedy"] for r in remedies]
    order = ["reduce_seq_length", "switch_to_lora", "switch_to_qlora", "smaller_model", "activation_checkpointing",
             "fused_linear_ce", "more_gpus"]  # fmt: skip
    assert kinds == sorted(kinds, key=order.index)  # the order
    assert kinds[0] == "reduce_seq_length"
    for r in remedies:
        if r["remedy"] == "smaller_model" or not r.get("local_batch_size"):
            continue
        again = _rerun(model, r, kwargs["gpu_memory_bytes"])
        assert again.fits, r["text"]
        assert again.recommendation.local_batch_size == r["local_batch_size"], r["text"]
        names = {"activation_checkpointing": ("activation checkpointing",), "fused_linear_ce": ("fused linear",
                 "fused_linear_ce")}  # fmt: skip
        for switch in r.get("with", []):  # every switch the remedy adds is named in its text
            assert any(n in r["text"] for n in names[switch]), r["text"]


def test_reduce_seq_length_uses_the_switches_when_even_256_tokens_do_not_fit_alone():
    # 8B full fine-tuning with fp32 params (16 B/param = 120 GiB) on 2x80: nothing fits at any length as is
    p = make_plan(M8B, seq_length=4096, gpus=2, gpu_memory_bytes=80 * GIB, param_dtype="fp32",
                  activation_checkpointing="off")  # fmt: skip
    r = _remedies(p)["reduce_seq_length"]
    if r["local_batch_size"] is None:  # truly nothing: says so
        assert "not enough" in r["text"]
    else:
        again = make_plan(M8B, seq_length=r["seq_length"], gpus=2, gpu_memory_bytes=80 * GIB, param_dtype="fp32",
                          activation_checkpointing="on" if r["activation_checkpointing"] else "off", loss=r["loss"],
                          global_batch_size=2)  # fmt: skip
        assert again.fits


def test_smaller_model_remedy_is_a_size_that_fits_with_its_switches():
    p = make_plan(M8B, seq_length=8192, gpus=1, gpu_memory_bytes=24 * GIB, method="lora")
    r = _remedies(p)["smaller_model"]
    assert 0 < r["max_parameters"] < M8B.parameters
    fits_1b = make_plan(M1B, seq_length=8192, gpus=1, gpu_memory_bytes=24 * GIB, method="lora",
                        activation_checkpointing="on" if r["activation_checkpointing"] else "off",
                        loss=r["loss"], global_batch_size=1).fits  # fmt: skip
    assert fits_1b == (M1B.parameters < r["max_parameters"])


def test_fused_ce_entry_adds_activation_checkpointing_when_alone_is_not_enough():
    p = make_plan(M8B, seq_length=8192, gpus=1, gpu_memory_bytes=80 * GIB, activation_checkpointing="off")
    by = _remedies(p)
    assert by["activation_checkpointing"]["local_batch_size"] is None  # AC alone: no (tests/test_plan.py)
    fused = by["fused_linear_ce"]
    if fused["local_batch_size"]:
        assert "fused_linear_ce" in fused["with"] or fused["loss"] == "fused_linear_ce"
        assert _rerun(M8B, fused, 80 * GIB).fits


# -- 2. valid global batch sizes with a lowered local batch ----------------------------------------------------


def test_not_divisible_lists_the_nearest_global_sizes_with_their_local_batch():
    p = make_plan(M1B, seq_length=1024, gpus=3, gpu_memory_bytes=24 * GIB, global_batch_size=32)
    (f,) = p.findings
    d = f.to_dict()
    options = d["valid_global_batch_sizes"]
    assert options[0]["global_batch_size"] == 33  # the nearest multiple of dp 3, with local 1
    assert options[0]["local_batch_size"] == 1
    for o in options:
        assert f"{o['global_batch_size']} (local_batch_size {o['local_batch_size']}" in f.message
    assert "pass global_batch_size 33 (local_batch_size 1)" in f.hint
    assert d["nearest_valid"]  # still there (pipelines read it)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 300), st.integers(1, 40))
def test_valid_global_batches_are_valid_nearest_first_and_allow_more_each(dp, global_bs, best):
    rows = valid_global_batches(global_bs, dp, best)
    assert rows
    for r in rows:
        g, loc = r["global_batch_size"], r["local_batch_size"]
        assert 1 <= loc <= best and g % (loc * dp) == 0 and r["grad_accumulation"] * loc * dp == g
        # the local batch is the largest <= best that divides
        assert all((g // dp) % x for x in range(loc + 1, best + 1))
    dists = [abs(r["global_batch_size"] - global_bs) for r in rows]
    locals_ = [r["local_batch_size"] for r in rows]
    assert dists == sorted(dists) and locals_ == sorted(set(locals_))
    # the first is the nearest valid size of all (any multiple of dp is valid with local 1)
    nearest = min(abs(v - global_bs) for v in range(dp, global_bs + 2 * dp * best + dp, dp))
    assert dists[0] == nearest
    # the last reaches the largest local batch a nearby size allows, which is best
    assert locals_[-1] == best


# -- 3. the lowered local batch is said ------------------------------------------------------------------------


def test_lowered_local_batch_is_noted_with_sizes_that_allow_more():
    p = make_plan(M1B, seq_length=1024, gpus=1, gpu_memory_bytes=24 * GIB, global_batch_size=34)
    r = p.recommendation
    assert r.local_batch_size == 2 and r.largest_local_batch_size > 2
    assert f"local_batch_size lowered from {r.largest_local_batch_size}" in r.note
    assert f"(local_batch_size {r.largest_local_batch_size}," in r.note  # a size that allows the largest
    assert p.to_dict()["recommendation"]["note"] == r.note
    exact = make_plan(M1B, seq_length=1024, gpus=1, gpu_memory_bytes=24 * GIB, global_batch_size=32)
    assert exact.recommendation.note == ""
    assert exact.to_dict()["recommendation"]["note"] is None


def test_lowered_local_batch_note_in_human_output(cli):
    r = cli(
        "plan", "--model", L1B, "--seq-length", "1024", "--gpu-memory", "24GiB", "--global-batch-size", "34"
    )
    assert r.exit_code == 0, r
    assert "note: local_batch_size lowered from" in r.stderr


# -- 4. seq_length past max_position_embeddings ---------------------------------------------------------------


def test_seq_length_past_max_position_embeddings_warns():
    p = make_plan(PHI3, seq_length=8192, gpus=8, gpu_memory_bytes=80 * GIB, method="lora")
    (w,) = [f for f in p.findings if f.code == "seq_length_exceeds_max_position_embeddings"]
    assert w.severity.value == "warning"
    assert "8192" in w.message and "4096" in w.message and "seq_length 4096 or less" in w.hint
    ok = make_plan(PHI3, seq_length=4096, gpus=8, gpu_memory_bytes=80 * GIB, method="lora")
    assert not [f for f in ok.findings if f.code == "seq_length_exceeds_max_position_embeddings"]


def test_max_position_warning_exits_0_unless_strict(cli):
    args = ("plan", "--model", str(CONFIGS / "phi-3-mini-4k"), "--seq-length", "8192", "--gpus", "8",
            "--method", "lora")  # fmt: skip
    r = cli(*args)
    assert r.exit_code == 0 and "warning[seq_length_exceeds_max_position_embeddings]" in r.stderr, r
    assert cli(*args, "--strict").exit_code == 1


# -- 5. no overrides file for a plan that does not fit ---------------------------------------------------------

OOM_ARGS = ("plan", "--model", L8B, "--seq-length", "8192", "--gpus", "1", "--gpu-memory", "24GiB",
            "--method", "lora")  # fmt: skip


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_overrides_not_written_when_the_plan_does_not_fit(cli, tmp_path, json_flag):
    out = tmp_path / "plan.yaml"
    r = cli(*OOM_ARGS, "--overrides", out, *json_flag)
    assert r.exit_code == 1 and "error[oom]" in r.stderr, r
    assert not out.exists()
    assert f"overrides not written to {out}: the plan does not fit" in r.stderr
    if json_flag:
        doc = r.json()
        assert doc["overrides_written"] is False and "overrides_path" not in doc


def test_an_existing_overrides_file_is_left_alone_when_the_plan_does_not_fit(cli, tmp_path):
    out = tmp_path / "plan.yaml"
    out.write_text("# an earlier plan\n")
    assert cli(*OOM_ARGS, "--overrides", out).exit_code == 1
    assert out.read_text() == "# an earlier plan\n"


def test_overrides_written_when_it_fits(cli, tmp_path):
    out = tmp_path / "plan.yaml"
    r = cli("plan", "--model", L1B, "--seq-length", "1024", "--overrides", out, "--json")
    assert r.exit_code == 0, r
    assert out.exists() and r.json()["overrides_written"] is True
