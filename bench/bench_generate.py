"""Generation speed: our KV-cache decoder (`llm.generate`) against Hugging Face `generate`, same weights.

Two workloads, each a fixed number of new tokens (end-of-text disabled on both sides):
  (a) greedy, batch 1: one prompt, one completion (chat);
  (b) 4 sampled completions of one prompt (candidates for labeling / the arena). Ours prefills the
      prompt once and shares that cache; HF's `num_return_sequences=4` prefills 4 copies.
tokens/s counts new tokens over the whole call, prefill included: what a user waits for.
Timings are interleaved (ours, HF, HF, ours, ...) and compared by medians (see bench.common); the rounds fill
what is left of the time budget (`--budget-s`, 60 s with --quick), their number is reported (`generate_rounds`).

Run: `python -m bench.bench_generate [--quick] [--budget-s S]`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.common import interleaved, median, print_table, ratio, run_json_subprocess, time_budget
from llm.checkpoint import load_model, save_model
from llm.generate import SamplingSettings, generate_tokens
from llm.hf_gpt2 import HF_GPT2_VOCAB_SIZE, export_hf_gpt2
from llm.model import GPT, GPTConfig

THREADS = 2        # the machines are shared: pin the thread count so runs compare
NUM_SAMPLES = 4
TOP_K = 50         # HF's default top_k, used on both sides for the sampling workload


@dataclass
class BenchShape:
    n_layer: int
    n_head: int
    n_embd: int
    prompt_tokens: int
    new_tokens: int
    repeats: int


FULL = BenchShape(n_layer=6, n_head=6, n_embd=384, prompt_tokens=200, new_tokens=64, repeats=5)
QUICK = BenchShape(n_layer=2, n_head=4, n_embd=128, prompt_tokens=64, new_tokens=16, repeats=3)


def _ours(model, prompt: list[int], settings: SamplingSettings, num_samples: int) -> list[list[int]]:
    steps = [ids for ids in generate_tokens(model, prompt, settings, num_samples, vocab_size=HF_GPT2_VOCAB_SIZE)]
    return torch.stack(steps, dim=1).tolist()


def _hf(hf_model, prompt: torch.Tensor, new_tokens: int, num_samples: int, do_sample: bool) -> list[list[int]]:
    with torch.inference_mode():
        out = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), use_cache=True,
                                do_sample=do_sample, top_k=TOP_K if do_sample else None,
                                num_return_sequences=num_samples, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    return out[:, prompt.shape[1]:].tolist()


def ours_peak_rss(model_dir: str, prompt: list[int], new_tokens: int, threads: int = THREADS) -> dict:
    """Peak RSS (MB) of a fresh process that loads our model and runs both workloads: our memory alone."""
    from bench.common import peak_rss_bytes

    torch.set_num_threads(threads)
    model, _ = load_model(model_dir)
    _ours(model, prompt, SamplingSettings(max_new_tokens=new_tokens, temperature=0.0,
                                          stop_at_end_of_text=False), 1)
    _ours(model, prompt, SamplingSettings(max_new_tokens=new_tokens, top_k=TOP_K, seed=0,
                                          stop_at_end_of_text=False), NUM_SAMPLES)
    return {"peak_rss_mb": peak_rss_bytes() / 2**20}


def run(quick: bool = False, budget_s: float | None = None) -> dict:
    from transformers import GPT2LMHeadModel

    budget = time_budget(quick, budget_s)
    torch.set_num_threads(THREADS)
    shape = QUICK if quick else FULL
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50304, block_size=512, n_layer=shape.n_layer, n_head=shape.n_head,
                       n_embd=shape.n_embd)
    with tempfile.TemporaryDirectory() as tmp:
        ours_dir, hf_dir = Path(tmp) / "ours", Path(tmp) / "hf"
        save_model(GPT(config), ours_dir, "gpt2")
        export_hf_gpt2(ours_dir, hf_dir)
        model, _ = load_model(ours_dir)
        hf_model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
        prompt = torch.randint(0, HF_GPT2_VOCAB_SIZE, (shape.prompt_tokens,), generator=torch.Generator().manual_seed(1))
        prompt_ids, prompt_batch = prompt.tolist(), prompt.unsqueeze(0)
        n = shape.new_tokens
        greedy = SamplingSettings(max_new_tokens=n, temperature=0.0, stop_at_end_of_text=False)
        sampled = SamplingSettings(max_new_tokens=n, top_k=TOP_K, seed=0, stop_at_end_of_text=False)

        # Same weights, same greedy path: the outputs must agree, or the timing compares different work.
        greedy_match = _ours(model, prompt_ids, greedy, 1) == _hf(hf_model, prompt_batch, n, 1, False)
        times = interleaved({
            "ours": lambda: _ours(model, prompt_ids, greedy, 1),
            "hf": lambda: _hf(hf_model, prompt_batch, n, 1, False),
            "ours_samples": lambda: _ours(model, prompt_ids, sampled, NUM_SAMPLES),
            "hf_samples": lambda: _hf(hf_model, prompt_batch, n, NUM_SAMPLES, True),
        }, repeats=shape.repeats, budget=budget)
        memory = run_json_subprocess("bench.bench_generate", "ours_peak_rss",
                                     {"model_dir": str(ours_dir), "prompt": prompt_ids, "new_tokens": n})

    tokens_per_s = {name: (n * (NUM_SAMPLES if name.endswith("samples") else 1)) / median(t)
                    for name, t in times.items()}
    figures = {
        "generate_tokens_per_s": tokens_per_s["ours"],
        "hf_generate_tokens_per_s": tokens_per_s["hf"],
        "generate_vs_hf": ratio(tokens_per_s["ours"], tokens_per_s["hf"]),
        "generate_samples_tokens_per_s": tokens_per_s["ours_samples"],
        "hf_generate_samples_tokens_per_s": tokens_per_s["hf_samples"],
        "generate_samples_vs_hf": ratio(tokens_per_s["ours_samples"], tokens_per_s["hf_samples"]),
        "generate_peak_rss_mb": memory["peak_rss_mb"],
        "generate_greedy_matches_hf": greedy_match,
        "generate_rounds": len(times["ours"]),
        "generate_budget_s": budget.seconds,
        "shape": f"{shape.n_layer}L {shape.n_embd}d, prompt {shape.prompt_tokens}, {n} new, {THREADS} threads",
    }
    print_table([
        ("greedy, batch 1", tokens_per_s["ours"], tokens_per_s["hf"], figures["generate_vs_hf"], 1.1,
         len(times["ours"])),
        (f"{NUM_SAMPLES} samples, top_k={TOP_K}", tokens_per_s["ours_samples"], tokens_per_s["hf_samples"],
         figures["generate_samples_vs_hf"], 1.5, len(times["ours_samples"])),
    ], headers=("workload", "ours tok/s", "HF tok/s", "ours / HF", "target", "rounds"))
    print(f"peak RSS (ours alone) {memory['peak_rss_mb']:.0f} MB; greedy output == HF: {greedy_match}; {figures['shape']}")
    return figures


def main(argv: list[str] | None = None) -> dict:
    from bench.common import command_line

    return command_line(run, __doc__.splitlines()[0], "a small model and short run", argv, budget=True)


if __name__ == "__main__":
    main()
