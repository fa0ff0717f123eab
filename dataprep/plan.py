"""Size sequence length, micro-batch and gradient accumulation for a GPU budget; AutoModel overrides for it.

``make_plan`` takes a ModelConfig, the token statistics (issue 5's JSON, optional), the budget and the training
method, searches the largest ``local_batch_size`` whose per-GPU estimate (``dataprep.memory``) fits within
``gpu_memory * (1 - margin)``, and derives gradient accumulation so that
``global_batch_size % (local_batch_size * dp_size) == 0``. When even one sequence does not fit it reports
``oom`` with remedies, each with numbers that fit.

Micro-batch tokens: AutoModel's ChatDataset pads every sample to ``dataset.seq_length`` once it is set
(``formatting_utils._package_tokenized_example``), and the overrides always set it, so a micro-batch is
``local_batch_size x seq_length`` tokens (or x the pack size with packing). With ``dynamic_padding=True``
(a collator that pads to the longest row of the batch) the padded length is the stats' expected longest row of
a random batch of that size (``padding[].expected_max_len_random``), capped at seq_length.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import UsageError
from .findings import Finding, finding
from .memory import GIB, LOSSES, METHODS, PARAM_DTYPES, MemoryEstimate, MemoryInputs, estimate
from .modelconfig import ModelConfig, parse_targets

PEFT_TARGET = "nemo_automodel.components._peft.lora.PeftConfig"
LOSS_TARGETS = {
    "masked_ce": "nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy",
    "chunked_ce": "nemo_automodel.components.loss.chunked_ce.ChunkedCrossEntropy",
    "fused_linear_ce": "nemo_automodel.components.loss.linear_ce.FusedLinearCrossEntropy",
}
DEFAULT_LOSS = "masked_ce"  # what AutoModel's SFT/PEFT recipes use
DEFAULT_GLOBAL_BATCH = 32  # when not given: the nearest valid size for the GPUs, without a finding
# AutoModel's `quantization:` block for QLoRA (examples/llm_finetune/llama3_1/llama3_1_8b_squad_qlora.yaml)
QLORA_BLOCK = {
    "load_in_4bit": True,
    "load_in_8bit": False,
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_use_double_quant": True,
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_quant_storage": "bfloat16",
}
MAX_LOCAL_BATCH = 1024
SEQ_STEP = 256  # remedies propose sequence lengths in multiples of this (as stats recommends them)
ACMode = Literal["auto", "on", "off"]

# -- sizes -------------------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")  # sign: "-5GiB" -> must be positive
_UNITS = {
    "kib": 1024, "ki": 1024, "k": 1024, "kb": 1000,
    "mib": 1024**2, "mi": 1024**2, "m": 1024**2, "mb": 1000**2,
    "gib": 1024**3, "gi": 1024**3, "g": 1024**3, "gb": 1000**3,
    "tib": 1024**4, "ti": 1024**4, "t": 1024**4, "tb": 1000**4,
}  # fmt: skip


def parse_size(text: str, *, flag: str = "--gpu-memory") -> int:
    """'80GiB' / '80G' (binary) / '80GB' (decimal, 10^9) / '81920MiB' -> bytes; bad or non-positive: UsageError.

    A bare G/M/T is binary, as GPU memory is quoted (an "80 GB" H100 reports 81559 MiB); GB/MB/TB are SI.
    """
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise UsageError(
            f"{flag} {text!r}: not a size with a unit",
            hint=f"e.g. {flag} 80GiB (GiB/G binary, GB decimal, MiB)",
        )
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"{flag} {text!r}: must be positive", hint=f"e.g. {flag} 80GiB")
    return value


# -- result ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    seq_length: int
    local_batch_size: int | None
    global_batch_size: int
    grad_accumulation: int | None
    dp_size: int
    activation_checkpointing: bool
    loss: str
    packing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq_length": self.seq_length,
            "local_batch_size": self.local_batch_size,
            "global_batch_size": self.global_batch_size,
            "grad_accumulation": self.grad_accumulation,
            "dp_size": self.dp_size,
            "activation_checkpointing": self.activation_checkpointing,
            "loss": self.loss,
            "packing": self.packing,
        }


@dataclass(frozen=True)
class PlanResult:
    """The plan: model size, the estimate at the recommended shape, the recommendation, findings."""

    model: ModelConfig
    method: str
    gpus: int
    gpu_memory_bytes: int
    margin: float
    estimate: MemoryEstimate
    padded_length: int
    expected_padded_length: int | None
    fits: bool
    recommendation: Recommendation
    lora_rank: int = 8
    lora_alpha: int = 32
    lora_targets: str = "*_proj"
    lora_dropout: float = 0.0
    param_dtype: str = "bf16"
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def usable_bytes(self) -> float:
        return self.gpu_memory_bytes * (1 - self.margin)

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "model": {
                "name": m.name,
                "path": m.path,
                "model_type": m.model_type,
                "parameter_source": m.parameter_source,
            },
            "method": self.method,
            "parameters": m.parameters,
            "trainable_parameters": self.estimate.trainable_parameters,
            "budget": {
                "gpus": self.gpus,
                "gpu_memory_gib": round(self.gpu_memory_bytes / GIB, 3),
                "margin": self.margin,
                "usable_gib": round(self.usable_bytes / GIB, 3),
                "param_dtype": self.param_dtype,
            },
            "memory": {
                "per_gpu_gib": round(self.estimate.total_gib, 3),
                "breakdown": self.estimate.breakdown_gib(),
                "tokens_per_micro_batch": self.estimate.tokens,
                "padded_length": self.padded_length,
                "expected_padded_length": self.expected_padded_length,
            },
            "fits": self.fits,
            "recommendation": self.recommendation.to_dict(),
            "findings": [f.to_dict() for f in self.findings],
        }

    def overrides(self) -> dict[str, Any]:
        """The nested AutoModel recipe keys this plan sets (YAML-ready)."""
        rec = self.recommendation
        out: dict[str, Any] = {}
        if rec.local_batch_size is not None:
            out["step_scheduler"] = {
                "local_batch_size": rec.local_batch_size,
                "global_batch_size": rec.global_batch_size,
            }
        # ChatDataset ignores seq_length unless truncation is on; every sample is then padded to seq_length,
        # so tokenizer-side padding stays off (it would put pads before the EOS ChatDataset appends).
        out["dataset"] = {"seq_length": rec.seq_length, "truncation": True, "padding": "do_not_pad"}
        out["distributed"] = {"activation_checkpointing": rec.activation_checkpointing}
        if self.method in ("lora", "qlora"):
            out["peft"] = {
                "_target_": PEFT_TARGET,
                "target_modules": parse_targets(self.lora_targets),
                "dim": self.lora_rank,
                "alpha": self.lora_alpha,
                "dropout": self.lora_dropout,
            }
        if self.method == "qlora":
            out["quantization"] = dict(QLORA_BLOCK)
        if rec.packing:
            out["packed_sequence"] = {"packed_sequence_size": rec.seq_length}
        if rec.loss != DEFAULT_LOSS:
            out["loss_fn"] = {"_target_": LOSS_TARGETS[rec.loss]}
            if rec.loss == "fused_linear_ce":  # the loss takes the hidden states, not logits
                out["model"] = {"output_hidden_states": True}
        return out

    def cli_overrides(self) -> list[str]:
        """The overrides as AutoModel command-line arguments, one ``--dotted.key value`` per entry."""
        return [f"--{key} {shlex.quote(_cli_value(v))}" for key, v in flatten(self.overrides())]


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out += flatten(v, key)
        else:
            out.append((key, v))
    return out


def _cli_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))
    return str(v)


# -- stats ---------------------------------------------------------------------------------------------------


def expected_padded_length(stats: dict | None, batch_size: int, seq_length: int) -> int | None:
    """The expected longest row of a random batch of ``batch_size`` (from the stats), capped at seq_length."""
    if not stats:
        return None
    rows = [r for r in stats.get("padding") or [] if isinstance(r, dict) and r.get("batch_size")]
    if rows:
        rows.sort(key=lambda r: r["batch_size"])
        # the row for this batch size, else the next larger one (a longer expected max: conservative)
        chosen = next((r for r in rows if r["batch_size"] >= batch_size), rows[-1])
        for cap in chosen.get("capped") or []:
            if cap.get("seq_length") == seq_length and cap.get("expected_max_len_random"):
                return min(seq_length, math.ceil(cap["expected_max_len_random"]))
        if chosen.get("expected_max_len_random"):
            return min(seq_length, math.ceil(chosen["expected_max_len_random"]))
    mx = ((stats.get("tokens") or {}).get("total") or {}).get("max")
    return min(seq_length, int(mx)) if mx else None


def _stats_seq_length(stats: dict | None) -> int | None:
    if not stats:
        return None
    v = stats.get("recommended_seq_length")
    return int(v) if isinstance(v, (int, float)) and v > 0 else None


# -- planning ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Setup:
    model: ModelConfig
    method: str
    dp: int
    seq_length: int
    ac: bool
    loss: str
    param_dtype: str
    packing: bool
    dynamic_padding: bool
    stats: dict | None
    lora_rank: int
    lora_targets: str
    usable: float

    def padded(self, batch: int) -> int:
        if self.packing or not self.dynamic_padding:
            return self.seq_length
        return expected_padded_length(self.stats, batch, self.seq_length) or self.seq_length

    def estimate(self, batch: int) -> MemoryEstimate:
        return estimate(
            MemoryInputs(
                model=self.model,
                method=self.method,  # type: ignore[arg-type]
                dp=self.dp,
                local_batch_size=batch,
                padded_len=self.padded(batch),
                activation_checkpointing=self.ac,
                loss=self.loss,  # type: ignore[arg-type]
                param_dtype=self.param_dtype,  # type: ignore[arg-type]
                lora_rank=self.lora_rank,
                lora_targets=self.lora_targets,
            )
        )

    def fits(self, batch: int) -> bool:
        return self.estimate(batch).total <= self.usable

    def largest_batch(self, limit: int = MAX_LOCAL_BATCH) -> int:
        """The largest local batch (<= limit) that fits, 0 when one sequence does not (memory grows with batch)."""
        if limit < 1 or not self.fits(1):
            return 0
        lo, hi = 1, limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def largest_seq(self) -> int:
        """The longest seq_length (a multiple of SEQ_STEP) at which one sequence fits; 0 when none does."""
        lo, hi = 0, self.seq_length // SEQ_STEP
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if replace(self, seq_length=mid * SEQ_STEP, dynamic_padding=False).fits(1):
                lo = mid
            else:
                hi = mid - 1
        return lo * SEQ_STEP


def _divisors_upto(n: int, limit: int) -> int:
    """The largest divisor of n that is <= limit (>= 1)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


def _nearest_valid(global_bs: int, unit: int) -> list[int]:
    below = (global_bs // unit) * unit
    above = below + unit if below != global_bs else global_bs
    return sorted({v for v in (below, above) if v > 0})


def make_plan(
    model_cfg: ModelConfig,
    *,
    stats: dict | None = None,
    seq_length: int | None = None,
    gpus: int = 1,
    gpu_memory_bytes: int = 80 * GIB,
    method: str = "sft",
    lora_rank: int = 8,
    lora_alpha: int = 32,
    lora_targets: str = "*_proj",
    lora_dropout: float = 0.0,
    global_batch_size: int | None = None,
    activation_checkpointing: ACMode | bool = "auto",
    loss: str = "masked_ce",
    param_dtype: str = "bf16",
    packing: bool = False,
    margin: float = 0.1,
    dynamic_padding: bool = False,
) -> PlanResult:
    """Recommend seq_length, local batch, accumulation and AC for the budget; findings for what does not fit."""
    ac_mode = {True: "on", False: "off"}.get(activation_checkpointing, activation_checkpointing)  # type: ignore[call-overload]
    # A global batch the user asked for that cannot divide is their error; the default just adapts.
    explicit_global = global_batch_size is not None
    if global_batch_size is None:
        global_batch_size = DEFAULT_GLOBAL_BATCH
    _validate(
        gpus, gpu_memory_bytes, method, lora_rank, global_batch_size, ac_mode, loss, param_dtype, margin
    )
    if seq_length is not None and seq_length <= 0:
        raise UsageError(f"--seq-length {seq_length}: must be positive")
    seq = seq_length or _stats_seq_length(stats)
    if seq is None:
        raise UsageError(
            "no sequence length: pass --seq-length, or stats with recommended_seq_length",
            hint="e.g. --stats stats.json (from `dataprep stats`) or --seq-length 4096",
        )
    if method != "sft":
        model_cfg.lora_targets(lora_targets)  # a target spec that matches no Linear is a usage error
    findings: list[Finding] = []
    base = _Setup(
        model=model_cfg,
        method=method,
        dp=gpus,
        seq_length=int(seq),
        ac=ac_mode == "on",
        loss=loss,
        param_dtype=param_dtype,
        packing=packing,
        dynamic_padding=dynamic_padding,
        stats=stats,
        lora_rank=lora_rank,
        lora_targets=lora_targets,
        usable=gpu_memory_bytes * (1 - margin),
    )
    setup = base
    limit = (
        max(1, min(MAX_LOCAL_BATCH, global_batch_size // gpus))
        if global_batch_size >= gpus
        else MAX_LOCAL_BATCH
    )
    best = setup.largest_batch(limit)
    if best == 0 and ac_mode == "auto":
        setup = replace(base, ac=True)
        best = setup.largest_batch(limit)

    if best == 0:
        est = setup.estimate(1)
        findings.append(_oom_finding(setup, est, ac_mode, global_batch_size))
        rec = Recommendation(
            seq_length=setup.seq_length,
            local_batch_size=None,
            global_batch_size=global_batch_size,
            grad_accumulation=None,
            dp_size=gpus,
            activation_checkpointing=setup.ac,
            loss=loss,
            packing=packing,
        )
        fits = False
        local = 1
    else:
        global_bs = global_batch_size
        if global_bs % gpus != 0 or global_bs < gpus:
            unit = best * gpus
            valid = _nearest_valid(global_bs, unit)
            if explicit_global:
                findings.append(
                    finding(
                        "global_batch_not_divisible",
                        f"global_batch_size {global_batch_size} is not a multiple of dp_size {gpus}: no local batch "
                        f"gives global % (local x dp) == 0; with local_batch_size {best} the nearest valid global "
                        f"batch sizes are {' or '.join(str(v) for v in valid)}",
                        hint=f"pass --global-batch-size {valid[-1] if len(valid) == 1 else valid[0]} "
                        f"(or {valid[-1]}); any multiple of {unit} works",
                        nearest_valid=valid,
                    )
                )
            global_bs = min(valid, key=lambda v: (abs(v - global_batch_size), -v))
            local = best
        else:
            local = _divisors_upto(global_bs // gpus, best)
        rec = Recommendation(
            seq_length=setup.seq_length,
            local_batch_size=local,
            global_batch_size=global_bs,
            grad_accumulation=global_bs // (local * gpus),
            dp_size=gpus,
            activation_checkpointing=setup.ac,
            loss=loss,
            packing=packing,
        )
        est = setup.estimate(local)
        fits = True
    padded = setup.padded(local)
    expected = None if packing else expected_padded_length(stats, local, setup.seq_length)
    return PlanResult(
        model=model_cfg,
        method=method,
        gpus=gpus,
        gpu_memory_bytes=gpu_memory_bytes,
        margin=margin,
        estimate=est,
        padded_length=padded,
        expected_padded_length=expected,
        fits=fits,
        recommendation=rec,
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_targets=lora_targets,
        lora_dropout=lora_dropout,
        param_dtype=param_dtype,
        findings=tuple(findings),
    )


def _validate(gpus, mem, method, rank, global_bs, ac_mode, loss, param_dtype, margin) -> None:
    if not isinstance(gpus, int) or gpus < 1:
        raise UsageError(f"--gpus {gpus}: at least one GPU", hint="e.g. --gpus 8")
    if not isinstance(mem, (int, float)) or mem <= 0:
        raise UsageError(f"--gpu-memory {mem}: must be positive", hint="e.g. --gpu-memory 80GiB")
    if method not in METHODS:
        raise UsageError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if method != "sft" and rank < 1:
        raise UsageError(f"--lora-rank {rank}: must be at least 1")
    if global_bs < 1:
        raise UsageError(f"--global-batch-size {global_bs}: must be at least 1")
    if ac_mode not in ("auto", "on", "off"):
        raise UsageError(f"--activation-checkpointing {ac_mode!r}: choose auto, on or off")
    if loss not in LOSSES:
        raise UsageError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if param_dtype not in PARAM_DTYPES:
        raise UsageError(f"--param-dtype {param_dtype!r}: choose one of {', '.join(PARAM_DTYPES)}")
    if not 0 <= margin < 1:
        raise UsageError(f"--margin {margin}: a fraction in [0, 1)", hint="e.g. --margin 0.1 keeps 10% free")


def _max_model_params(setup: _Setup) -> int:
    """Roughly the largest model of the same shape family that fits at batch 1 (scales every parameter term)."""
    est = setup.estimate(1)
    b = est.breakdown
    param_terms = (
        b["weights"] + b["gradients"] + b["optimizer_states"] + b["lora_adapters"] + b["fsdp_gathered"]
    )
    other = est.total - param_terms
    room = setup.usable - other
    if room <= 0 or param_terms <= 0:
        return 0
    return int(setup.model.parameters * room / param_terms)


def _oom_finding(setup: _Setup, est: MemoryEstimate, ac_mode: str, global_bs: int) -> Finding:
    """``oom`` with the remedies in order, each with numbers that fit (or saying that it does not)."""
    usable_gib = setup.usable / GIB
    remedies: list[dict[str, Any]] = []
    # 1. shorter sequences (with batch 1)
    s = setup.largest_seq()
    if s:
        remedies.append({"remedy": "reduce_seq_length", "seq_length": s, "local_batch_size": 1,
                         "text": f"reduce sequence length: fits at seq_length {s} with local_batch_size 1"})  # fmt: skip
    else:
        remedies.append({"remedy": "reduce_seq_length", "seq_length": None, "local_batch_size": None,
                         "text": f"reducing sequence length is not enough: even {SEQ_STEP} tokens do not fit"})  # fmt: skip
    # 2. LoRA (from full fine-tuning) / QLoRA (from LoRA)
    if setup.method in ("sft", "lora"):
        target = "lora" if setup.method == "sft" else "qlora"
        rank = 16 if setup.method == "sft" else setup.lora_rank
        alt = replace(setup, method=target, lora_rank=rank)
        b = alt.largest_batch()
        if not b and target == "lora":  # LoRA is not enough: does QLoRA's 4-bit base fit?
            alt2 = replace(alt, method="qlora")
            b2 = alt2.largest_batch()
            if b2:
                target, alt, b = "qlora", alt2, b2
        name = "LoRA" if target == "lora" else "QLoRA"
        remedies.append(
            {"remedy": f"switch_to_{target}", "method": target, "lora_rank": rank, "local_batch_size": b or None,
             "text": f"switch to {name}: {name} r{rank} fits with local_batch_size {b}" if b
             else f"switch to {name}: {name} r{rank} does not fit either at seq_length {setup.seq_length}"}
        )  # fmt: skip
    # 3. a smaller model
    n = _max_model_params(setup)
    remedies.append({"remedy": "smaller_model", "max_parameters": n or None,
                     "text": f"choose a smaller model: about {n / 1e9:.2f}B parameters or fewer fit "
                             f"at seq_length {setup.seq_length}, local_batch_size 1" if n
                     else f"a smaller model alone is not enough at seq_length {setup.seq_length}"})  # fmt: skip
    # 4. activation checkpointing, when off
    if not setup.ac:
        b = replace(setup, ac=True).largest_batch()
        remedies.append({"remedy": "activation_checkpointing", "local_batch_size": b or None,
                         "text": f"turn on activation checkpointing: fits with local_batch_size {b}" if b
                         else "turn on activation checkpointing: still does not fit alone"})  # fmt: skip
    # 5. fused linear cross-entropy, when another loss is used
    if setup.loss != "fused_linear_ce":
        b = replace(setup, loss="fused_linear_ce").largest_batch()
        remedies.append({"remedy": "fused_linear_ce", "local_batch_size": b or None,
                         "text": f"use --loss fused_linear_ce (no logits buffer): fits with local_batch_size {b}" if b
                         else "use --loss fused_linear_ce: still does not fit alone"})  # fmt: skip
    # 6. more GPUs (FSDP2 shards the states further)
    g = next((g for g in (2**k for k in range(1, 11)) if g > setup.dp and replace(setup, dp=g).fits(1)), 0)
    if g:
        remedies.append({"remedy": "more_gpus", "gpus": g,
                         "text": f"use more GPUs: fits on {g} GPUs with local_batch_size 1"})  # fmt: skip
    message = (
        f"one sequence of {setup.seq_length} tokens needs {est.total_gib:.1f} GiB per GPU, more than the "
        f"{usable_gib:.1f} GiB usable ({setup.method}, {setup.dp} GPU(s), activation checkpointing "
        f"{'on' if setup.ac else 'off'}, loss {setup.loss})"
    )
    hint = "; ".join(r["text"] for r in remedies) or "more or larger GPUs"
    return finding("oom", message, hint=hint, remedies=remedies)
