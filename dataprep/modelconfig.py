"""Read a model's ``config.json`` (local folder or the offline HF cache) and count its parameters.

The parameter count comes from the safetensors headers when weights are present (the u64 header length and
the JSON header only; weights are never loaded), otherwise from the config:

    attn = h*nq*d + 2*h*nkv*d + nq*d*h  (+ q/k/v biases for qwen2, + q/k norms for qwen3)
    mlp  = 3*h*i                        (phi3 fuses qkv and gate_up: the same count)
    P    = L*(attn + mlp + norms) + h + V*h*(1 if tied else 2)

MoE layers replace the MLP by ``E`` experts of ``3*h*moe_i`` plus a router ``h*E`` (and qwen2_moe's shared
expert ``3*h*shared_i`` with its ``h`` gate).
"""

from __future__ import annotations

import fnmatch
import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import DataprepError, ModelNotFound, UnreadableInput, UsageError
from .findings import finding

SUPPORTED_MODEL_TYPES: tuple[str, ...] = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
)
MOE_MODEL_TYPES = frozenset({"mixtral", "qwen2_moe", "qwen3_moe"})
REQUIRED_KEYS: tuple[str, ...] = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)
OPTIONAL_KEYS: tuple[str, ...] = (
    "num_key_value_heads",
    "head_dim",
    "tie_word_embeddings",
    "attention_bias",
    "num_local_experts | num_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "shared_expert_intermediate_size",
    "max_position_embeddings",
)
# Tied input/output embeddings when config.json does not say (transformers' defaults per model_type).
_TIED_DEFAULT = {"gemma": True, "gemma2": True}
_HEADER_LIMIT = 100 * 1024 * 1024  # a safetensors JSON header is kilobytes; refuse absurd lengths


def _unsupported(message: str) -> DataprepError:
    hint = (
        f"supported model_type values: {', '.join(SUPPORTED_MODEL_TYPES)}; the estimate needs "
        f"{', '.join(REQUIRED_KEYS)} (and optionally {', '.join(OPTIONAL_KEYS)})"
    )
    return DataprepError(finding("unsupported_architecture", message, hint=hint))


@dataclass(frozen=True)
class LinearSpec:
    """One nn.Linear of a decoder layer (per layer; ``count`` copies, e.g. experts)."""

    name: str
    d_in: int
    d_out: int
    count: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """The numbers the memory estimate needs, read from config.json."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False
    norms_per_layer: int = 2
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    max_position_embeddings: int | None = None
    name: str = ""
    path: str | None = None
    safetensors_parameters: int | None = None

    # -- derived -------------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def parameters(self) -> int:
        """Exact count: safetensors headers when present, else the config formula."""
        return (
            self.safetensors_parameters if self.safetensors_parameters is not None else self.config_parameters
        )

    @property
    def parameter_source(self) -> str:
        return "safetensors" if self.safetensors_parameters is not None else "config"

    def layer_linears(self) -> list[LinearSpec]:
        """The Linear modules of one decoder layer, named as in transformers (LoRA targets match these)."""
        h, nq, nkv, d = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        if self.model_type == "phi3":
            out = [LinearSpec("qkv_proj", h, nq * d + 2 * nkv * d), LinearSpec("o_proj", nq * d, h)]
        else:
            out = [
                LinearSpec("q_proj", h, nq * d),
                LinearSpec("k_proj", h, nkv * d),
                LinearSpec("v_proj", h, nkv * d),
                LinearSpec("o_proj", nq * d, h),
            ]
        if not self.is_moe:
            i = self.intermediate_size
            if self.model_type == "phi3":
                out += [LinearSpec("gate_up_proj", h, 2 * i), LinearSpec("down_proj", i, h)]
            else:
                out += [
                    LinearSpec("gate_proj", h, i),
                    LinearSpec("up_proj", h, i),
                    LinearSpec("down_proj", i, h),
                ]
            return out
        e, mi = self.num_experts, self.moe_intermediate_size
        if self.model_type == "mixtral":  # block_sparse_moe.experts.N.w1/w3 (h->i), w2 (i->h)
            out += [LinearSpec("w1", h, mi, e), LinearSpec("w3", h, mi, e), LinearSpec("w2", mi, h, e)]
        else:
            out += [
                LinearSpec("gate_proj", h, mi, e),
                LinearSpec("up_proj", h, mi, e),
                LinearSpec("down_proj", mi, h, e),
            ]
        out.append(LinearSpec("gate", h, e))  # the router
        si = self.shared_expert_intermediate_size
        if si:
            out += [
                LinearSpec("shared_expert.gate_proj", h, si),
                LinearSpec("shared_expert.up_proj", h, si),
                LinearSpec("shared_expert.down_proj", si, h),
                LinearSpec("shared_expert_gate", h, 1),
            ]
        return out

    @property
    def layer_parameters(self) -> int:
        """Parameters of one decoder layer (linears, biases, norms)."""
        h, nq, nkv, d = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        n = sum(spec.d_in * spec.d_out * spec.count for spec in self.layer_linears())
        if self.qkv_bias:
            n += nq * d + 2 * nkv * d
        if self.o_bias:
            n += h
        if self.qk_norm:
            n += 2 * d
        return n + self.norms_per_layer * h

    @property
    def embedding_parameters(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)

    @property
    def config_parameters(self) -> int:
        return self.num_layers * self.layer_parameters + self.hidden_size + self.embedding_parameters

    @property
    def active_mlp_intermediate(self) -> int:
        """Intermediate width a token goes through (MoE: top-k experts + shared expert)."""
        if self.is_moe:
            return self.experts_per_token * self.moe_intermediate_size + self.shared_expert_intermediate_size
        return self.intermediate_size

    def lora_parameters(self, rank: int, targets: str | list[str] = "*_proj") -> int:
        """Trainable LoRA parameters: r*(d_in + d_out) per adapted Linear, over all layers."""
        matched = self.lora_targets(targets)
        return self.num_layers * sum(rank * (s.d_in + s.d_out) * s.count for s in matched)

    def lora_targets(self, targets: str | list[str]) -> list[LinearSpec]:
        """The layer Linears a target spec adapts; an empty match is a usage error naming the modules."""
        pats = parse_targets(targets)
        if pats == ["all-linear"]:
            return [s for s in self.layer_linears() if s.name != "gate"]
        out = [s for s in self.layer_linears() if any(_match(p, s.name) for p in pats)]
        if not out:
            names = ", ".join(s.name for s in self.layer_linears())
            raise UsageError(
                f"$[lora_targets] {','.join(pats)!r} matches no Linear module of {self.model_type}",
                hint=f"this model's layer Linears: {names}",
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parameters"] = self.parameters
        d["parameter_source"] = self.parameter_source
        d["config_parameters"] = self.config_parameters
        return d


def parse_targets(targets: str | list[str]) -> list[str]:
    """'*_proj' or 'q_proj,v_proj' (or a list) -> a list of patterns."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    pats = [t.strip() for t in items if t.strip()]
    if not pats:
        raise UsageError("$[lora_targets] is empty", hint="a glob like '*_proj' or names like q_proj,v_proj")
    return pats


def _match(pattern: str, name: str) -> bool:
    # AutoModel matches the full module name (model.layers.0.self_attn.q_proj); we know the names inside a
    # layer, so a leaf pattern ('*_proj', 'q_proj') matches the leaf and a dotted one ('*.q_proj') its tail.
    leaf = name.rsplit(".", 1)[-1]
    if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(leaf, pattern):
        return True
    return "." in pattern and fnmatch.fnmatchcase(leaf, pattern.rsplit(".", 1)[-1])


# -- reading ---------------------------------------------------------------------------------------------


def _int(cfg: dict, key: str, where: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise _unsupported(f"{where}: config key {key!r} is missing or not a positive integer (got {v!r})")
    return v


def config_from_dict(cfg: dict[str, Any], *, name: str = "", path: str | None = None) -> ModelConfig:
    """Build a ModelConfig from a parsed config.json; unknown architectures raise unsupported_architecture."""
    where = name or path or "config.json"
    if "text_config" in cfg and "hidden_size" not in cfg and isinstance(cfg["text_config"], dict):
        cfg = {
            **cfg["text_config"],
            "model_type": cfg["text_config"].get("model_type", cfg.get("model_type")),
        }
    mt = cfg.get("model_type")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise _unsupported(f"{where}: model_type {mt!r} is not one the memory estimate knows")
    h = _int(cfg, "hidden_size", where)
    nq = _int(cfg, "num_attention_heads", where)
    nkv = cfg.get("num_key_value_heads") or nq
    head_dim = cfg.get("head_dim") or h // nq
    layers = _int(cfg, "num_hidden_layers", where)
    vocab = _int(cfg, "vocab_size", where)
    tie = bool(cfg.get("tie_word_embeddings", _TIED_DEFAULT.get(mt, False)))
    num_experts = 0
    top_k = 0
    moe_i = 0
    shared_i = 0
    inter = cfg.get("intermediate_size") or 0
    if mt in MOE_MODEL_TYPES:
        num_experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 0
        top_k = cfg.get("num_experts_per_tok") or 0
        if not num_experts or not top_k:
            raise _unsupported(
                f"{where}: MoE config needs num_local_experts/num_experts and num_experts_per_tok"
            )
        moe_i = (
            _int(cfg, "intermediate_size", where)
            if mt == "mixtral"
            else _int(cfg, "moe_intermediate_size", where)
        )
        shared_i = int(cfg.get("shared_expert_intermediate_size") or 0) if mt == "qwen2_moe" else 0
        if (cfg.get("mlp_only_layers") or []) or int(cfg.get("decoder_sparse_step", 1) or 1) != 1:
            raise _unsupported(
                f"{where}: MoE configs with dense layers (mlp_only_layers, decoder_sparse_step) are not modelled"
            )
    else:
        inter = _int(cfg, "intermediate_size", where)
    return ModelConfig(
        model_type=mt,
        hidden_size=h,
        intermediate_size=int(inter),
        num_layers=layers,
        num_heads=nq,
        num_kv_heads=int(nkv),
        head_dim=int(head_dim),
        vocab_size=vocab,
        tie_embeddings=tie,
        qkv_bias=mt in ("qwen2", "qwen2_moe") or bool(cfg.get("attention_bias", False)),
        o_bias=mt in ("llama", "mistral") and bool(cfg.get("attention_bias", False)),
        qk_norm=mt in ("qwen3", "qwen3_moe"),
        norms_per_layer=4 if mt == "gemma2" else 2,
        num_experts=int(num_experts),
        experts_per_token=int(top_k),
        moe_intermediate_size=int(moe_i),
        shared_expert_intermediate_size=shared_i,
        max_position_embeddings=cfg.get("max_position_embeddings"),
        name=name,
        path=path,
    )


def hf_hub_cache() -> Path:
    """The hub cache the HF libraries use: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def resolve_model_dir(model: str) -> Path:
    """A local folder, or the snapshot of ``org/name`` in the offline HF cache (refs/main)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    if p.is_file() and p.name == "config.json":
        return p.parent
    cache = hf_hub_cache()
    repo = cache / ("models--" + model.replace("/", "--"))
    looked = [str(p.resolve()), str(repo)]
    if repo.is_dir():
        ref = repo / "refs" / "main"
        snaps = repo / "snapshots"
        if ref.is_file():
            snap = snaps / ref.read_text(encoding="utf-8").strip()
            if snap.is_dir():
                return snap
        if snaps.is_dir():
            candidates = sorted((s for s in snaps.iterdir() if s.is_dir()), key=lambda s: s.stat().st_mtime)
            if candidates:
                return candidates[-1]
    raise ModelNotFound(
        f"model {model!r} not found: looked for a local folder {looked[0]} and the HF cache entry {looked[1]}",
        hint=f"pass a local folder, or download it first: huggingface-cli download {model}",
    )


def _download_config(model: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, "config.json", cache_dir=str(hf_hub_cache()))).parent
    except Exception as err:  # network, auth, offline mode: all mean "not found" to the user
        raise ModelNotFound(f"{model}: download of config.json failed ({type(err).__name__}: {err})") from err


def safetensors_parameter_count(model_dir: Path) -> int | None:
    """Sum of tensor sizes from the safetensors headers (no weights read); None when there are none."""
    index = model_dir / "model.safetensors.index.json"
    files: list[Path]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UnreadableInput(index, f"not a safetensors index ({e})") from None
        files = [model_dir / f for f in sorted(set(weight_map.values()))]
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files or not all(f.is_file() for f in files):
        return None  # no weights, or a partial download: the config formula counts instead
    return sum(_header_count(f) for f in files)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8-byte little-endian length, then that many bytes of JSON."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise UnreadableInput(path, "too short for a safetensors header")
            (n,) = struct.unpack("<Q", raw)
            if n > _HEADER_LIMIT:
                raise UnreadableInput(path, f"safetensors header length {n} is implausible")
            body = fh.read(n)
    except OSError as e:
        raise UnreadableInput(path, f"cannot read safetensors header ({e.strerror})") from None
    if len(body) != n:
        raise UnreadableInput(path, "truncated safetensors header")
    try:
        header = json.loads(body)
    except ValueError:
        raise UnreadableInput(path, "safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise UnreadableInput(path, "safetensors header is not a JSON object")
    return header


def _header_count(path: Path) -> int:
    total = 0
    for key, meta in read_safetensors_header(path).items():
        if key == "__metadata__":
            continue
        n = 1
        for dim in meta.get("shape", []):
            n *= int(dim)
        total += n
    return total


def load_model_config(model: str, *, count_weights: bool = True, allow_download: bool = False) -> ModelConfig:
    """Read MODEL's config.json (folder or HF cache) and, when weights are present, count their parameters.

    ``allow_download`` fetches config.json alone (never weights) into the HF cache when it is not there."""
    try:
        model_dir = resolve_model_dir(model)
    except ModelNotFound:
        if not allow_download:
            raise
        model_dir = _download_config(model)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelNotFound(
            f"{model_dir}: no config.json (the memory estimate needs the architecture)",
            hint="point $[model] at the checkpoint folder: config.json sits next to the weights",
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UnreadableInput(cfg_path, f"not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise UnreadableInput(cfg_path, "not a JSON object")
    mc = config_from_dict(cfg, name=model, path=str(model_dir))
    if count_weights:
        n = safetensors_parameter_count(model_dir)
        if n is not None:
            from dataclasses import replace

            mc = replace(mc, safetensors_parameters=n)
    return mc
