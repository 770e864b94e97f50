"""A decoder-only GPT in one file (GPT-2 architecture, nanoGPT style), with a KV cache for generation.

The layout is GPT-2's (learned positions, pre-LayerNorm, GELU MLP, biases, tied embeddings) so
Hugging Face GPT-2 checkpoints import and export one-to-one (see `hf_gpt2.py`). Attention uses
`scaled_dot_product_attention`, which picks a fused kernel on both CPU and GPU.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from llm.memory import training_flops_per_token


@dataclass
class GPTConfig:
    vocab_size: int = 50304   # embedding rows; >= tokenizer.vocab_size, rounded up to 64 for speed
    block_size: int = 1024    # longest context the model can see
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True         # GPT-2 has biases in Linear and LayerNorm
    tie_weights: bool = True  # lm_head shares the token embedding matrix

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Model shapes, from "runs on a laptop CPU in seconds" to GPT-2 small. vocab_size is set from the tokenizer.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=128),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}


def padded_vocab_size(tokenizer_vocab_size: int, multiple: int = 64) -> int:
    """Round the vocabulary up: matmuls with a dimension divisible by 64 run faster."""
    return ((tokenizer_vocab_size + multiple - 1) // multiple) * multiple


def config_from_preset(preset: str, tokenizer_vocab_size: int, **overrides) -> GPTConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return GPTConfig(vocab_size=padded_vocab_size(tokenizer_vocab_size), **values)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of (N, V) logits against (N,) targets, skipping targets == ignore_index.

    The same value and gradient as `F.cross_entropy(logits.float(), targets)`, computed in float32, but
    cheaper for a large vocabulary on the CPU: only one float per row (its log-sum-exp) is kept for the
    backward pass, and the backward pass writes the gradient into the logits' own memory, a cache-sized
    chunk of rows at a time. `F.cross_entropy` allocates a (N, V) log-softmax and a (N, V) gradient (206 MB
    each for 1024 tokens of a 50k vocabulary, page-faulted in afresh every step) and walks them several times.
    So: read `logits` before calling backward; afterwards they hold their gradient. (Another autograd node
    that saved the same logits fails loudly with "modified by an inplace operation", never silently.)
    Under `torch.compile` the plain PyTorch expression is used: the compiler fuses it itself.
    """
    if torch.compiler.is_compiling() or logits.device.type != "cpu":
        return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)
    return _ChunkedCrossEntropy.apply(logits, targets, ignore_index)


# Rows per chunk: 1 MB of float32 logits, so each chunk's few passes (exp, scatter, a bf16 round trip) after
# the first run in the L2 cache and the logits cross the memory bus once per direction.
_CE_CHUNK_BYTES = 1 << 20


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        N, V = logits.shape
        rows = max(1, _CE_CHUNK_BYTES // (4 * V))
        valid = targets != ignore_index
        safe = targets.masked_fill(~valid, 0).unsqueeze(1)
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)
        for i in range(0, N, rows):
            lse[i:i + rows] = torch.logsumexp(logits[i:i + rows].float(), dim=1)
        target_logit = logits.gather(1, safe).squeeze(1).float()
        count = valid.sum()
        loss = torch.where(valid, lse - target_logit, 0.0).sum() / count  # 0/0 = nan, as F.cross_entropy
        ctx.save_for_backward(logits, lse, safe, valid, count)
        ctx.rows = rows
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        logits, lse, safe, valid, count = ctx.saved_tensors
        rows = ctx.rows
        # d loss / d logits = w * (softmax - one_hot(target)), w = grad / count on valid rows, 0 on ignored
        # ones; w * softmax = exp(logit - (lse - log w)), so the scaling folds into the exponent.
        weight = valid.float() * (grad_loss.float().abs() / count.clamp(min=1))
        shift = (lse - weight.log()).unsqueeze(1)  # +inf on ignored rows: exp(-inf) = 0
        weight = weight.unsqueeze(1)
        negative = bool(grad_loss < 0)
        grad = logits.detach()  # the same memory: the logits are not needed after this
        for i in range(0, logits.shape[0], rows):
            chunk = slice(i, i + rows)
            # float32 logits are updated in place; bf16 ones go through a float32 copy of the chunk.
            probs = grad[chunk] if grad.dtype == torch.float32 else grad[chunk].float()
            probs.sub_(shift[chunk]).exp_().scatter_add_(1, safe[chunk], -weight[chunk])
            if negative:
                probs.neg_()
            if grad.dtype != torch.float32:
                grad[chunk].copy_(probs)
        return grad, None, None


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[i, targets[i]] for (N, V) logits and (N,) targets (all valid): (N,) float32.

    The per-token sibling of `cross_entropy` (DPO sums these per sequence), in the same style: computed a
    cache-sized chunk of rows at a time, only each row's log-sum-exp kept for the backward pass, which writes
    the gradient into the logits' own memory. A plain `gather - logsumexp` keeps a (N, V) exp for its backward
    and builds a softmax, a one-hot and their sum there: four (N, V) float32 tensors (2.7 GB a DPO step at
    8 pairs x 256 tokens) where this needs the logits alone. So: read `logits` before calling backward.
    Off the CPU and under `torch.compile`, the plain expression (one kernel per op beats many chunks there).
    """
    if torch.compiler.is_compiling() or logits.device.type != "cpu":
        logits = logits.float()
        return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=1)
    return _ChunkedTargetLogProbs.apply(logits, targets)


class _ChunkedTargetLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        N, V = logits.shape
        rows = max(1, _CE_CHUNK_BYTES // (4 * V))
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)
        for i in range(0, N, rows):
            lse[i:i + rows] = torch.logsumexp(logits[i:i + rows].float(), dim=1)
        targets = targets.unsqueeze(1)
        ctx.save_for_backward(logits, lse, targets)
        ctx.rows = rows
        return logits.gather(1, targets).squeeze(1).float() - lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, lse, targets = ctx.saved_tensors
        rows = ctx.rows
        # d out_i / d logits_i = one_hot(target_i) - softmax_i, times the incoming grad_out_i (any sign).
        grad_out, lse = grad_out.float().unsqueeze(1), lse.unsqueeze(1)
        grad = logits.detach()  # the same memory: the logits are not needed after this
        for i in range(0, logits.shape[0], rows):
            chunk = slice(i, i + rows)
            probs = grad[chunk] if grad.dtype == torch.float32 else grad[chunk].float()
            probs.sub_(lse[chunk]).exp_().scatter_add_(1, targets[chunk], torch.full_like(targets[chunk], -1.0,
                                                                                          dtype=probs.dtype))
            probs.mul_(grad_out[chunk].neg())
            if grad.dtype != torch.float32:
                grad[chunk].copy_(probs)
        return grad, None


# Decoding multiplies 1-4 rows by every weight matrix. For so few rows on the CPU, MKL's routine for
# x @ W^T (what F.linear calls) streams W from memory at ~10 GB/s, while the same dot products spelled
# W @ x^T stream it at ~30 GB/s (measured on the 50304 x 384 head: F.linear 7.9 ms for 1 row and 18.7 ms
# for 2, W @ x^T 2.3 ms for 2). A single row is padded to two because MKL's one-column routine (gemv) is
# the slow one again. Past ~8 rows (a short prompt's prefill) F.linear wins again. See bench/README.md
# (bench_generate) for the end-to-end effect.
_FEW_ROWS = 8
# ...but not for one row of a narrow input (measured: widths 64 and 256 lose, 384 and 768 win): there
# F.linear's one-row routine is the faster one (the tiny preset's 50304 x 64 head: 0.3 ms, vs 0.8 ms padded
# to two rows; its greedy decoding 1185 vs 628 tokens/s).
_MIN_PADDED_WIDTH = 384


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, computed as (W @ x^T)^T for 2-8 rows of float32 on the CPU (1 row if wide).

    Same float32 dot products, summed in a different order; the layout of everything else is unchanged.
    """
    rows = x.numel() // x.shape[-1] if x.numel() else 0
    if (not 0 < rows <= _FEW_ROWS or (rows == 1 and x.shape[-1] < _MIN_PADDED_WIDTH)
            or x.device.type != "cpu" or x.dtype != torch.float32
            or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])
    if rows == 1:
        flat = flat.expand(2, -1).contiguous()
    out = torch.mm(weight, flat.t()) if bias is None else torch.addmm(bias.unsqueeze(1), weight, flat.t())
    return out[:, :rows].t().reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters and state dict) whose forward is `linear` above: fast decoding on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class KVCache:
    """Preallocated keys/values for every layer: (layers, batch, heads, max_len, head_dim).

    Writing into a fixed buffer avoids the re-allocation that concatenating caches costs each step.
    `expand(n)` turns a batch-b cache (b prefilled prompts) into n rows, each prompt's row copied n / b times
    in a row, for sampling n / b completions of each prompt.

    Prompts of different lengths share a cache left-padded: `padding` (B,) counts each row's padding slots.
    The model then gives each row its own positions (a token's position is its slot minus the row's padding)
    and no query attends to a padding slot (a padding query attends to itself alone, so it stays finite).
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled so far
        self.padding: torch.Tensor | None = None  # (B,) left-padding slots per row; None = no row is padded
        self._mask: tuple[int, int, torch.Tensor] | None = None  # (length, T, mask) of the current forward

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v for `layer` and return all keys/values up to and including them."""
        T = k.shape[2]
        end = self.length + T
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def pad_left(self, padding: Sequence[int]) -> None:
        """Declare each row's left padding before the prefill (all zero: nothing is padded, nothing changes)."""
        if len(padding) != self.keys.shape[1]:
            raise ValueError(f"{len(padding)} paddings for a cache of {self.keys.shape[1]} rows")
        self.padding = torch.tensor(padding, dtype=torch.long, device=self.keys.device) if any(padding) else None
        self._mask = None

    def positions(self, T: int) -> torch.Tensor:
        """The positions of the next T tokens: (T,), or (B, T) when rows are padded."""
        positions = torch.arange(self.length, self.length + T, device=self.keys.device)
        if self.padding is None:
            return positions
        return (positions.unsqueeze(0) - self.padding.unsqueeze(1)).clamp(min=0)

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """(B, 1, T, length + T) keys each of the next T queries may see when rows are padded, else None.
        Made once per forward (every layer asks at the same length)."""
        if self.padding is None:
            return None
        if self._mask is not None and self._mask[:2] == (self.length, T):
            return self._mask[2]
        device = self.keys.device
        queries = torch.arange(self.length, self.length + T, device=device).view(1, T, 1)
        keys = torch.arange(self.length + T, device=device).view(1, 1, -1)
        real = keys >= self.padding.view(-1, 1, 1)
        mask = ((keys <= queries) & real) | (keys == queries)
        mask = mask.unsqueeze(1)
        self._mask = (self.length, T, mask)
        return mask

    def expand(self, batch_size: int) -> None:
        rows = self.keys.shape[1]
        if batch_size % rows:
            raise ValueError(f"cannot expand a cache of {rows} rows to {batch_size}")
        if rows == 1:
            self.keys = self.keys.expand(-1, batch_size, -1, -1, -1).contiguous()
            self.values = self.values.expand(-1, batch_size, -1, -1, -1).contiguous()
        else:
            self.keys = self.keys.repeat_interleave(batch_size // rows, dim=1)
            self.values = self.values.repeat_interleave(batch_size // rows, dim=1)
        if self.padding is not None:
            self.padding = self.padding.repeat_interleave(batch_size // rows)
        self._mask = None


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None, layer: int,
                last: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if last is not None:  # one query per row, at `last`: it sees the keys up to and including its own
            q = q[torch.arange(B, device=x.device), :, last].unsqueeze(2)
            mask = (torch.arange(T, device=x.device) <= last.unsqueeze(1)).view(B, 1, 1, T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=self.dropout if self.training else 0.0)
            return self.c_proj(y.transpose(1, 2).reshape(B, 1, C))
        past, padded = 0, None
        if kv_cache is not None:
            past, padded = kv_cache.length, kv_cache.attention_mask(T)
            k, v = kv_cache.update(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if padded is not None:  # rows of prompts of different lengths, left-padded (see KVCache)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=padded, dropout_p=dropout)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        elif T == 1:  # one new token attends to everything before it: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # a chunk after a cached prefix: query i sees keys up to past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's GELU


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None, layer: int,
                last: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with `last` (B,) positions, only those rows' outputs: (B, 1, C)."""
        attended = self.attn(self.ln_1(x), kv_cache, layer, last)
        if last is not None:
            x = x[torch.arange(x.size(0), device=x.device), last].unsqueeze(1)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections into the residual stream by 1/sqrt(2 * n_layer).
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None,
                      last: torch.Tensor | None = None) -> torch.Tensor:
        """The final hidden states, after ln_f: (B, T, n_embd). The language-model head reads them, and so
        does any other head put on top of the network (a reward model's scalar head).

        With a `kv_cache`, `idx` holds only the new tokens; the cache supplies the past and is advanced.
        With `last` (B,) positions (no cache): only each row's state at its position, (B, n_embd). The final
        block then runs its attention output, MLP and ln_f on those B rows instead of all B x T (its keys
        and values still come from every position); what it returns, and its gradients, are the same.
        """
        if last is not None and kv_cache is not None:
            raise ValueError("hidden_states: `last` reads one position per row of a full pass, not a cached one")
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        positions = kv_cache.positions(T) if kv_cache is not None else torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for layer, block in enumerate(self.blocks):
            x = block(x, kv_cache, layer, last if layer == len(self.blocks) - 1 else None)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.ln_f(x) if last is None else self.ln_f(x.squeeze(1))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, ignore_index: int = -100, last_logits_only: bool = False,
                target_logits_only: bool = False):
        """Logits for every position; with `targets`, also the mean cross-entropy over targets != ignore_index.

        With a `kv_cache`, `idx` holds only the new tokens; the cache supplies the past and is advanced.
        `last_logits_only` (no targets): logits for the last position only, shape (B, 1, vocab). Generation
        needs nothing else, and skipping the (T, vocab) head matmul makes a long prompt's prefill ~2x cheaper.
        `target_logits_only` (with targets): the head runs only at positions whose target is not ignored, and
        their logits come back as (N, vocab), positions in row-major order. Same loss and gradients; SFT learns
        from the answers alone, and the head is most of a small model's FLOPs (measured with 40 % of positions
        answered, B=8, T=256, one CPU thread: a LoRA step 1149 -> 406 ms on the tiny preset, 4142 -> 2540 ms on
        small). Choosing the rows reads the mask on the host: one sync per call on a GPU.
        With `targets` on the CPU, backward turns the returned logits into their gradient (see `cross_entropy`):
        read them before calling backward.
        """
        x = self.hidden_states(idx, kv_cache)
        if targets is None:
            return self.lm_head(x[:, -1:] if last_logits_only else x), None
        targets = targets.reshape(-1)
        if target_logits_only:
            rows = (targets != ignore_index).nonzero().squeeze(1)
            logits = self.lm_head(x.reshape(-1, x.size(-1)).index_select(0, rows))
            return logits, cross_entropy(logits, targets.index_select(0, rows), ignore_index)
        logits = self.lm_head(x)
        loss = cross_entropy(logits.view(-1, logits.size(-1)), targets, ignore_index)
        return logits, loss

    # ------------------------------------------------------------------ accounting

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; by default without position embeddings (they cost no matmul FLOPs)."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.wpe.weight.numel() if non_embedding else total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N for the matmuls plus the attention scores (PaLM appendix B)."""
        cfg = self.config
        return training_flops_per_token(self.num_params(), cfg.n_layer, cfg.n_embd, seq_len or cfg.block_size)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        param = self.wte.weight
        return KVCache(self.config, batch_size, max_len or self.config.block_size, param.device, param.dtype)
