"""config.json reading, HF cache resolution, exact parameter counts, LoRA counts, safetensors headers."""

from __future__ import annotations

import json
import runpy
import struct
from pathlib import Path

import pytest

from dataprep.errors import DataprepError, ModelNotFound, UnreadableInput, UsageError
from dataprep.modelconfig import (
    SUPPORTED_MODEL_TYPES,
    config_from_dict,
    load_model_config,
    read_safetensors_header,
)

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"
MAKE = runpy.run_path(str(CONFIGS.parent / "make_configs.py"))

# Published totals (the models' safetensors parameter counts); the config formula must give them exactly.
KNOWN = {
    "llama-3.1-8b": 8_030_261_248,
    "llama-3.2-1b": 1_235_814_400,
    "llama-3.2-3b": 3_212_749_824,
    "llama-3.1-70b": 70_553_706_496,
    "qwen2.5-3b": 3_085_938_688,
    "qwen3-0.6b": 596_049_920,
    "qwen3-8b": 8_190_735_360,
    "mistral-7b-v0.3": 7_248_023_552,
    "gemma-2b": 2_506_172_416,
    "gemma-2-2b": 2_614_341_888,
    "phi-3-mini-4k": 3_821_079_552,
    "mixtral-8x7b": 46_702_792_704,
    "qwen3-30b-a3b": 30_532_122_624,
}


@pytest.fixture(scope="module", autouse=True)
def _configs():
    if not (CONFIGS / "llama-3.1-8b" / "config.json").is_file():
        MAKE["main"]()


@pytest.mark.parametrize("name,expected", sorted(KNOWN.items()))
def test_exact_parameter_count_from_config(name, expected):
    m = load_model_config(str(CONFIGS / name))
    assert m.parameter_source == "config"
    assert m.parameters == expected


def test_qwen2_moe_with_shared_expert_is_about_57b():
    m = load_model_config(str(CONFIGS / "qwen2-57b-a14b"))
    assert m.shared_expert_intermediate_size == 20480
    assert abs(m.parameters - 57.4e9) / 57.4e9 < 0.002


def test_config_details_that_change_the_count():
    qwen = load_model_config(str(CONFIGS / "qwen2.5-3b"))
    assert qwen.qkv_bias and qwen.tie_embeddings
    no_bias = config_from_dict(
        {**json.loads((CONFIGS / "qwen2.5-3b" / "config.json").read_text()), "model_type": "llama"}
    )
    # q, k, v biases: (nq + 2 nkv) * d per layer
    assert qwen.parameters - no_bias.parameters == 36 * (16 + 2 * 2) * 128
    gemma = load_model_config(str(CONFIGS / "gemma-2-2b"))
    assert gemma.head_dim == 256 and gemma.num_heads * gemma.head_dim != gemma.hidden_size
    assert gemma.tie_embeddings  # gemma's default when config.json does not say
    assert gemma.norms_per_layer == 4


@pytest.mark.parametrize(
    "targets,expected",
    [
        ("*_proj", 41_943_040),  # all linear, r16 (DESIGN.md)
        ("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", 41_943_040),
        ("q_proj,v_proj", 32 * 16 * ((4096 + 4096) + (4096 + 1024))),
        ("*.q_proj", 32 * 16 * (4096 + 4096)),
        ("all-linear", 41_943_040),
    ],
)
def test_lora_parameter_count(targets, expected):
    m = load_model_config(str(CONFIGS / "llama-3.1-8b"))
    assert m.lora_parameters(16, targets) == expected


def test_lora_targets_follow_the_architecture():
    phi = load_model_config(str(CONFIGS / "phi-3-mini-4k"))
    names = {s.name for s in phi.lora_targets("*_proj")}
    assert names == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    # phi3's fused projections adapt as one Linear each: r*(d_in + d_out)
    assert phi.lora_parameters(8, "qkv_proj") == 32 * 8 * (3072 + 3 * 3072)
    mix = load_model_config(str(CONFIGS / "mixtral-8x7b"))
    assert mix.lora_parameters(8, "w1") == 32 * 8 * 8 * (4096 + 14336)  # one adapter per expert
    assert "gate" not in {s.name for s in mix.lora_targets("all-linear")}  # the router is not adapted


def test_unmatched_lora_target_is_a_usage_error_naming_the_modules():
    m = load_model_config(str(CONFIGS / "llama-3.2-1b"))
    with pytest.raises(UsageError) as e:
        m.lora_parameters(8, "query_key_value")
    assert "q_proj" in e.value.finding.hint


def test_unknown_architecture_lists_supported_types_and_keys():
    with pytest.raises(DataprepError) as e:
        load_model_config(str(CONFIGS / "unknown-arch"))
    f = e.value.finding
    assert f.code == "unsupported_architecture" and e.value.exit_code == 2
    assert "falcon" in f.message
    for mt in SUPPORTED_MODEL_TYPES:
        assert mt in f.hint
    for key in ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"):
        assert key in f.hint


def test_missing_key_is_unsupported_architecture():
    cfg = json.loads((CONFIGS / "llama-3.2-1b" / "config.json").read_text())
    del cfg["num_hidden_layers"]
    with pytest.raises(DataprepError) as e:
        config_from_dict(cfg)
    assert e.value.finding.code == "unsupported_architecture"
    assert "num_hidden_layers" in e.value.finding.message


# -- safetensors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-safetensors", "tiny-sharded"])
def test_count_from_safetensors_headers(name):
    m = load_model_config(str(CONFIGS / name))
    assert m.parameter_source == "safetensors"
    assert m.parameters == m.config_parameters == 6736


def test_headers_win_over_the_config(tmp_path):
    tensors = MAKE["tiny_tensors"](MAKE["TINY"])
    tensors["model.extra.weight"] = [10, 16]  # something the formula does not know
    (tmp_path / "config.json").write_text(json.dumps(MAKE["TINY"]))
    MAKE["write_safetensors"](tmp_path / "model.safetensors", tensors)
    m = load_model_config(str(tmp_path))
    assert m.parameters == m.config_parameters + 160
    assert load_model_config(str(tmp_path), count_weights=False).parameters == m.config_parameters


def test_only_the_header_is_read(tmp_path, monkeypatch):
    # a file whose data region is missing entirely still counts: nothing past the header is read
    header = json.dumps(
        {"a": {"dtype": "BF16", "shape": [1000, 1000], "data_offsets": [0, 2_000_000]}}
    ).encode()
    p = tmp_path / "model.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    assert read_safetensors_header(p)["a"]["shape"] == [1000, 1000]
    (tmp_path / "config.json").write_text(json.dumps(MAKE["TINY"]))
    assert load_model_config(str(tmp_path)).parameters == 1_000_000


def test_partial_download_falls_back_to_the_config(tmp_path):
    import shutil

    shutil.copytree(CONFIGS / "tiny-sharded", tmp_path / "m")
    (tmp_path / "m" / "model-00002-of-00002.safetensors").unlink()
    m = load_model_config(str(tmp_path / "m"))
    assert m.parameter_source == "config" and m.parameters == 6736


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01\x02",
        struct.pack("<Q", 10) + b"{}",
        struct.pack("<Q", 2) + b"[]",
        struct.pack("<Q", 1 << 40),
    ],
)
def test_bad_safetensors_is_unreadable(tmp_path, raw):
    p = tmp_path / "model.safetensors"
    p.write_bytes(raw)
    with pytest.raises(UnreadableInput):
        read_safetensors_header(p)


# -- where the config comes from ----------------------------------------------------------------------------


def _cache_entry(hf_home: Path, repo: str, rev: str = "abc123", with_ref: bool = True) -> Path:
    entry = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snap = entry / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap / "config.json").write_text((CONFIGS / "llama-3.2-1b" / "config.json").read_text())
    if with_ref:
        (entry / "refs").mkdir()
        (entry / "refs" / "main").write_text(rev)
    return snap


@pytest.mark.parametrize("with_ref", [True, False])
def test_hf_cache_layout_under_hf_home(tmp_path, monkeypatch, with_ref):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    snap = _cache_entry(tmp_path, "meta-llama/Llama-3.2-1B", with_ref=with_ref)
    m = load_model_config("meta-llama/Llama-3.2-1B")
    assert m.parameters == 1_235_814_400
    assert Path(m.path) == snap


def test_missing_model_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotFound) as e:
        load_model_config("nobody/nothing")
    assert "models--nobody--nothing" in e.value.finding.message
    assert e.value.exit_code == 2


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelNotFound):
        load_model_config(str(tmp_path))


def test_config_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(UnreadableInput):
        load_model_config(str(tmp_path))
