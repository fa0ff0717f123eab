"""Size sequence length, micro-batch and gradient accumulation for a GPU budget; AutoModel overrides for it.

``make_plan`` takes a ModelConfig, the token statistics (issue 5's JSON, optional), the budget and the training
method, searches the largest ``local_batch_size`` whose per-GPU estimate (``dataprep.memory``) fits within
``gpu_memory * (1 - margin)``, and derives gradient accumulation so that
``global_batch_size % (local_batch_size * dp_size) == 0``. When even one sequence does not fit it reports
``oom`` with remedies, each with numbers that fit.

Micro-batch tokens: AutoModel's collator pads each batch to its longest row (ChatDataset pads a row to
``dataset.seq_length`` only with ``padding: max_length``), and the overrides set ``truncation: true``, so the
worst micro-batch, the one the memory peak must hold, is ``local_batch_size x seq_length`` tokens (or x the pack
size with packing). With ``dynamic_padding=True``
(a collator that pads to the longest row of the batch) the padded length is the stats' expected longest row of
a random batch of that size (``padding[].expected_max_len_random``), capped at seq_length.

Time: when the plan fits, ``PlanResult.time`` is ``dataprep.throughput``'s estimate for the recommended shape (step,
epoch and run time, GPU-hours, with the stats' padding or packing), with alternatives (packing, LoRA, no activation
checkpointing); each ``oom`` remedy carries its ``time_ratio`` against the setup that did not fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .defaults import DEFAULT_SEQ_LENGTHS, PLAN_BATCH_SIZES
from .errors import UsageError
from .findings import Finding, finding, name_options
from .memory import GIB, LOSSES, METHODS, PARAM_DTYPES, MemoryEstimate, MemoryInputs, estimate
from .modelconfig import ModelConfig, parse_targets
from .throughput import (
    Hardware,
    TimeEstimate,
    Workload,
    change,
    check_run_options,
    duration,
    estimate_time,
    expected_padded_length,
    gpu_preset,
    with_alternatives,
)

if TYPE_CHECKING:
    from .stats import StatsSummary

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


def parse_size(text: str, *, option: str = "gpu_memory") -> int:
    """'80GiB' / '80G' (binary) / '80GB' (decimal, 10^9) / '81920MiB' -> bytes; bad or non-positive: UsageError.

    A bare G/M/T is binary, as GPU memory is quoted (an "80 GB" H100 reports 81559 MiB); GB/MB/TB are SI.
    """
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise UsageError(
            f"$[{option}] {text!r}: not a size with a unit",
            hint=f"e.g. $[{option}] 80GiB (GiB/G binary, GB decimal, MiB)",
        )
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"$[{option}] {text!r}: must be positive", hint=f"e.g. $[{option}] 80GiB")
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
    largest_local_batch_size: int | None = None  # the largest that fits, before the divisibility rule
    note: str = ""  # why local_batch_size is below largest_local_batch_size, with global sizes that avoid it

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
            "largest_local_batch_size": self.largest_local_batch_size,
            "note": self.note or None,
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
    time: TimeEstimate | None = None  # None when nothing fits (the oom remedies carry their own times)
    gpu: str | None = None  # the --gpu preset, when one was named
    gpu_memory_source: str = "gpu_memory"

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
                "gpu": self.gpu,
                "gpu_memory_source": self.gpu_memory_source,
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
            "time": self.time.to_dict() if self.time else None,
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
        # ChatDataset ignores seq_length unless truncation is on; padding stays do_not_pad (the collator pads
        # each batch to its longest row; max_length would pad every row to seq_length).
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
        from .overrides import cli_arguments, dotted_items

        return cli_arguments(dotted_items(self.overrides()))


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
    stats: StatsSummary | None
    lora_rank: int
    lora_targets: str
    usable: float
    tp: int = 1
    cp: int = 1

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.cp

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
                tp=self.tp,
                cp=self.cp,
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


def valid_global_batches(global_bs: int, dp: int, best: int) -> list[dict[str, int]]:
    """The nearest valid global batch sizes when the local batch may be lowered below ``best``.

    For every local batch 1..best the multiples of local x dp just below and above ``global_bs`` are candidates;
    each goes with the largest local batch (<= best) that divides it. Sorted by distance from ``global_bs``, a
    candidate is kept only when it allows a larger local batch than every nearer one, so the list reads "the
    nearest size, then the nearest that allows more, ... up to ``best``".
    """
    cands: set[int] = set()
    for local in range(1, max(1, best) + 1):
        cands.update(_nearest_valid(global_bs, local * dp))
    rows = []
    for v in cands:
        local = _divisors_upto(v // dp, best)
        rows.append(
            {"global_batch_size": v, "local_batch_size": local, "grad_accumulation": v // (local * dp)}
        )
    rows.sort(
        key=lambda r: (
            abs(r["global_batch_size"] - global_bs),
            -r["local_batch_size"],
            r["global_batch_size"],
        )
    )
    out: list[dict[str, int]] = []
    for r in rows:
        if not out or r["local_batch_size"] > out[-1]["local_batch_size"]:
            out.append(r)
        if out[-1]["local_batch_size"] >= best:
            break
    return out


def _lowered_local_note(global_bs: int, dp: int, local: int, best: int) -> str:
    """Say that the divisibility rule lowered the local batch, and which global sizes keep more of it."""
    better = [r for r in valid_global_batches(global_bs, dp, best) if r["local_batch_size"] > local]
    text = (
        f"local_batch_size lowered from {best} (the largest that fits) to {local}: global_batch_size {global_bs} "
        f"must be a multiple of local_batch_size x dp_size {dp}"
    )
    if better:
        text += "; " + _describe_valid(better) + " would allow more"
    return text


def _describe_valid(rows: list[dict[str, int]]) -> str:
    return ", ".join(
        f"{r['global_batch_size']} (local_batch_size {r['local_batch_size']}, grad_accumulation "
        f"{r['grad_accumulation']})"
        for r in rows
    )


def make_plan(
    model_cfg: ModelConfig,
    *,
    stats: StatsSummary | None = None,
    seq_length: int | None = None,
    gpus: int = 1,
    gpu_memory_bytes: int | None = None,
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
    tp_size: int = 1,
    cp_size: int = 1,
    gpu: str | None = None,
    gpu_tflops: float | None = None,
    mfu: float | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    gpu_hour_price: float | None = None,
) -> PlanResult:
    """Recommend seq_length, local batch, accumulation and AC for the budget; findings for what does not fit.

    ``gpu`` names a preset (memory and BF16 peak); ``gpu_memory_bytes`` / ``gpu_tflops`` override it. Without
    either the memory is 80 GiB and the time estimate assumes an H100's peak (and says so).
    """
    hardware = Hardware.resolve(gpu, gpu_tflops)
    check_run_options(mfu=mfu, epochs=epochs, max_steps=max_steps, gpu_hour_price=gpu_hour_price)
    gpu_memory_bytes, memory_source = resolve_gpu_memory(gpu_memory_bytes, gpu)
    ac_mode = {True: "on", False: "off"}.get(activation_checkpointing, activation_checkpointing)  # type: ignore[call-overload]
    # A global batch the user asked for that cannot divide is their error; the default just adapts.
    explicit_global = global_batch_size is not None
    if global_batch_size is None:
        global_batch_size = DEFAULT_GLOBAL_BATCH
    _validate(
        gpus, gpu_memory_bytes, method, lora_rank, global_batch_size, ac_mode, loss, param_dtype, margin
    )
    if seq_length is not None and seq_length <= 0:
        raise UsageError(f"$[seq_length] {seq_length}: must be positive", hint="e.g. $[seq_length] 4096")
    if tp_size < 1 or cp_size < 1 or gpus % (tp_size * cp_size):
        raise UsageError(
            f"tp_size {tp_size} x cp_size {cp_size} does not divide the {gpus} GPU(s)",
            hint="the data-parallel size is GPUs / (tp_size x cp_size)",
        )
    world = gpus
    gpus = gpus // (tp_size * cp_size)  # from here on: the data-parallel size
    seq = seq_length or (stats.recommended_seq_length if stats is not None else None)
    if seq is None:
        raise UsageError(
            "no sequence length: pass $[seq_length], or stats with recommended_seq_length",
            hint="e.g. $[stats_path] stats.json (from `dataprep stats`) or $[seq_length] 4096",
        )
    if method != "sft":
        model_cfg.lora_targets(lora_targets)  # a target spec that matches no Linear is a usage error
    findings: list[Finding] = []
    max_pos = model_cfg.max_position_embeddings
    if max_pos and int(seq) > max_pos:
        findings.append(
            finding(
                "seq_length_exceeds_max_position_embeddings",
                f"seq_length {int(seq)} is longer than {model_cfg.name or model_cfg.model_type}'s "
                f"max_position_embeddings {max_pos}: positions past {max_pos} were never trained",
                hint=f"pass $[seq_length] {max_pos} or less, or use a model (or RoPE scaling) made for longer contexts",
                seq_length=int(seq),
                max_position_embeddings=int(max_pos),
            )
        )
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
        tp=tp_size,
        cp=cp_size,
    )
    setup = base
    clock = _Clock(hardware, mfu, global_batch_size, epochs, max_steps, gpu_hour_price)
    limit = (
        max(1, min(MAX_LOCAL_BATCH, global_batch_size // gpus))
        if global_batch_size >= gpus
        else MAX_LOCAL_BATCH
    )
    best = setup.largest_batch(limit)
    if best == 0 and ac_mode == "auto":
        setup = replace(base, ac=True)
        best = setup.largest_batch(limit)

    note = ""
    if best == 0:
        est = setup.estimate(1)
        findings.append(_oom_finding(setup, est, ac_mode, loss, clock))
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
                options = valid_global_batches(global_bs, gpus, best)
                findings.append(
                    finding(
                        "global_batch_not_divisible",
                        f"global_batch_size {global_batch_size} is not a multiple of dp_size {gpus}: no local batch "
                        f"gives global % (local x dp) == 0; the nearest valid global batch sizes are "
                        f"{_describe_valid(options)}",
                        hint=f"pass $[global_batch_size] {options[0]['global_batch_size']} (local_batch_size "
                        f"{options[0]['local_batch_size']}); with local_batch_size {best}: "
                        f"{' or '.join(str(v) for v in valid)} (any multiple of {unit})",
                        nearest_valid=valid,
                        valid_global_batch_sizes=options,
                    )
                )
            global_bs = min(valid, key=lambda v: (abs(v - global_batch_size), -v))
            local = best
        else:
            local = _divisors_upto(global_bs // gpus, best)
            if local < best:
                note = _lowered_local_note(global_bs, gpus, local, best)
        rec = Recommendation(
            seq_length=setup.seq_length,
            local_batch_size=local,
            global_batch_size=global_bs,
            grad_accumulation=global_bs // (local * gpus),
            dp_size=gpus,
            activation_checkpointing=setup.ac,
            loss=loss,
            packing=packing,
            largest_local_batch_size=best,
            note=note,
        )
        est = setup.estimate(local)
        fits = True
    padded = setup.padded(local)
    expected = None if packing else expected_padded_length(stats, local, setup.seq_length)
    time = None
    if fits:
        time = clock.estimate(setup, local, rec.global_batch_size)
        time = with_alternatives(time, _alternatives(setup, local, rec.global_batch_size, time, clock))
    return PlanResult(
        model=model_cfg,
        method=method,
        gpus=world,
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
        time=time,
        gpu=gpu_preset(gpu).name if gpu else None,
        gpu_memory_source=memory_source,
    )


DEFAULT_GPU_MEMORY = 80 * GIB  # without gpu or gpu_memory


def resolve_gpu_memory(memory: int | str | None, gpu: str | None) -> tuple[int, str]:
    """(bytes, where they come from): --gpu-memory (a size or bytes) wins over the --gpu preset, else 80 GiB."""
    spec = gpu_preset(gpu) if gpu else None
    if memory is None:
        if spec:
            return spec.memory_bytes, f"{spec.name} preset"
        return DEFAULT_GPU_MEMORY, name_options("default (80 GiB; pass $[gpu] or $[gpu_memory])")
    value = parse_size(memory) if isinstance(memory, str) else memory
    if spec and value != spec.memory_bytes:
        return value, name_options(
            f"$[gpu_memory] (overrides the {spec.name} preset's {spec.memory_bytes / GIB:.1f} GiB)"
        )
    return value, f"{spec.name} preset" if spec else name_options("$[gpu_memory]")


@dataclass(frozen=True)
class _Clock:
    """What a time estimate needs beyond the setup: the GPU, the MFU, the run's length and price."""

    hardware: Hardware
    mfu: float | None
    global_batch_size: int
    epochs: float | None = None
    max_steps: int | None = None
    gpu_hour_price: float | None = None

    def estimate(self, setup: _Setup, local: int, global_bs: int | None = None) -> TimeEstimate:
        work = Workload(
            model=setup.model,
            method=setup.method,
            seq_length=setup.seq_length,
            local_batch_size=local,
            global_batch_size=global_bs or max(self.global_batch_size, local * setup.dp),
            gpus=setup.gpus,
            activation_checkpointing=setup.ac,
            packing=setup.packing,
            lora_rank=setup.lora_rank,
            lora_targets=setup.lora_targets,
            param_dtype=setup.param_dtype,
            tp=setup.tp,
            cp=setup.cp,
        )
        return estimate_time(work, setup.stats, hardware=self.hardware, mfu=self.mfu, epochs=self.epochs,
                             max_steps=self.max_steps, gpu_hour_price=self.gpu_hour_price)  # fmt: skip

    def consequence(self, base: _Setup, alt: _Setup, local: int) -> tuple[float, str]:
        """(time ratio alt / base on the same data, the words for it): what choosing ``alt`` costs or saves.

        Both at ``alt``'s local batch, so the ratio is the change's own (padding grows with the batch)."""
        a, b = self.estimate(alt, local), self.estimate(base, local)
        wall = a.seconds_per_row / b.seconds_per_row
        why = []
        if alt.method != base.method and base.method == "sft":
            why.append("no weight gradients for the frozen base")
        if alt.ac and not base.ac:
            why.append("recomputes each layer's forward in backward")
        if alt.seq_length < base.seq_length:
            why.append(f"rows longer than {alt.seq_length} cut")
        if alt.method == "qlora" and base.method != "qlora":
            why.append("QLoRA's dequantization not counted: slower in practice")
        reason = f" ({'; '.join(why)})" if why else ""
        if abs(wall - 1) < 0.01:
            return wall, "about the same time per epoch"
        if alt.gpus != base.gpus:
            gpu_h = wall * alt.gpus / base.gpus
            hours = "the same GPU-hours" if abs(gpu_h - 1) < 0.01 else f"~{change(gpu_h)} GPU-hours"
            return wall, f"~{change(wall)} wall time per epoch, {hours}{reason}"
        return wall, f"~{change(wall)} time per epoch{reason}"


def _alternatives(
    setup: _Setup, local: int, global_bs: int, t: TimeEstimate, clock: _Clock
) -> list[dict[str, Any]]:
    """What the same run would cost with packing, with LoRA instead of full SFT, without checkpointing."""
    out: list[dict[str, Any]] = []
    if not setup.packing and t.epoch and replace(setup, packing=True).fits(local):
        p = clock.estimate(replace(setup, packing=True), local, global_bs)
        fewer = t.epoch.computed_tokens / p.epoch.computed_tokens if p.epoch else 1.0
        if fewer >= 1.1 and p.epoch_seconds:
            out.append({
                "change": "packing", "flag": name_options("$[packing]"), "computed_tokens_ratio": round(1 / fewer, 3),
                "time_ratio": round(p.epoch_seconds / t.epoch_seconds, 3), "epoch_seconds": round(p.epoch_seconds, 2),
                "text": name_options(f"packing ($[packing]): {fewer:.1f}x fewer computed tokens, ~{duration(p.epoch_seconds)} per "
                        f"epoch instead of ~{duration(t.epoch_seconds)}"),  # type: ignore[arg-type]
            })  # fmt: skip
    if setup.method == "sft":
        alt = replace(setup, method="lora")
        ratio, words = clock.consequence(setup, alt, local)
        out.append({"change": "lora", "flag": name_options("$[method] lora"), "time_ratio": round(ratio, 3),
                    "text": f"LoRA r{setup.lora_rank} instead of full fine-tuning: {words}"})  # fmt: skip
    if setup.ac:
        alt = replace(setup, ac=False)
        b = alt.largest_batch(local)
        if b:
            ratio, _ = clock.consequence(setup, alt, b)
            out.append({"change": "activation_checkpointing_off", "flag": name_options("$[activation_checkpointing] off"),
                        "local_batch_size": b, "time_ratio": round(ratio, 3),
                        "text": f"without activation checkpointing (fits at local_batch_size {b}): "
                                f"~{change(ratio)} time per epoch"})  # fmt: skip
    return out


def _validate(gpus, mem, method, rank, global_bs, ac_mode, loss, param_dtype, margin) -> None:
    if not isinstance(gpus, int) or gpus < 1:
        raise UsageError(f"$[gpus] {gpus}: at least one GPU", hint="e.g. $[gpus] 8")
    if not isinstance(mem, (int, float)) or mem <= 0:
        raise UsageError(f"$[gpu_memory] {mem}: must be positive", hint="e.g. $[gpu_memory] 80GiB")
    if method not in METHODS:
        raise UsageError(f"$[method] {method!r}: choose one of {', '.join(METHODS)}")
    if method != "sft" and rank < 1:
        raise UsageError(f"$[lora_rank] {rank}: must be at least 1")
    if global_bs < 1:
        raise UsageError(f"$[global_batch_size] {global_bs}: must be at least 1")
    if ac_mode not in ("auto", "on", "off"):
        raise UsageError(f"$[activation_checkpointing] {ac_mode!r}: choose auto, on or off")
    if loss not in LOSSES:
        raise UsageError(f"$[loss] {loss!r}: choose one of {', '.join(LOSSES)}")
    if param_dtype not in PARAM_DTYPES:
        raise UsageError(f"$[param_dtype] {param_dtype!r}: choose one of {', '.join(PARAM_DTYPES)}")
    if not 0 <= margin < 1:
        raise UsageError(
            f"$[margin] {margin}: a fraction in [0, 1)", hint="e.g. $[margin] 0.1 keeps 10% free"
        )


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


# The cheap switches a remedy may add when the change alone is not enough, in this order: fused linear CE costs
# no compute (it never builds the logits), activation checkpointing recomputes each layer's forward in backward.
_SWITCH_LADDER: tuple[tuple[str, ...], ...] = ((), ("fused_linear_ce",), ("activation_checkpointing",),
                                               ("fused_linear_ce", "activation_checkpointing"))  # fmt: skip
_SWITCH_NAMES = {"fused_linear_ce": "fused linear CE", "activation_checkpointing": "activation checkpointing"}


@dataclass(frozen=True)
class _Remedies:
    """What the user asked for explicitly, so a remedy names every switch it turns on beyond that."""

    ac_mode: str
    loss: str
    base: _Setup | None = None  # the setup that does not fit: each remedy's time is compared with it
    clock: _Clock | None = None

    def ladder(self, setup: _Setup, skip: tuple[str, ...] = ()) -> list[tuple[_Setup, tuple[str, ...]]]:
        """``setup`` with each step of the switch ladder that changes something (skipping ``skip``)."""
        out: list[tuple[_Setup, tuple[str, ...]]] = []
        for step in _SWITCH_LADDER:
            if any(sw in skip for sw in step):
                continue
            if ("fused_linear_ce" in step and setup.loss == "fused_linear_ce") or (
                "activation_checkpointing" in step and setup.ac
            ):
                continue
            alt = setup
            if "fused_linear_ce" in step:
                alt = replace(alt, loss="fused_linear_ce")
            if "activation_checkpointing" in step:
                alt = replace(alt, ac=True)
            out.append((alt, step))
        return out

    def added(self, setup: _Setup) -> list[str]:
        """The switches ``setup`` has on that the user did not ask for (auto-enabled AC counts as added)."""
        names = []
        if setup.ac and self.ac_mode != "on":
            names.append("activation_checkpointing")
        if setup.loss == "fused_linear_ce" and self.loss != "fused_linear_ce":
            names.append("fused_linear_ce")
        return names

    def entry(self, kind: str, setup: _Setup, batch: int, **extra: Any) -> dict[str, Any]:
        """A remedy as a complete configuration: everything needed to re-run plan with it."""
        d: dict[str, Any] = {"remedy": kind, **extra}
        d.setdefault("method", setup.method)
        if setup.method != "sft":
            d.setdefault("lora_rank", setup.lora_rank)
        d.setdefault("seq_length", setup.seq_length)
        d.setdefault("gpus", setup.gpus)
        d["activation_checkpointing"] = setup.ac
        d["loss"] = setup.loss
        d["with"] = self.added(setup)
        d["local_batch_size"] = batch or None
        if self.clock and self.base and batch and kind != "smaller_model":
            ratio, words = self.clock.consequence(self.base, setup, batch)
            d["time_ratio"] = round(ratio, 3)
            d["text"] = f"{d['text']}; {words}"
        return d


def _with_text(switches: list[str], sep: str = "") -> str:
    """' with activation checkpointing and fused linear CE' (after ``sep``), or '' when none was added."""
    return f"{sep} with " + " and ".join(_SWITCH_NAMES[s] for s in switches) if switches else ""


def _oom_finding(
    setup: _Setup, est: MemoryEstimate, ac_mode: str, loss: str, clock: _Clock | None = None
) -> Finding:
    """``oom`` with the remedies in order, each a configuration that fits (or saying that none does).

    A remedy first tries its one change alone; when that is not enough it adds the cheap switches in the order
    of ``_SWITCH_LADDER`` and names the ones it added. Deterministic: a fixed list of candidates, no search
    beyond the largest batch / sequence length / parameter count of each.
    """
    rm = _Remedies(ac_mode=ac_mode, loss=loss, base=setup, clock=clock)
    usable_gib = setup.usable / GIB
    remedies: list[dict[str, Any]] = []
    # 1. shorter sequences (with batch 1)
    for alt, _ in rm.ladder(setup):
        s = alt.largest_seq()
        if s:
            remedies.append(rm.entry("reduce_seq_length", replace(alt, seq_length=s), 1,
                                    text=f"reduce sequence length: fits at seq_length {s}, local_batch_size 1"
                                         f"{_with_text(rm.added(alt), ',')}"))  # fmt: skip
            break
    else:
        remedies.append({"remedy": "reduce_seq_length", "seq_length": None, "local_batch_size": None,
                         "text": f"reducing sequence length is not enough: even {SEQ_STEP} tokens do not fit"})  # fmt: skip
    # 2. LoRA (from full fine-tuning) / QLoRA (from LoRA)
    if setup.method in ("sft", "lora"):
        targets = ("lora", "qlora") if setup.method == "sft" else ("qlora",)
        rank = 16 if setup.method == "sft" else setup.lora_rank
        found: tuple[_Setup, int] | None = None
        for target in targets:
            for alt, _ in rm.ladder(replace(setup, method=target, lora_rank=rank)):
                b = alt.largest_batch()
                if b:
                    found = (alt, b)
                    break
            if found:
                break
        if found:
            alt, b = found
            name = "LoRA" if alt.method == "lora" else "QLoRA"
            w = _with_text(rm.added(alt))
            remedies.append(rm.entry(f"switch_to_{alt.method}", alt, b,
                                    text=f"switch to {name}: {name} r{rank}{w} fits with local_batch_size {b}"))  # fmt: skip
        else:
            name = "LoRA" if setup.method == "sft" else "QLoRA"
            remedies.append({"remedy": f"switch_to_{targets[-1]}", "method": targets[-1], "lora_rank": rank,
                             "local_batch_size": None,
                             "text": f"switch to {name}: {name} r{rank} does not fit either at seq_length "
                                     f"{setup.seq_length}, even with activation checkpointing and fused linear CE"})  # fmt: skip
    # 3. a smaller model
    for alt, _ in rm.ladder(setup):
        n = _max_model_params(alt)
        if n:
            remedies.append(rm.entry("smaller_model", alt, 1, max_parameters=n,
                                    text=f"choose a smaller model: about {n / 1e9:.2f}B parameters or fewer fit "
                                         f"at seq_length {setup.seq_length}, local_batch_size 1"
                                         f"{_with_text(rm.added(alt), ',')}"))  # fmt: skip
            break
    else:
        remedies.append({"remedy": "smaller_model", "max_parameters": None,
                         "text": f"a smaller model alone is not enough at seq_length {setup.seq_length}"})  # fmt: skip
    # 4. activation checkpointing, when off (alone: its combination with fused CE is the next entry)
    if not setup.ac:
        alt = replace(setup, ac=True)
        b = alt.largest_batch()
        remedies.append(rm.entry("activation_checkpointing", alt, b,
                                text=f"turn on activation checkpointing: fits with local_batch_size {b}" if b
                                else "turn on activation checkpointing: still does not fit alone"))  # fmt: skip
    # 5. fused linear cross-entropy, when another loss is used (with AC when alone is not enough)
    if setup.loss != "fused_linear_ce":
        alt = replace(setup, loss="fused_linear_ce")
        b = alt.largest_batch()
        if b:
            text = f"use $[loss] fused_linear_ce (no logits buffer): fits with local_batch_size {b}"
        elif not setup.ac and (b := replace(alt, ac=True).largest_batch()):
            alt = replace(alt, ac=True)
            text = (f"use $[loss] fused_linear_ce: does not fit alone, but with activation checkpointing "
                    f"as well it fits with local_batch_size {b}")  # fmt: skip
        else:
            alt = replace(alt, ac=True)
            s = alt.largest_seq()  # the most it buys: a longer sequence than remedy 1's
            if s:
                alt = replace(alt, seq_length=s)
                b = 1
                text = (f"use $[loss] fused_linear_ce: not enough alone at seq_length {setup.seq_length}; seq_length "
                        f"{s} fits, local_batch_size 1{_with_text(rm.added(alt), ',')}")  # fmt: skip
            else:
                text = "use $[loss] fused_linear_ce: still does not fit alone"
        remedies.append(rm.entry("fused_linear_ce", alt, b, text=name_options(text)))  # a remedy is data too
    # 6. more GPUs (FSDP2 shards the states further)
    for alt, _ in rm.ladder(setup):
        g = next((g for g in (2**k for k in range(1, 11)) if g > alt.dp and replace(alt, dp=g).fits(1)), 0)
        if g:
            n = replace(alt, dp=g).gpus
            remedies.append(rm.entry("more_gpus", replace(alt, dp=g), 1, gpus=n,
                                    text=f"use more GPUs: fits on {n} GPUs with local_batch_size 1"
                                         f"{_with_text(rm.added(alt), ',')}"))  # fmt: skip
            break
    message = (
        f"one sequence of {setup.seq_length} tokens needs {est.total_gib:.1f} GiB per GPU, more than the "
        f"{usable_gib:.1f} GiB usable ({setup.method}, {setup.gpus} GPU(s), activation checkpointing "
        f"{'on' if setup.ac else 'off'}, loss {setup.loss})"
    )
    hint = "; ".join(r["text"] for r in remedies) or "more or larger GPUs"
    return finding("oom", message, hint=hint, remedies=remedies)


# -- plan from files ----------------------------------------------------------------------------------------


def read_stats(path: str | Path) -> StatsSummary:
    """A stats document (``dataprep stats --json``) as a ``StatsSummary``; anything else is unreadable input."""
    import json

    from .errors import UnreadableInput
    from .stats import StatsSummary

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise UnreadableInput(path, f"cannot read ({e.strerror})") from None
    except ValueError as e:
        raise UnreadableInput(
            path, f"not JSON ({e})", hint="write it with `dataprep stats ... --json > stats.json`"
        ) from None
    if not isinstance(doc, dict) or not ({"recommended_seq_length", "padding", "tokens"} & doc.keys()):
        raise UnreadableInput(path, "not a stats document (no recommended_seq_length, padding or tokens)",
                              hint="write it with `dataprep stats ... --json > stats.json`")  # fmt: skip
    return StatsSummary.from_json(doc)


def measure_stats(
    dataset: str, model: str, seq_length: int | None = None, *, allow_download: bool = False
) -> StatsSummary:
    """The stats of ``dataset`` (any shape the row pipeline reads) through ``model``'s chat template, at the
    usual sequence lengths (and ``seq_length``) and micro-batch sizes."""
    from .errors import FindingError
    from .stats import stats_of_input
    from .tokenizer import load_tokenizer

    loaded = load_tokenizer(model, allow_download=allow_download)
    if loaded.template is None:
        raise FindingError(
            finding("chat_template_missing", f"{model}: no chat template to measure the dataset through")
        )
    seqs = sorted({*DEFAULT_SEQ_LENGTHS, *((seq_length,) if seq_length else ())})
    return stats_of_input(dataset, loaded, seq_lengths=seqs, batch_sizes=PLAN_BATCH_SIZES).summary()


@dataclass(frozen=True)
class PlannedRun:
    """``plan_files``' result: the plan, its overrides as YAML, and whether they were written."""

    plan: PlanResult
    overrides_yaml: str
    overrides_path: str | None = None
    overrides_written: bool = False


def plan_files(
    model: str,
    *,
    stats_path: str | None = None,
    dataset: str | None = None,
    seq_length: int | None = None,
    gpu_memory: str | int | None = None,
    overrides_path: str | None = None,
    allow_download: bool = False,
    **options: Any,
) -> PlannedRun:
    """``make_plan`` for a model folder (or cached id) and saved stats, a dataset, or a sequence length; the
    overrides YAML is written to ``overrides_path`` (atomically) only when the plan fits: a plan that does not
    fit has no shape to train with, so an existing file is left alone. ``options``: ``make_plan``'s."""
    from .atomic import atomic_write, check_output_path
    from .modelconfig import load_model_config
    from .overrides import to_yaml

    if stats_path and dataset:
        raise UsageError(
            "$[stats_path] and $[dataset]: give one", hint="$[stats_path] reads saved statistics"
        )
    if not (stats_path or dataset) and seq_length is None:
        raise UsageError(
            "a plan needs $[stats_path], $[dataset] or $[seq_length]",
            hint="e.g. $[stats_path] stats.json or $[seq_length] 4096",
        )
    if seq_length is not None and seq_length < 1:
        raise UsageError(f"$[seq_length] {seq_length}: must be positive", hint="e.g. $[seq_length] 4096")
    gpus = options.get("gpus", 1)
    if not isinstance(gpus, int) or gpus < 1:  # before any reading or measuring
        raise UsageError(f"$[gpus] {gpus}: at least one GPU", hint="e.g. $[gpus] 8")
    mem = parse_size(gpu_memory) if isinstance(gpu_memory, str) else gpu_memory
    if overrides_path:
        check_output_path(overrides_path, [p for p in (stats_path, dataset) if p], force=True)
    cfg = load_model_config(model, allow_download=allow_download)
    stats = (
        read_stats(stats_path)
        if stats_path
        else (measure_stats(dataset, model, seq_length, allow_download=allow_download) if dataset else None)
    )
    result = make_plan(cfg, stats=stats, seq_length=seq_length, gpu_memory_bytes=mem, **options)
    yaml_text = to_yaml(result.overrides(), header="AutoModel overrides from `dataprep plan`")
    written = bool(overrides_path) and result.fits
    if written:
        with atomic_write(overrides_path) as fh:
            fh.write(yaml_text)
    return PlannedRun(result, yaml_text, overrides_path, written)
