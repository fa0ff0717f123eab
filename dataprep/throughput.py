"""Step time, epoch time and GPU-hours before a GPU is booked: FLOPs per token, tokens computed, peak, MFU.

    step_seconds = max(compute, communication floor)
    compute      = computed tokens per step x FLOPs per computed token / (GPUs x peak BF16 FLOP/s x MFU)

FLOPs per token (``flops_per_token``), from the architecture, with ``A`` the multiply-adds of one token through
the decoder Linears (MoE: the router, the top-k experts and the shared expert, not every expert):

    forward    2A (Linears) + 2 L nq d c (attention: QK^T and AV, causal, so a token attends to c/2 positions on
               average over a row of c) + 2 h V (lm_head) + LoRA's adapters (2 r (d_in + d_out) per adapted Linear)
    backward   full SFT: 2x the forward GEMMs (gradients of the activations and of the weights); LoRA/QLoRA: 1x the
               frozen GEMMs (activation gradients only: the frozen weights get none) + 2x the adapters; attention
               2x its forward either way (both operands are activations)
    recompute  activation checkpointing runs each decoder layer's forward again in backward: 2A + attention +
               adapters (not the lm_head, which is outside the checkpointed layers). Its cost is not a constant:
               ``recompute / (forward + backward)`` is ~+33% for full SFT (one forward on top of three) and ~+50%
               for LoRA (one on top of two), a little less where the lm_head and attention weigh more.

Tokens computed per step (``epoch_tokens``): AutoModel's collator pads each micro-batch to its longest row (the
plan's overrides set ``truncation: true``, ``padding: do_not_pad``), so a micro-batch of ``b`` random rows
computes ``b x E[longest of b rows, capped at seq_length]`` tokens: the stats' ``padding[].expected_max_len_random``
(its ``capped`` entry for the seq_length). With packing every sequence is one pack of ``seq_length`` tokens and an
epoch is the stats' ``packing[].packs`` packs (first-fit decreasing); attention then spans each packed row, not the
pack (varlen attention over the packed rows), approximated from the stats' histogram as E[n^2] / E[n].

MFU: the fraction of the peak the run sustains on the FLOPs it executes (recompute included, so it is the MFU of
a run without activation checkpointing). The optimizer step (elementwise, memory-bound) is left out. Two values are
stated:

    MFU_STOCK = 0.30  the default: a stock AutoModel run (Hugging Face modelling code, FSDP2, SDPA/flash
                      attention, no Transformer Engine, no torch.compile). An assumption, below both figures it
                      is read from: torchtitan's eager native-PyTorch FSDP2 Llama 3.1 8B on H100 reaches 34% MFU
                      (5,762 tokens/s/GPU, seq 8192, its docs/performance.md; 500 W power cap) and the tuned stack
                      below; HF's modelling code runs RMSNorm, RoPE and SwiGLU unfused.
    MFU_TUNED = 0.46  AutoModel's benchmark stack (TE + triton LoRA kernels, FSDP2 prefetch, mock data with full
                      sequences): fitted to the seven rows of AutoModel's performance summary
                      (the rows in tests/test_throughput.py, with their sources; bench/README.md), each reproduced
                      within 15%.

Communication floor: FSDP2 prefetches, so its traffic overlaps compute, but it cannot take less than its bytes over
the link. Each GPU receives, per optimizer step, the parameters all-gathered for every micro-batch's forward and again
for its backward, plus (full SFT) the gradients reduce-scattered once: ``fsdp_bytes_per_step``. Over the preset's
datasheet link bandwidth (NVLink, or PCIe for the PCIe cards) that is a lower bound on the time, and the step takes
the longer of the two; it binds for short micro-batches on PCIe GPUs (8 x L40S, 8 x RTX 4090). Drawn inside one node
only (<= 8 GPUs): between nodes the topology decides. Tensor-parallel traffic is not modelled.

GPU presets (``GPUS``): memory as CUDA reports it (nvidia-smi ``memory.total``), the dense BF16 tensor peak (NVIDIA
quotes "with sparsity" figures at twice the dense one) and the GPU-to-GPU link, each with its source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .findings import name_options
from .memory import QLORA_BYTES
from .modelconfig import LinearSpec, ModelConfig

if TYPE_CHECKING:  # plan and the time estimate read a summary; measuring's imports are not needed for that
    from .stats import StatsSummary

MIB = 1024**2
HOUR = 3600.0
MFU_STOCK = 0.30
MFU_TUNED = 0.46
MFU_STOCK_SOURCE = (
    "assumed for a stock AutoModel run (HF modelling code, FSDP2, no Transformer Engine, no torch.compile): "
    "below torchtitan's 34% for eager FSDP2 Llama 3.1 8B on H100 and the 0.46 fitted to AutoModel's tuned "
    "benchmark rows; pass $[mfu] to use your own measurement"  # shown through name_options
)
MFU_TUNED_SOURCE = (
    "fitted to AutoModel's performance summary (TE + triton LoRA kernels, FSDP2 prefetch, full sequences; "
    "DGX-H100): every row within 15%"
)


# -- GPUs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPUSpec:
    """A GPU preset: memory CUDA sees, dense BF16 tensor peak, GPU-to-GPU link, where the figures come from."""

    name: str
    memory_bytes: int
    peak_tflops: float
    link_gb_per_s: float  # one direction, GPU to GPU inside a node (NVLink, else PCIe)
    source: str
    aliases: tuple[str, ...] = ()


_NVSMI = "memory: nvidia-smi memory.total"
_PCIE4 = "PCIe 4.0 x16, 32 GB/s each way"
GPUS: tuple[GPUSpec, ...] = (
    GPUSpec("H100-80GB", 81559 * MIB, 989.4, 450,
            "H100 SXM5 datasheet: BF16 tensor 1,979 TFLOPS with sparsity; NVLink 900 GB/s (450 each way); 80 GB "
            f"HBM3 ({_NVSMI} 81559 MiB)",
            ("h100", "h100-sxm", "h100-sxm5", "h100-80g", "h100-sxm-80gb", "h100-sxm5-80gb")),
    GPUSpec("H100-PCIe", 81559 * MIB, 756.0, 64,
            "H100 PCIe datasheet: BF16 tensor 1,513 TFLOPS with sparsity; PCIe 5.0 x16, 64 GB/s each way; 80 GB "
            f"HBM2e ({_NVSMI} 81559 MiB)",
            ("h100-pcie-80gb", "h100pcie")),
    GPUSpec("H200", 143771 * MIB, 989.4, 450,
            "H200 SXM datasheet: BF16 tensor 1,979 TFLOPS with sparsity; NVLink 900 GB/s (450 each way); 141 GB "
            f"HBM3e ({_NVSMI} 143771 MiB)",
            ("h200-sxm", "h200-141gb", "h200-sxm-141gb")),
    GPUSpec("B200", 183359 * MIB, 2250.0, 900,
            "HGX B200 datasheet: BF16 tensor 4.5 PFLOPS with sparsity per GPU; NVLink 1.8 TB/s (900 GB/s each "
            f"way); 180 GB HBM3e ({_NVSMI} 183359 MiB)",
            ("b200-180gb", "b200-sxm")),
    GPUSpec("A100-80GB", 81920 * MIB, 312.0, 300,
            "A100 SXM datasheet: BF16 tensor 312 TFLOPS (624 with sparsity); NVLink 600 GB/s (300 each way); 80 GB "
            f"HBM2e ({_NVSMI} 81920 MiB)",
            ("a100-80g", "a100-sxm-80gb", "a100-sxm4-80gb")),
    GPUSpec("A100-40GB", 40960 * MIB, 312.0, 300,
            "A100 SXM datasheet: BF16 tensor 312 TFLOPS (624 with sparsity); NVLink 600 GB/s (300 each way); 40 GB "
            f"HBM2 ({_NVSMI} 40960 MiB)",
            ("a100-40g", "a100-sxm-40gb", "a100-sxm4-40gb")),
    GPUSpec("L40S", 46068 * MIB, 362.05, 32,
            f"L40S datasheet: BF16 tensor 733 TFLOPS with sparsity; {_PCIE4}; 48 GB GDDR6 ({_NVSMI} 46068 MiB)",
            ("l40s-48gb",)),
    GPUSpec("L4", 23034 * MIB, 121.0, 32,
            f"L4 datasheet: BF16 tensor 242 TFLOPS with sparsity; {_PCIE4}; 24 GB GDDR6 ({_NVSMI} 23034 MiB)",
            ("l4-24gb",)),
    GPUSpec("A10G", 23028 * MIB, 70.0, 32,
            "AWS's A10 variant (g5 instances), no NVIDIA datasheet: 70 TFLOPS BF16 tensor as Baseten's A10 vs A10G "
            f"comparison gives it (the A10's datasheet: 125); {_PCIE4}; 24 GB GDDR6 ({_NVSMI} 23028 MiB)",
            ("a10g-24gb",)),
    GPUSpec("RTX-4090", 24564 * MIB, 165.2, 32,
            "Ada whitepaper (AD102): 165.2 TFLOPS FP16/BF16 tensor with FP32 accumulate, which PyTorch uses (330.3 "
            f"with sparsity); {_PCIE4} (no peer-to-peer: slower in practice); 24 GB GDDR6X ({_NVSMI} 24564 MiB)",
            ("rtx4090", "4090", "geforce-rtx-4090")),
    GPUSpec("RTX-3090", 24576 * MIB, 71.0, 32,
            "Ampere GA102 whitepaper: 71 TFLOPS FP16/BF16 tensor with FP32 accumulate (142 with sparsity); "
            f"{_PCIE4}; 24 GB GDDR6X ({_NVSMI} 24576 MiB)",
            ("rtx3090", "3090", "geforce-rtx-3090")),
)  # fmt: skip
DEFAULT_GPU = "H100-80GB"  # the peak assumed when neither --gpu nor --gpu-tflops is given
_AMBIGUOUS = {"a100": ("A100-80GB", "A100-40GB")}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def gpu_preset(name: str) -> GPUSpec:
    """The preset for a GPU name: case-insensitive, with aliases (h100, h100-sxm, a100-80gb, rtx4090...)."""
    key = _key(name)
    if key in _AMBIGUOUS:
        options = " or ".join(_AMBIGUOUS[key])
        raise UsageError(f"$[gpu] {name!r}: which one, {options}?", hint=f"e.g. $[gpu] {_AMBIGUOUS[key][0]}")
    for spec in GPUS:
        if key == _key(spec.name) or key in spec.aliases:
            return spec
    raise UsageError(
        f"$[gpu] {name!r}: not a GPU dataprep knows",
        hint=f"one of {', '.join(s.name for s in GPUS)}; or give $[gpu_memory] and $[gpu_tflops] (dense BF16 peak)",
    )


@dataclass(frozen=True)
class Hardware:
    """The peak the estimate uses and where it comes from."""

    name: str
    peak_tflops: float
    source: str
    assumed: bool = False  # no --gpu / --gpu-tflops: DEFAULT_GPU's peak
    link_gb_per_s: float | None = None  # None: no preset, so no communication floor

    @classmethod
    def resolve(cls, gpu: str | None = None, tflops: float | None = None) -> Hardware:
        """--gpu-tflops wins over the --gpu preset; neither: DEFAULT_GPU's peak, marked as assumed."""
        if tflops is not None and not (
            isinstance(tflops, (int, float)) and math.isfinite(tflops) and tflops > 0
        ):
            raise UsageError(
                f"$[gpu_tflops] {tflops}: must be positive", hint="e.g. $[gpu_tflops] 989 (H100 dense BF16)"
            )
        spec = gpu_preset(gpu) if gpu else None
        if tflops is not None:
            name = spec.name if spec else "custom"
            note = f" (overrides the {spec.name} preset's {spec.peak_tflops:g})" if spec else ""
            link = spec.link_gb_per_s if spec else None
            return cls(
                name, float(tflops), name_options(f"$[gpu_tflops] {tflops:g}{note}"), link_gb_per_s=link
            )
        if spec:
            return cls(spec.name, spec.peak_tflops, spec.source, link_gb_per_s=spec.link_gb_per_s)
        d = gpu_preset(DEFAULT_GPU)
        return cls(
            d.name, d.peak_tflops, name_options(f"assumed (no $[gpu]): {d.source}"), True, d.link_gb_per_s
        )


# -- FLOPs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlopsPerToken:
    """FLOPs of one computed token (padding included) through one optimizer step's forward and backward."""

    forward: float
    backward: float
    recompute: float  # activation checkpointing: the decoder layers' forward again (0 when AC is off)
    recompute_if_checkpointed: float  # what AC would add, on or off: its time factor is derived from it

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute

    @property
    def checkpointing_factor(self) -> float:
        """Step time with activation checkpointing / without (same tokens): 1 + recompute / (fwd + bwd)."""
        return 1 + self.recompute_if_checkpointed / (self.forward + self.backward)

    def to_dict(self) -> dict[str, float]:
        return {
            "forward": _sig(self.forward / 1e9),
            "backward": _sig(self.backward / 1e9),
            "recompute": _sig(self.recompute / 1e9),
            "total": _sig(self.total / 1e9),
        }


def _active(m: ModelConfig, spec: LinearSpec) -> int:
    """Copies of a Linear a token goes through: the top-k of an expert bank, every other Linear once."""
    if m.is_moe and spec.count == m.num_experts and spec.count > 1:
        return m.experts_per_token
    return spec.count


def flops_per_token(
    m: ModelConfig,
    *,
    method: str = "sft",
    context: float = 2048,
    activation_checkpointing: bool = False,
    lora_rank: int = 8,
    lora_targets: str = "*_proj",
) -> FlopsPerToken:
    """FLOPs per computed token (see the module docstring); ``context``: the padded row length (causal)."""
    L = m.num_layers
    linear = 2 * L * sum(s.d_in * s.d_out * _active(m, s) for s in m.layer_linears())
    attention = 2 * L * m.num_heads * m.head_dim * float(context)  # 4 nq d per position over c/2 positions
    head = 2 * m.hidden_size * m.vocab_size
    adapters = 0.0
    if method != "sft":
        adapters = (
            2 * L * sum(lora_rank * (s.d_in + s.d_out) * _active(m, s) for s in m.lora_targets(lora_targets))
        )
    forward = linear + attention + head + adapters
    if method == "sft":
        backward = 2 * (linear + head) + 2 * attention
    else:  # frozen base: activation gradients only; the adapters get both
        backward = (linear + head) + 2 * attention + 2 * adapters
    recompute = linear + attention + adapters
    return FlopsPerToken(forward, backward, recompute if activation_checkpointing else 0.0, recompute)


# -- the stats document -----------------------------------------------------------------------------------------


def _sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (tiny and huge runs both keep their precision in JSON)."""
    return float(f"{x:.{digits}g}")


def expected_padded_length(stats: StatsSummary | None, batch_size: int, seq_length: int) -> int | None:
    """The expected longest row of a random batch of ``batch_size`` (from the stats), capped at seq_length."""
    if stats is None:
        return None
    if stats.padding:
        # the row for this batch size, else the next larger one (a longer expected max: conservative)
        chosen = next((r for r in stats.padding if r.batch_size >= batch_size), stats.padding[-1])
        if v := chosen.capped.get(seq_length):
            return min(seq_length, math.ceil(v))
        if v := chosen.expected_max_len_random:
            return min(seq_length, math.ceil(v))
    mx = stats.total_max
    return min(seq_length, int(mx)) if mx else None


def _histogram_moments(stats: StatsSummary, seq_length: int) -> tuple[float, float] | None:
    """(E[n], E[n^2]) of the row lengths capped at seq_length, from the histogram's bin midpoints."""
    n = s1 = s2 = 0.0
    for lo, hi, c in stats.histogram:
        mid = min(seq_length, (lo + hi) / 2)
        n, s1, s2 = n + c, s1 + c * mid, s2 + c * mid * mid
    return (s1 / n, s2 / n) if n and s1 else None


def _mean_capped(stats: StatsSummary, seq_length: int) -> tuple[float, str] | None:
    """Mean row length after right truncation to seq_length, and how it was read."""
    mean, mx = stats.total_mean, stats.total_max
    if mean and mx and mx <= seq_length:
        return mean, "no row is longer than seq_length"
    count, tsum = stats.total_count, stats.total_sum
    if count and tsum and seq_length in stats.tokens_lost:
        return (tsum - stats.tokens_lost[seq_length]) / count, "stats truncation table"
    for p in stats.padding:
        if p.batch_size == 1 and (v := p.capped.get(seq_length)):
            return v, "stats padding table (batch size 1, capped)"
    if moments := _histogram_moments(stats, seq_length):
        return moments[0], "stats histogram (bin midpoints)"
    if mean:
        return mean, "stats mean row length, untruncated (an upper bound)"
    return None


def _epoch_rows(stats: StatsSummary) -> tuple[float, str] | None:
    """Rows one epoch trains on; a sampled stats document is scaled up to the rows read."""
    rows = stats.rows
    if not rows:
        return None
    if stats.sampled and (read := stats.rows_read):
        measured = rows + stats.rows_skipped
        if read > measured:
            return (
                rows * read / measured,
                f"a sample of {int(rows)} rows, scaled to the {int(read)} rows read",
            )
    return rows, "every row measured"


@dataclass(frozen=True)
class EpochTokens:
    """What one epoch trains on: rows, sequences (rows, or packs), real tokens and tokens computed."""

    rows: float
    sequences: float  # what global_batch_size counts: rows, or packs with packing
    real_tokens: float  # after right truncation to seq_length
    computed_tokens: float  # with the padding of each micro-batch (or the empty room in each pack)
    attention_context: float  # the row length a computed token's causal attention runs over
    notes: tuple[str, ...] = ()

    @property
    def computed_per_sequence(self) -> float:
        return self.computed_tokens / self.sequences

    @property
    def efficiency(self) -> float:
        """Real / computed tokens (padding or packing efficiency)."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0


def epoch_tokens(
    stats: StatsSummary | None, *, seq_length: int, local_batch_size: int, packing: bool
) -> EpochTokens | None:
    """An epoch's tokens from the stats document; None without stats (or without a row count in them)."""
    if stats is None:
        return None
    rows_read = _epoch_rows(stats)
    capped = _mean_capped(stats, seq_length)
    if rows_read is None or capped is None:
        return None
    rows, rows_note = rows_read
    mean, mean_note = capped
    real = rows * mean
    notes = [f"rows: {rows_note}", f"real tokens: {mean_note}"]
    moments = _histogram_moments(stats, seq_length)
    if packing:
        eff = stats.packing_efficiency.get(seq_length)
        if eff:
            notes.append(f"packs: first-fit decreasing at {seq_length} (stats packing table, {eff:.1%} full)")
        else:
            eff = 1.0
            notes.append(f"no packing row for {seq_length} in the stats: packs assumed full (a lower bound)")
        sequences = real / (seq_length * min(1.0, eff))
        computed = sequences * seq_length
        # varlen attention over each packed row: a token attends within its row, E[n^2]/E[n] long on average
        context = moments[1] / moments[0] if moments else float(seq_length)
        if not moments:
            notes.append("attention over the whole pack (no histogram in the stats: an upper bound)")
    else:
        padded = expected_padded_length(stats, local_batch_size, seq_length) or seq_length
        padded = max(float(padded), mean)  # the longest of b rows is never shorter than the mean row
        sequences, computed, context = rows, rows * padded, padded
        notes.append(
            f"each micro-batch of {local_batch_size} pads to its longest row: ~{padded:.0f} tokens "
            "(stats padding table, expected longest row of a random batch)"
        )
    return EpochTokens(rows, sequences, real, computed, context, tuple(notes))


# -- the estimate -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """The training shape a time estimate is for (what the plan recommends, or a remedy)."""

    model: ModelConfig
    method: str
    seq_length: int
    local_batch_size: int
    global_batch_size: int
    gpus: int  # every GPU of the job (dp x tp x cp)
    activation_checkpointing: bool = False
    packing: bool = False
    lora_rank: int = 8
    lora_targets: str = "*_proj"
    param_dtype: str = "bf16"
    tp: int = 1
    cp: int = 1

    @property
    def dp(self) -> int:
        return max(1, self.gpus // (self.tp * self.cp))

    @property
    def micro_batches(self) -> int:
        """Micro-batches each GPU runs per optimizer step (gradient accumulation)."""
        return max(1, math.ceil(self.global_batch_size / (self.local_batch_size * self.dp)))


GPUS_PER_NODE = 8  # beyond one node the links differ (InfiniBand, topology): no floor is drawn


def fsdp_bytes_per_step(w: Workload) -> float:
    """Bytes each GPU receives from FSDP2 per optimizer step, at least: the parameters all-gathered for every
    micro-batch's forward and again for its backward (FSDP2 reshards after forward), and for full SFT the gradients
    reduce-scattered once per step (deferred to the last micro-batch: the fewest bytes AutoModel can send)."""
    fsdp = w.dp * w.cp  # FSDP2 shards over dp x cp; tensor parallelism splits each Linear tp ways
    if fsdp <= 1:
        return 0.0
    m = w.model
    if w.method == "qlora":
        linear = min(m.parameters, m.num_layers * sum(s.d_in * s.d_out * s.count for s in m.layer_linears()))
        weights = linear * QLORA_BYTES + (m.parameters - linear) * 2
    else:
        weights = m.parameters * (4 if w.param_dtype == "fp32" else 2)
    share = (fsdp - 1) / fsdp / w.tp
    gathered = 2 * weights * share * w.micro_batches
    grads = weights * share if w.method == "sft" else 0.0
    return gathered + grads


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds per optimizer step, per epoch and for the run, with every assumption behind them."""

    workload: Workload
    hardware: Hardware
    mfu: float
    mfu_source: str
    flops: FlopsPerToken
    epoch: EpochTokens | None
    computed_tokens_per_sequence: float
    real_tokens_per_sequence: float
    step_seconds: float  # max(compute, communication floor)
    compute_seconds: float = 0.0
    communication_seconds: float | None = None  # the FSDP2 traffic floor; None when not drawn
    epochs: float | None = None
    max_steps: int | None = None
    gpu_hour_price: float | None = None
    alternatives: tuple[dict[str, Any], ...] = ()
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def bound(self) -> str:
        """'compute', or 'communication' when the FSDP2 traffic floor is the longer."""
        comm = self.communication_seconds
        return "communication" if comm is not None and comm > self.compute_seconds else "compute"

    @property
    def sequences_per_step(self) -> int:
        return self.workload.global_batch_size

    @property
    def steps_per_epoch(self) -> int | None:
        return math.ceil(self.epoch.sequences / self.sequences_per_step) if self.epoch else None

    @property
    def epoch_seconds(self) -> float | None:
        """Compute time of one pass over the data (a last, partial step counts for what it holds)."""
        return self.epoch.sequences / self.sequences_per_step * self.step_seconds if self.epoch else None

    @property
    def seconds_per_row(self) -> float:
        """Wall seconds per training row: what compares two setups on the same data."""
        if self.epoch:
            return self.epoch_seconds / self.epoch.rows  # type: ignore[operator]
        return self.step_seconds / self.sequences_per_step

    @property
    def run_epochs(self) -> float | None:
        """Epochs the run trains for: --epochs, else one when there is no --max-steps."""
        if self.epochs is not None:
            return self.epochs
        return None if self.max_steps is not None else 1.0

    @property
    def run_steps(self) -> int | None:
        by_epochs = (
            math.ceil(self.run_epochs * self.epoch.sequences / self.sequences_per_step)
            if self.run_epochs is not None and self.epoch
            else None
        )
        options = [s for s in (by_epochs, self.max_steps) if s is not None]
        return min(options) if options else None  # AutoModel stops at whichever comes first

    @property
    def run_seconds(self) -> float | None:
        steps = self.run_steps
        if steps is None:
            return None
        if self.max_steps is not None and steps == self.max_steps:
            return steps * self.step_seconds
        return self.run_epochs * self.epoch_seconds  # type: ignore[operator]

    @property
    def limited_by(self) -> str | None:
        if self.run_steps is None:
            return None
        if self.max_steps is not None and self.run_steps == self.max_steps:
            return "max_steps"
        return "epochs"

    @property
    def gpu_hours(self) -> float | None:
        s = self.run_seconds
        return None if s is None else s * self.workload.gpus / HOUR

    def to_dict(self) -> dict[str, Any]:
        w, e = self.workload, self.epoch
        per_gpu = self.step_seconds * w.gpus
        out: dict[str, Any] = {
            "gpu": self.hardware.name,
            "gpus": w.gpus,
            "peak_tflops_per_gpu": self.hardware.peak_tflops,
            "peak_source": self.hardware.source,
            "peak_assumed": self.hardware.assumed,
            "mfu": self.mfu,
            "mfu_source": self.mfu_source,
            "gflops_per_computed_token": self.flops.to_dict(),
            "activation_checkpointing": w.activation_checkpointing,
            "activation_checkpointing_step_time_factor": round(self.flops.checkpointing_factor, 3),
            "packing": w.packing,
            "sequences_per_step": self.sequences_per_step,
            "tokens_per_step": {
                "real": round(self.real_tokens_per_sequence * self.sequences_per_step),
                "computed": round(self.computed_tokens_per_sequence * self.sequences_per_step),
            },
            "tokens_per_second_per_gpu": {
                "real": round(self.real_tokens_per_sequence * self.sequences_per_step / per_gpu, 1),
                "computed": round(self.computed_tokens_per_sequence * self.sequences_per_step / per_gpu, 1),
            },
            "step_seconds": _sig(self.step_seconds),
            "compute_seconds_per_step": _sig(self.compute_seconds),
            "communication_floor_seconds_per_step": (
                None if self.communication_seconds is None else _sig(self.communication_seconds)
            ),
            "bound": self.bound,
            "link_gb_per_s": self.hardware.link_gb_per_s,
            "epoch": None,
            "run": None,
        }
        if e:
            out["epoch"] = {
                "rows": round(e.rows),
                "sequences": round(e.sequences),
                "real_tokens": round(e.real_tokens),
                "computed_tokens": round(e.computed_tokens),
                "token_efficiency": round(e.efficiency, 4),
                "steps": self.steps_per_epoch,
                "seconds": _sig(self.epoch_seconds),  # type: ignore[arg-type]
                "hours": _sig(self.epoch_seconds / HOUR),  # type: ignore[operator]
            }
        if self.run_seconds is not None:
            hours = self.gpu_hours
            out["run"] = {
                "epochs": self.run_epochs,
                "epochs_assumed": self.epochs is None and self.max_steps is None,
                "max_steps": self.max_steps,
                "limited_by": self.limited_by,
                "steps": self.run_steps,
                "seconds": _sig(self.run_seconds),
                "hours": _sig(self.run_seconds / HOUR),
                "gpu_hours": _sig(hours),  # type: ignore[arg-type]
                "gpu_hour_price": self.gpu_hour_price,
                "cost": _sig(hours * self.gpu_hour_price) if self.gpu_hour_price is not None else None,  # type: ignore[operator]
            }
        out["alternatives"] = [dict(a) for a in self.alternatives]
        out["assumptions"] = list(self.assumptions)
        return out


def estimate_time(
    w: Workload,
    stats: StatsSummary | None = None,
    *,
    hardware: Hardware | None = None,
    mfu: float | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    gpu_hour_price: float | None = None,
) -> TimeEstimate:
    """Step, epoch and run time for the workload; ``mfu`` None: MFU_STOCK."""
    check_run_options(mfu=mfu, epochs=epochs, max_steps=max_steps, gpu_hour_price=gpu_hour_price)
    hw = hardware or Hardware.resolve()
    eff = MFU_STOCK if mfu is None else float(mfu)
    e = epoch_tokens(stats, seq_length=w.seq_length, local_batch_size=w.local_batch_size, packing=w.packing)
    if e:
        computed, real, context = e.computed_per_sequence, e.real_tokens / e.sequences, e.attention_context
    else:  # no stats: every sequence seq_length tokens long (the worst case; no epoch without a row count)
        computed = real = context = float(w.seq_length)
    flops = flops_per_token(
        w.model,
        method=w.method,
        context=context,
        activation_checkpointing=w.activation_checkpointing,
        lora_rank=w.lora_rank,
        lora_targets=w.lora_targets,
    )
    step_flops = computed * w.global_batch_size * flops.total
    compute = step_flops / (w.gpus * hw.peak_tflops * 1e12 * eff)
    mfu_source = name_options(MFU_STOCK_SOURCE if mfu is None else "$[mfu]")
    notes = [f"MFU {eff:g}: {mfu_source}"]
    comm = None
    traffic = fsdp_bytes_per_step(w)
    if traffic and hw.link_gb_per_s and w.gpus <= GPUS_PER_NODE:
        comm = traffic / (hw.link_gb_per_s * 1e9)
        notes.append(
            f"FSDP2 traffic: at least {traffic / 1e9:.1f} GB per GPU per step over {hw.link_gb_per_s:g} GB/s "
            f"({comm:.3g} s), overlapped with compute ({compute:.3g} s): the step takes the longer"
        )
    elif traffic:
        why = (
            f"more than {GPUS_PER_NODE} GPUs (inter-node links)"
            if w.gpus > GPUS_PER_NODE
            else name_options("no $[gpu] link")
        )
        notes.append(f"FSDP2 traffic assumed hidden behind compute ({why}: no floor drawn)")
    notes.append("optimizer step not counted (elementwise, memory-bound)")
    step = max(compute, comm or 0.0)
    if hw.assumed:
        notes.append(
            name_options(f"GPU peak assumed: {hw.name} ({hw.peak_tflops:g} TFLOPS dense BF16); pass $[gpu]")
        )
    if e:
        notes += e.notes
    else:
        notes.append(
            f"no stats: every sequence assumed {w.seq_length} tokens long; no epoch without a row count"
        )
    if w.activation_checkpointing:
        notes.append(
            f"activation checkpointing recomputes each decoder layer's forward: x{flops.checkpointing_factor:.2f} "
            "step time"
        )
    if w.method == "qlora":
        notes.append(
            "QLoRA dequantizes each NF4 weight in forward and backward: expect slower (not modelled)"
        )
    if w.model.is_moe:
        notes.append("MoE: top-k experts per token; routing imbalance and expert communication not modelled")
    return TimeEstimate(
        workload=w,
        hardware=hw,
        mfu=eff,
        mfu_source=mfu_source,
        flops=flops,
        epoch=e,
        computed_tokens_per_sequence=computed,
        real_tokens_per_sequence=real,
        step_seconds=step,
        compute_seconds=compute,
        communication_seconds=comm,
        epochs=epochs,
        max_steps=max_steps,
        gpu_hour_price=gpu_hour_price,
        assumptions=tuple(notes),
    )


def with_alternatives(t: TimeEstimate, alternatives: list[dict[str, Any]]) -> TimeEstimate:
    return replace(t, alternatives=tuple(alternatives))


def check_run_options(
    *,
    mfu: float | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    gpu_hour_price: float | None = None,
) -> None:
    """Usage errors for values the time estimate cannot use."""
    if mfu is not None and not (isinstance(mfu, (int, float)) and 0 < mfu <= 1):
        raise UsageError(f"$[mfu] {mfu}: a fraction in (0, 1]", hint=f"e.g. $[mfu] {MFU_STOCK} (the default)")
    if epochs is not None and not (isinstance(epochs, (int, float)) and epochs > 0):
        raise UsageError(f"$[epochs] {epochs}: must be positive", hint="e.g. $[epochs] 3")
    if max_steps is not None and not (isinstance(max_steps, int) and max_steps >= 1):
        raise UsageError(f"$[max_steps] {max_steps}: at least one step", hint="e.g. $[max_steps] 500")
    if gpu_hour_price is not None and not (
        isinstance(gpu_hour_price, (int, float)) and math.isfinite(gpu_hour_price) and gpu_hour_price >= 0
    ):
        raise UsageError(
            f"$[gpu_hour_price] {gpu_hour_price}: a price, 0 or more", hint="e.g. $[gpu_hour_price] 2.50"
        )


# -- wording ----------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """'0.85 s', '12 min', '3.4 h', '2.1 days': one unit a reader takes in at once."""
    if seconds < 60:
        return (
            f"{seconds:.2g} s" if seconds < 1 else f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
        )
    if seconds < HOUR:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * HOUR:
        return f"{seconds / HOUR:.1f} h"
    return f"{seconds / 86400:.1f} days"


def change(ratio: float) -> str:
    """A time ratio as '+33%' / '-25%' / 'x2.5' (big changes read better as factors)."""
    if ratio >= 2:
        return f"x{ratio:.1f}"
    if ratio <= 0.5:
        return f"x{ratio:.2f}"
    pct = (ratio - 1) * 100
    return f"{pct:+.0f}%"


def summary_line(d: dict[str, Any]) -> str:
    """One line from ``TimeEstimate.to_dict()``: step, epoch and run time, GPU-hours (and cost)."""
    parts = [
        f"~{duration(d['step_seconds'])} per optimizer step on {d['gpus']} x {d['gpu']}"
        f" (MFU {d['mfu']:g}{', peak assumed' if d.get('peak_assumed') else ''}"
        f"{', communication-bound' if d.get('bound') == 'communication' else ''})"
    ]
    if e := d.get("epoch"):
        parts.append(f"epoch ~{duration(e['seconds'])} ({e['steps']:,} step{'s' if e['steps'] != 1 else ''})")
    if run := d.get("run"):
        what = (
            f"{run['steps']:,} steps" if run["limited_by"] == "max_steps" else f"{run['epochs']:g} epoch(s)"
        )
        cost = f", cost {run['cost']:,.2f}" if run.get("cost") is not None else ""
        parts.append(f"{what}: ~{duration(run['seconds'])}, {run['gpu_hours']:.3g} GPU-hours{cost}")
    return "; ".join(parts)
