"""How fast a device trains a model of a given shape: a short probe of real training steps, and a model of
throughput fitted from probes, so an estimate says what a run will take instead of guessing a share of peak.

    probe(shape, device)        -> Probe: the median seconds of a training step (forward, backward, AdamW) and of
                                   an evaluation batch (forward only), timed on random tokens of that shape; a
                                   fine-tuning step as it runs (the head on the answers' share of positions, a
                                   reward model's scalar head, the sequences a step passes forward only)
    ThroughputModel.fit(probes) -> seconds per step from its FLOPs and logits, by least squares over the probes
                                   one device made (for a shape nobody probed yet)
    run_seconds(...)            -> a whole run: steps, evaluations (`eval_batches` forward passes each)

Why measure: a small model spends most of a step outside big matmuls (layer norms, the optimizer, Python), and
a large vocabulary head is one big efficient matmul, so one "share of peak" is 2-7x wrong from one shape to the
next (issue 18). A few steps of the real model cost seconds and are right for that shape on that device.

Imports torch only inside `probe` (the web process sizes runs from published probes without building models).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

from llm.memory import training_flops_per_token

PROBE_STEPS = 3   # timed steps after one warm-up step; the median is kept (a noisy machine spikes, rarely thrice)


@dataclass(frozen=True)
class ProbeShape:
    """What a training step's time depends on: the model's shape, the micro-batch, the dtype, and what is trained
    (every weight, or LoRA adapters of rank `lora_rank` on attn and mlp)."""

    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int               # padded, as the model has it
    batch_size: int
    block_size: int               # tokens per sequence of the run (not the model's longest context)
    dtype: str = "float32"        # the autocast dtype the run resolves to: float32 or bfloat16
    lora_rank: int = 0            # 0: every weight is trained
    # What a fine-tuning step computes beyond a pretraining one (worker/jobs/fine_tuning_estimate.py):
    head_positions: float = 1.0   # share of each sequence's positions the vocabulary head runs at (SFT, DPO and KTO
                                  # score the answers' tokens only: GPT.forward's target_logits_only)
    scalar_head: bool = False     # a reward model: a scalar head at each row's last position (llm.reward.RewardModel),
                                  # no vocabulary head
    forward_sequences: int = 0    # sequences a step also passes forward without gradients (a LoRA run's reference,
                                  # the adapter off; KTO's mismatched answers)

    @property
    def key(self) -> str:
        """A stable text key, for caches and presence records: "L2-H2-E64-V50304-B16-T128-float32-all", with
        "-head0.45", "-scalar" or "-fwd16" after it for a fine-tuning step."""
        trained = f"lora{self.lora_rank}" if self.lora_rank else "all"
        extra = "-scalar" if self.scalar_head else f"-head{self.head_positions:g}" if self.head_positions < 1 else ""
        extra += f"-fwd{self.forward_sequences}" if self.forward_sequences else ""
        return (f"L{self.n_layer}-H{self.n_head}-E{self.n_embd}-V{self.vocab_size}-B{self.batch_size}"
                f"-T{self.block_size}-{self.dtype}-{trained}{extra}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.block_size

    @property
    def scored_positions(self) -> float:
        """The share of positions the vocabulary head runs at (0 with a scalar head)."""
        return 0.0 if self.scalar_head else self.head_positions

    @property
    def logits_per_step(self) -> float:
        return (self.batch_size + self.forward_sequences) * self.block_size * self.scored_positions * self.vocab_size

    @property
    def matmul_params(self) -> float:
        """Parameters the matmuls use per token: 12 n^2 per block and the (tied) vocabulary head, at the share of
        positions it runs at."""
        return 12 * self.n_layer * self.n_embd ** 2 + self.vocab_size * self.n_embd * self.scored_positions

    @property
    def head_share(self) -> float:
        """The vocabulary head's share of a training step's FLOPs (the rest: the blocks and attention)."""
        head = 6 * self.vocab_size * self.n_embd * self.scored_positions
        return head / training_flops_per_token(self.matmul_params, self.n_layer, self.n_embd, self.block_size)

    @property
    def flops_per_step(self) -> float:
        """Training FLOPs of one micro-batch: 6N + attention (PaLM), 4N for LoRA (no weight gradients of the
        frozen matrices; the adapters' own FLOPs are a few percent), and a third of 6N + attention for each
        sequence passed forward without gradients."""
        per_token = training_flops_per_token(self.matmul_params, self.n_layer, self.n_embd, self.block_size)
        trained = per_token - (2 * self.matmul_params if self.lora_rank else 0)
        return (trained * self.batch_size + per_token / 3 * self.forward_sequences) * self.block_size


@dataclass(frozen=True)
class Probe:
    shape: ProbeShape
    step_seconds: float           # median seconds of one training step of one micro-batch
    eval_batch_seconds: float     # median seconds of one evaluation batch (forward, no gradients)
    device_name: str              # "cpu (2 threads)", "NVIDIA H100 80GB HBM3"
    sample_token_seconds: float = 0.0  # seconds to sample one token of one answer (KV cache), as the degeneration
                                       # watch samples; 0: not measured (a reward model's shape, an older probe)

    def to_dict(self) -> dict:
        return {"shape": asdict(self.shape), "step_seconds": self.step_seconds,
                "eval_batch_seconds": self.eval_batch_seconds, "device_name": self.device_name,
                "sample_token_seconds": self.sample_token_seconds}

    @classmethod
    def from_dict(cls, data: dict) -> "Probe":
        return cls(shape=ProbeShape(**data["shape"]), step_seconds=float(data["step_seconds"]),
                   eval_batch_seconds=float(data["eval_batch_seconds"]), device_name=str(data["device_name"]),
                   sample_token_seconds=float(data.get("sample_token_seconds", 0.0)))


def device_name(device) -> str:
    """What a probe was measured on: the GPU's name, or the CPU with the torch threads a run gets."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def probe(shape: ProbeShape, device="cpu", steps: int = PROBE_STEPS) -> Probe:
    """Time real training steps of `shape` on `device`: the GPT of llm/model.py on random tokens, the loop's own
    AdamW (llm.train.make_optimizer), gradient clipping and autocast; one warm-up step (kernel choice, allocator,
    thread pool), then the median of `steps`. Its RNG is its own, so a run seeded just before is not moved."""
    import torch

    from llm.device import autocast_context
    from llm.model import GPT, GPTConfig
    from llm.train import make_optimizer
    from llm.train_config import TrainConfig

    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=shape.vocab_size, block_size=shape.block_size, n_layer=shape.n_layer,
                           n_head=shape.n_head, n_embd=shape.n_embd)
        model = gpt = GPT(config)
        if shape.scalar_head:
            from llm.reward import RewardModel

            model = RewardModel(model)
        model = model.to(device)
        if shape.lora_rank:
            from llm.lora import apply_lora
            from llm.sft_config import SFTConfig

            model = apply_lora(model, SFTConfig(lora_r=shape.lora_rank),
                               modules_to_save=["score"] if shape.scalar_head else None)
        params = [p for p in model.parameters() if p.requires_grad]
        loop = TrainConfig(device=device.type)  # the loop's defaults: its optimizer and its gradient clipping
        optimizer = make_optimizer(params, loop, device)
        rows = shape.batch_size + shape.forward_sequences
        tokens = torch.randint(0, shape.vocab_size, (rows, shape.block_size + 1), generator=generator)
        inputs, targets = tokens[:, :-1].to(device), tokens[:, 1:].clone().to(device)
        if shape.head_positions < 1:  # the head scores the last share of each row's positions (an answer's place)
            unscored = round(shape.block_size * (1 - shape.head_positions))
            targets[:, :unscored] = -100
        last = torch.full((rows,), shape.block_size - 1, device=device)

        def synchronize():
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def forward(start: int, stop: int) -> torch.Tensor:
            if shape.scalar_head:
                return model(inputs[start:stop], last[start:stop]).sum()
            return model(inputs[start:stop], targets[start:stop], target_logits_only=shape.head_positions < 1)[1]

        def train_step():
            with autocast_context(device, shape.dtype):
                loss = forward(0, shape.batch_size)
                if shape.forward_sequences:
                    with torch.no_grad():
                        forward(shape.batch_size, rows)
            loss.backward()
            # The loop clips every step (grad_clip is on by default): a pass over every gradient, which on a reward
            # model's step (no vocabulary head) is about a quarter of it.
            if loop.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, loop.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def eval_batch():
            with torch.no_grad(), autocast_context(device, shape.dtype):
                forward(0, shape.batch_size)
                if shape.forward_sequences:
                    forward(shape.batch_size, rows)

        timings = {}
        for name, work in (("step", train_step), ("eval", eval_batch)):
            seconds = []
            for _ in range(steps + 1):
                synchronize()
                started = time.perf_counter()
                work()
                synchronize()
                seconds.append(time.perf_counter() - started)
            timings[name] = statistics.median(seconds[1:])
        sample_token_seconds = 0.0 if shape.scalar_head else sampling_seconds(gpt, shape, synchronize)
    return Probe(shape=shape, step_seconds=timings["step"], eval_batch_seconds=timings["eval"],
                 device_name=device_name(device), sample_token_seconds=sample_token_seconds)


SAMPLED_TOKENS = 16  # tokens of the answer a probe samples (after a warm-up answer of a few)


def sampling_seconds(gpt, shape: ProbeShape, synchronize) -> float:
    """Seconds per token of one answer sampled with the KV cache (llm.generate), as the degeneration watch samples
    its fixed prompts one at a time: a token's forward is small, so its time is mostly per-call overhead, which a
    training step's probe does not show."""
    from llm.generate import SamplingSettings, generate_tokens

    gpt.eval()
    prompt = [0] * min(16, shape.block_size // 2)
    tokens = min(SAMPLED_TOKENS, shape.block_size - len(prompt))
    for count in (2, tokens):  # the first answer warms up (the cache's allocation, kernel choice)
        synchronize()
        started = time.perf_counter()
        for _ in generate_tokens(gpt, prompt, SamplingSettings(max_new_tokens=count, temperature=1.0, seed=0)):
            pass
        synchronize()
    return (time.perf_counter() - started) / tokens


@dataclass(frozen=True)
class ThroughputModel:
    """Seconds of a training step = overhead + FLOPs x seconds_per_flop + logits x seconds_per_logit, fitted from
    one device's probes. The overhead is what a step costs whatever its size (Python, kernel launches); the FLOPs
    what its matmuls cost; the logits (tokens x vocabulary) what the softmax and cross-entropy cost beyond the
    head's matmul, which on a CPU is memory traffic, not FLOPs (a tiny model with GPT-2's vocabulary spends
    most of its step there). An evaluation batch takes `eval_share` of a step."""

    overhead_seconds: float
    seconds_per_flop: float
    seconds_per_logit: float
    eval_share: float
    probes: int                   # how many probes it was fitted from

    @classmethod
    def fit(cls, probes: list[Probe]) -> "ThroughputModel | None":
        """Least squares of step seconds on [1, FLOPs per step, logits per step], every coefficient kept
        non-negative by dropping terms (the logits, then the overhead) until none is below zero; None without
        probes."""
        import numpy as np

        if not probes:
            return None
        seconds = np.array([probe.step_seconds for probe in probes])
        columns = {"overhead": [1.0] * len(probes), "flops": [p.shape.flops_per_step for p in probes],
                   "logits": [p.shape.logits_per_step for p in probes]}
        eval_share = statistics.median(probe.eval_batch_seconds / probe.step_seconds for probe in probes)
        for terms in (("overhead", "flops", "logits"), ("overhead", "flops"), ("flops",)):
            if len(probes) < len(terms):
                continue
            matrix = np.array([columns[term] for term in terms]).T
            scale = matrix.max(axis=0)  # FLOPs are ~1e9, the overhead 1: scaled, the solve is well conditioned
            solved = np.linalg.lstsq(matrix / scale, seconds, rcond=None)[0] / scale
            if (solved >= 0).all() and solved[terms.index("flops")] > 0:
                fitted = dict(zip(terms, solved))
                return cls(overhead_seconds=float(fitted.get("overhead", 0.0)),
                           seconds_per_flop=float(fitted["flops"]),
                           seconds_per_logit=float(fitted.get("logits", 0.0)),
                           eval_share=eval_share, probes=len(probes))
        return None

    def step_seconds(self, shape: ProbeShape) -> float:
        return (self.overhead_seconds + shape.flops_per_step * self.seconds_per_flop
                + shape.logits_per_step * self.seconds_per_logit)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluation_count(max_steps: int, eval_every: int) -> int:
    """Evaluations the training loop runs: every `eval_every` steps and always after the last one."""
    periodic = max_steps // eval_every if eval_every else 0
    return periodic + (0 if eval_every and max_steps % eval_every == 0 else 1)


def run_seconds(step_seconds: float, eval_batch_seconds: float, *, max_steps: int, grad_accum: int,
                eval_every: int, eval_batches: int) -> float:
    """A run's training time: max_steps x grad_accum micro-batch steps, and its evaluations. Not counted: the
    job's start (loading torch, building the model), tokenizing the data on first use, checkpoints."""
    evaluations = evaluation_count(max_steps, eval_every)
    return max_steps * grad_accum * step_seconds + evaluations * eval_batches * eval_batch_seconds


FITTING_VOCAB_RANGE = (1024, 65_536)  # a trained BPE below 1k merges barely compresses; above 64k is GPT-4 sized


def fitting_vocab_size(n_layer: int, n_embd: int, block_size: int, head_share: float = 0.5) -> int:
    """The vocabulary that fits a model: the largest power of two whose head is at most `head_share` of a
    training step's FLOPs (within FITTING_VOCAB_RANGE). A bigger vocabulary packs more bytes into a token,
    but past that point the model spends most of its compute choosing among tokens instead of modelling
    text: tiny (2 x 64) gets 2,048, small (6 x 384) 16,384, gpt2-124m 65,536 (GPT-2's own 50,257 is 30 %)."""
    body = training_flops_per_token(12 * n_layer * n_embd ** 2, n_layer, n_embd, block_size)
    vocab = FITTING_VOCAB_RANGE[0]
    while vocab * 2 <= FITTING_VOCAB_RANGE[1] and 6 * (vocab * 2) * n_embd <= head_share / (1 - head_share) * body:
        vocab *= 2
    return vocab
