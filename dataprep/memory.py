"""Per-GPU peak memory estimate for fine-tuning a decoder LLM with FSDP2 (NeMo AutoModel's layout).

The estimate is a sum of components (bytes), reported in GiB:

    weights            parameters resident on this GPU: P * bytes / dp (FSDP2 shards every parameter over dp).
                       sft: param dtype (bf16 2 B, fp32 4 B); lora: the frozen base in bf16;
                       qlora: the decoder Linears in NF4 (QLORA_BYTES ~ 0.516 B: 0.5 B + double-quantized
                       block constants),
                       embeddings and norms in bf16.
    gradients          sft only: one gradient per parameter in the param dtype, sharded over dp.
    optimizer_states   sft only: torch AdamW's exp_avg + exp_avg_sq in the param dtype, sharded over dp.
                       AutoModel loads bf16 and keeps no fp32 master copy, so bf16 + AdamW = 2+2+4 = 8 B/param;
                       --param-dtype fp32 gives 4+4+8 = 16 B/param.
    lora_adapters      LoRA A/B matrices kept in fp32 with their fp32 gradients and two AdamW states:
                       16 B per trainable parameter, sharded over dp like the layers that hold them.
    activations        saved for backward, per token per layer (bf16, flash attention, no dropout):
                       8h + 4*nq*d + 4*nkv*d + 6*i  (the usual 12h + 4*nkv*d + 8i when nq*d = h, with
                       the SwiGLU saving gate_up's output and the product: 3 tensors of width i, not 4);
                       MoE: i is the routed width (top_k * moe_i + shared) plus 4*top_k*h of dispatch copies.
                       With activation checkpointing: 2h per token per layer (each layer's input) plus one
                       layer's working set recomputed in backward (AC_WORKING_SET_FACTOR x one layer).
    logits             the loss buffer per (token x vocab) element: masked_ce LOGITS_BYTES["masked_ce"]
                       (bf16 logits + fp32 upcast + softmax + its gradient), chunked_ce only the bf16 logits and
                       their gradient; fused_linear_ce never builds logits, but keeps fp32 gradient
                       accumulators for the classifier weight (4*V*h) and the hidden states (4*h per token).
    fsdp_gathered      dp x cp > 1: the unsharded parameters in flight (the largest FSDP unit, the embedding/lm_head
                       for large vocabularies, plus the prefetched next layer) and the unsharded gradient of
                       the unit in backward before its reduce-scatter; x (1 - 1/dp), the part not already
                       counted in this GPU's shard.
    cuda_context       CUDA context + NCCL/cuBLAS workspaces, CUDA_CONTEXT_GIB.
    allocator_headroom caching-allocator fragmentation: ALLOCATOR_HEADROOM x (activations + logits), the
                       tensors that come and go every step.

Tensor (tp) and context (cp) parallelism: the model states shard over dp x cp x tp (FSDP2 over dp x cp, each
Linear split tp ways); activations and logits count the tokens of one cp-th of each sequence, and inside a layer
the heads and MLP intermediate divide by tp (the hidden-size tensors and the logits do not: no sequence or
loss parallelism assumed, the conservative case). Pipeline parallelism is not modelled.

Peak: during backward the gradients appear while activations are freed, so with no gradient accumulation
the two only partly coexist; the estimate adds both (gradients persist across micro-batches with gradient
accumulation, and the plan recommends accumulation). That is the conservative choice for a planner.

Global constants (fitted once against the published measurements in tests/test_calibration.py; no per-row
factors):
    LOGITS_BYTES["masked_ce"] = 12.3  AutoModel docs: FusedLinearCrossEntropy saved 25.76 GB at
                                      16,384 tokens x 128,256 vocab = 12.26 B per element.
    LOGITS_BYTES["chunked_ce"] = 4    bf16 logits kept for backward + their bf16 gradient; the fp32 upcast
                                      lives one chunk at a time (AutoModel ChunkedCrossEntropy docstring).
    AC_WORKING_SET_FACTOR = 1.5       one layer's activations plus the gradients of its largest
                                      intermediates while it runs backward.
    MLP_SAVED_PER_INTERMEDIATE = 3    AutoModel's Llama 1B rows (dp=8 with and without AC differ by the
                                      saved activations: ~71 KB per token-layer, which 8i = 64 KB alone nearly
                                      fills) fit a fused gate_up + SwiGLU (3 x i) rather than eager's 4 x i.
    CUDA_CONTEXT_GIB = 0.75           calibration note: 0.5-1.3 GB.
    ALLOCATOR_HEADROOM = 0.05         reserved vs allocated gap the calibration sources show (5-15%).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .modelconfig import ModelConfig

GIB = 1024**3
Method = Literal["sft", "lora", "qlora"]
Loss = Literal["masked_ce", "chunked_ce", "fused_linear_ce"]
ParamDtype = Literal["bf16", "fp32"]
METHODS: tuple[str, ...] = ("sft", "lora", "qlora")
LOSSES: tuple[str, ...] = ("masked_ce", "chunked_ce", "fused_linear_ce")
PARAM_DTYPES: tuple[str, ...] = ("bf16", "fp32")

DTYPE_BYTES = {"bf16": 2, "fp32": 4}
ACT_BYTES = 2  # activations are bf16 (autocast / bf16 weights)
LOGITS_BYTES: dict[str, float] = {"masked_ce": 12.3, "chunked_ce": 4.0, "fused_linear_ce": 0.0}
# NF4: a 4-bit code per weight, an 8-bit absmax per 64-weight block (double quantization), and an fp32
# constant per 256 of those blocks (bitsandbytes' defaults, bnb_4bit_use_double_quant: true)
QLORA_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + 2 fp32 AdamW states
AC_WORKING_SET_FACTOR = 1.5
MLP_SAVED_PER_INTERMEDIATE = 3  # bf16 tensors of width i saved by the SwiGLU MLP (see the module docstring)
FSDP_PREFETCH_LAYERS = 1  # FSDP2 prefetches the next layer's all-gather
CUDA_CONTEXT_GIB = 0.75
ALLOCATOR_HEADROOM = 0.05

COMPONENTS: tuple[str, ...] = (
    "weights",
    "gradients",
    "optimizer_states",
    "lora_adapters",
    "activations",
    "logits",
    "fsdp_gathered",
    "cuda_context",
    "allocator_headroom",
)


@dataclass(frozen=True)
class MemoryInputs:
    """What the estimate depends on; ``padded_len`` is the padded length of one micro-batch (or the pack size)."""

    model: ModelConfig
    method: Method = "sft"
    dp: int = 1
    local_batch_size: int = 1
    padded_len: int = 2048
    activation_checkpointing: bool = False
    loss: Loss = "masked_ce"
    param_dtype: ParamDtype = "bf16"
    lora_rank: int = 8
    lora_targets: str = "*_proj"
    tp: int = 1  # tensor parallel: each Linear split tp ways
    cp: int = 1  # context parallel: each sequence split cp ways

    @property
    def tokens(self) -> int:
        return self.local_batch_size * self.padded_len

    @property
    def tokens_here(self) -> float:
        """Tokens whose activations this GPU holds: context parallelism splits every sequence cp ways."""
        return self.tokens / max(1, self.cp)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes by component; ``total`` is the per-GPU peak estimate."""

    breakdown: dict[str, float]
    trainable_parameters: int
    tokens: int

    @property
    def total(self) -> float:
        return sum(self.breakdown.values())

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def breakdown_gib(self, ndigits: int = 3) -> dict[str, float]:
        return {k: round(v / GIB, ndigits) for k, v in self.breakdown.items()}

    def to_dict(self) -> dict:
        return {
            "per_gpu_gib": round(self.total_gib, 3),
            "breakdown": self.breakdown_gib(),
            "tokens_per_micro_batch": self.tokens,
        }


def activation_bytes_per_token_layer(m: ModelConfig, tp: int = 1) -> float:
    """Bytes one token saves for backward in one decoder layer (no checkpointing).

    Tensor parallelism splits the attention heads and the MLP intermediate tp ways; the hidden-size tensors
    (norm inputs, residuals) stay whole on every rank (no sequence parallelism: the conservative case)."""
    h, nq, nkv, d = m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim
    split = 2 * nq * d + 2 * nkv * d + MLP_SAVED_PER_INTERMEDIATE * m.active_mlp_intermediate
    elems = 4 * h + split / max(1, tp)
    if m.is_moe:
        elems += 2 * m.experts_per_token * h  # tokens copied to and back from their experts
    return ACT_BYTES * elems


def _largest_unit(m: ModelConfig, weight_bytes: float, method: str) -> tuple[int, float]:
    """(parameters, bytes per parameter) of the biggest FSDP unit: a decoder layer or the embedding.

    FSDP2 wraps each decoder layer; the root unit holds the embedding (and lm_head), which for a large
    vocabulary is the biggest all-gather of the step.
    """
    emb = m.vocab_size * m.hidden_size
    emb_bytes = 2 if method == "qlora" else weight_bytes
    if emb * emb_bytes >= m.layer_parameters * weight_bytes:
        return emb, emb_bytes
    return m.layer_parameters, weight_bytes


def trainable_parameters(inp: MemoryInputs) -> int:
    if inp.method == "sft":
        return inp.model.parameters
    return inp.model.lora_parameters(inp.lora_rank, inp.lora_targets)


def estimate(inp: MemoryInputs) -> MemoryEstimate:
    """The per-GPU peak estimate, by component."""
    m = inp.model
    # FSDP2 shards the parameters over dp x cp and tensor parallelism splits each Linear tp ways: the model
    # states divide by all three; the activations by cp (sequence) and, inside the layer, by tp.
    dp = max(1, inp.dp) * max(1, inp.cp) * max(1, inp.tp)
    P = m.parameters
    pbytes = DTYPE_BYTES[inp.param_dtype]
    trainable = trainable_parameters(inp)
    b: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)

    if inp.method == "sft":
        weight_bytes = pbytes
        b["weights"] = P * pbytes / dp
        b["gradients"] = P * pbytes / dp
        b["optimizer_states"] = 2 * P * pbytes / dp
    else:
        if inp.method == "qlora":
            linear = m.num_layers * sum(s.d_in * s.d_out * s.count for s in m.layer_linears())
            linear = min(linear, P)
            b["weights"] = (linear * QLORA_BYTES + (P - linear) * 2) / dp
            weight_bytes = QLORA_BYTES
        else:
            b["weights"] = P * pbytes / dp
            weight_bytes = pbytes
        b["lora_adapters"] = trainable * LORA_BYTES_PER_PARAM / dp

    tokens = inp.tokens_here
    per_layer = activation_bytes_per_token_layer(m, inp.tp)
    if inp.activation_checkpointing:
        b["activations"] = tokens * (
            m.num_layers * ACT_BYTES * m.hidden_size + AC_WORKING_SET_FACTOR * per_layer
        )
    else:
        b["activations"] = tokens * m.num_layers * per_layer
    # the final hidden states and the embedding output live through the step either way
    b["activations"] += tokens * 2 * ACT_BYTES * m.hidden_size
    b["logits"] = tokens * m.vocab_size * LOGITS_BYTES[inp.loss]
    if inp.loss == "fused_linear_ce":
        # no logits, but fp32 gradient accumulators for the classifier weight and the hidden states
        b["logits"] = 4 * m.vocab_size * m.hidden_size + 4 * tokens * m.hidden_size

    fsdp = max(1, inp.dp) * max(1, inp.cp)
    if fsdp > 1:
        # what an all-gather adds on top of this GPU's shard: (1 - 1/fsdp) of the unit (so more GPUs never cost
        # more), a tp-th of it under tensor parallelism; the embedding unit stays bf16 under QLoRA, decoder
        # layers are NF4.
        unit_params, unit_bytes = _largest_unit(m, weight_bytes, inp.method)
        gathered = unit_params * unit_bytes + FSDP_PREFETCH_LAYERS * m.layer_parameters * weight_bytes
        grad_unsharded = unit_params * pbytes if inp.method == "sft" else 0
        b["fsdp_gathered"] = (gathered + grad_unsharded) * (1 - 1 / fsdp) / max(1, inp.tp)

    b["cuda_context"] = CUDA_CONTEXT_GIB * GIB
    b["allocator_headroom"] = ALLOCATOR_HEADROOM * (b["activations"] + b["logits"])
    return MemoryEstimate(breakdown=b, trainable_parameters=trainable, tokens=inp.tokens)
