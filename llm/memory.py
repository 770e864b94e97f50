"""Rough peak memory of a training run, before it starts: the one formula the estimate shown in the Train
forms and the check that refuses a job too big for the workers (`worker/kinds/fit.py`) both use.

    weights      4 bytes x every parameter (float32 master weights, trained or frozen)
    training     12 bytes x each trained parameter (its gradient + AdamW's two moments, float32)
    activations  tokens of one micro-batch x layers x width x ACTIVATION_VALUES_PER_LAYER values kept for
                 the backward pass (2 bytes each under bfloat16 autocast, else 4)
    logits       tokens of one micro-batch x vocabulary: 4 bytes each on the CPU (llm.model.cross_entropy
                 writes their gradient into their own memory), 8 on a GPU (bfloat16 values, float32 loss)
    overhead     RUNTIME_OVERHEAD_BYTES: the torch process itself, allocator slack, a CUDA context

Measured on the CPU (tiny preset, 3 pretraining steps, peak RSS of the whole process): batch 16 x block
128 estimated 1.5 GB, measured 1.3 GB; batch 32 x block 256 estimated 2.8 GB, measured 2.4 GB.

Attention is counted as PyTorch's fused scaled-dot-product attention keeps it (no block x block matrix).
It is a planning figure, not a promise (allocator slack, the CUDA context and torch.compile's buffers
are not counted). Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

# Values kept per token per layer for the backward pass (attention in/out, the MLP's 4x-wide hidden and
# its GELU, layer norms, residuals): a round count, checked against the measured peak memory of the
# small preset within ~30 % (bench_sft prints the measured figure).
ACTIVATION_VALUES_PER_LAYER = 34
# The process before its first batch: torch and the app imported (~0.4 GB measured), the tokenizer, the
# data's memory map, allocator slack; on a GPU, the CUDA context.
RUNTIME_OVERHEAD_BYTES = 1_000_000_000


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    training: int       # gradients + optimizer moments
    activations: int
    logits: int
    overhead: int = RUNTIME_OVERHEAD_BYTES

    @property
    def total(self) -> int:
        return self.weights + self.training + self.activations + self.logits + self.overhead

    @property
    def per_batch(self) -> int:
        """The part that grows with batch_size x block_size (what a smaller batch saves)."""
        return self.activations + self.logits


def gpt_parameter_count(n_layer: int, n_embd: int, vocab_size: int, block_size: int = 0) -> int:
    """Parameters of the GPT of llm/model.py: 12 n^2 per block, the tied token embedding and the position
    embedding (biases and norms are noise at this precision)."""
    return 12 * n_layer * n_embd * n_embd + vocab_size * n_embd + block_size * n_embd


def training_flops_per_token(matmul_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token of the GPT: 6N for the matmuls of its N parameters without the position
    embedding, plus the attention scores (PaLM appendix B)."""
    return 6 * matmul_params + 12 * n_layer * n_embd * seq_len


def lora_trainable_params(config: dict, rank: int, targets: str) -> int:
    """Adapter parameters of LoRA rank `rank` on the GPT's projections: r x (in + out) per adapted
    matrix. attn: c_attn (n -> 3n) and its c_proj (n -> n); mlp: c_fc (n -> 4n) and its c_proj (4n -> n)."""
    n = config["n_embd"]
    per_layer = {"attn": rank * ((n + 3 * n) + (n + n)), "mlp": rank * ((n + 4 * n) + (4 * n + n))}
    return config["n_layer"] * sum(per_layer[part] for part in targets.split(","))


def training_memory(*, total_params: int, trainable_params: int, n_layer: int, n_embd: int, vocab_size: int,
                    batch_size: int, length: int, device_type: str = "cpu", dtype: str | None = None,
                    activation_bytes: int | None = None, shards: int = 1,
                    gathered_params: int = 0) -> MemoryEstimate:
    """Peak memory of one training step on one device (see the module docstring); `length` is the tokens per
    sequence, `device_type` "cpu" or "cuda", `dtype` the job's autocast setting (None or "auto": the device's
    default; `activation_bytes` overrides what it implies).

    `shards`: the ranks a fully sharded (FSDP) run splits the weights, gradients and moments over (llm/sharding.py);
    each device keeps 1/shards of them plus `gathered_params` in full (`fsdp_gathered_params`: the units gathered
    while they run) and their gradients before the reduce-scatter."""
    tokens = batch_size * length
    if activation_bytes is None:
        activation_bytes = activation_bytes_for(device_type, dtype)
    shards = max(1, shards)
    gathered = gathered_params if shards > 1 else 0
    return MemoryEstimate(
        weights=4 * (-(-total_params // shards) + gathered),
        training=12 * -(-trainable_params // shards) + 4 * gathered,
        activations=activation_bytes * tokens * n_layer * n_embd * ACTIVATION_VALUES_PER_LAYER,
        logits=(8 if device_type == "cuda" else 4) * tokens * vocab_size,
    )


def fsdp_gathered_params(n_embd: int, vocab_size: int, block_size: int = 0) -> int:
    """Parameters an FSDP rank holds in full at the peak: the root unit (token and position embeddings; the head
    is tied to the token embedding) for the whole step, and one transformer block (12 n^2)."""
    return vocab_size * n_embd + block_size * n_embd + 12 * n_embd * n_embd


def fsdp_shards(params: dict) -> int:
    """The ranks a job's weights are split over: devices x nodes under parallelism fsdp, else 1 (each holds all)."""
    if params.get("parallelism") != "fsdp":
        return 1
    return max(1, int(params.get("devices") or 1)) * max(1, int(params.get("nodes") or 1))


def activation_bytes_for(device_type: str, dtype: str | None) -> int:
    """Bytes per kept activation: 2 under bfloat16 autocast (CUDA's default, see llm.device), else 4."""
    if dtype == "bfloat16" or (device_type == "cuda" and dtype in (None, "auto")):
        return 2
    return 4


def human_gb(num_bytes: float) -> str:
    """"412 GB", "1.5 GB", "0.2 GB": for messages that say how much a run needs."""
    gb = num_bytes / 1e9
    if gb >= 10:
        return f"{gb:,.0f} GB"
    return f"{gb:.1f} GB"
