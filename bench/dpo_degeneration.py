"""The measurement behind DPO's degeneration bounds (llm/degeneration.py: DegenerationBounds) and RPO's default
weight (llm/dpo_config.py: RPO_ALPHA), on the tiny preset. Not a speed benchmark: bench/README.md, "DPO
degeneration", has the figures and what was taken from them.

    python -m bench.dpo_degeneration [--out runs.jsonl] [--quick] [--gpt2]

The policy is tests/llm/test_dpo_degeneration.py's: a tiny GPT taught by SFT to answer "<Verb> <thing> and <thing>."
with a polite or a pushy word, half and half; DPO prefers the polite one. Each run (all weights or LoRA, a
learning rate from the default up, RPO's weight) trains 200 steps and is evaluated every 20 with the watch on (it
never stops a run here); at each evaluation 40 more answers are sampled (fixed seeds) to measure what the watch
is meant to see: the share that is still coherent (the SFT grammar, exactly) and the share that is polite.
An evaluation is healthy when at least 80 % are coherent, broken under 70 % (the SFT model: 85 %); the output
says how many of each every candidate bound would flag. `--gpt2`: the same with tests/llm/test_dpo.py's policy, a tiny
GPT with GPT-2's 50,257-token vocabulary (its SFT takes minutes), on a smaller grid: is the KL budget, in nats per
token, the same on a vocabulary 125 times larger?
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import llm.dpo
from llm.degeneration import SampleWatch
from llm.dpo import REPORT_FILE, dpo
from llm.dpo_config import DPOConfig, dpo_train_config
from llm.generate import SamplingSettings, chat_prompt, generate_ids
from tests.support.polite import coherent, coherent_sft_model
from tests.support.polite import POLITE, PUSHY, polite_pairs

HELD_OUT = [pair["prompt"] for pair in polite_pairs(40, 99)]
# (all weights?, learning rates, RPO weights): defaults are 5e-6 (all weights) and 5e-5 (LoRA).
GRID = [(True, (5e-6, 3e-5, 1e-4, 3e-4, 1e-3), (0.0, 1.0)), (True, (1e-4, 3e-4, 1e-3), (0.1, 0.3)),
        (False, (5e-5, 5e-4, 2e-3, 5e-3), (0.0, 1.0)), (False, (5e-4, 2e-3), (0.3,))]
QUICK_GRID = [(True, (5e-6, 1e-3), (0.0, 1.0))]
# ... and (all weights?, rates, RPO weights, beta): tests/llm/test_dpo.py's learning test runs beta 0.5 at 2e-4.
GPT2_GRID = [(True, (5e-6, 3e-5, 1e-4, 3e-4), (0.0,)), (True, (2e-4,), (0.0,), 0.5),
             (False, (5e-5, 5e-4, 2e-3), (0.0,)), (True, (3e-4,), (1.0,)), (False, (2e-3,), (1.0,))]


def gpt2_vocabulary_sft_model(root: Path) -> Path:
    """tests/llm/test_dpo.py's policy: a tiny GPT with GPT-2's vocabulary, full SFT (600 steps) on both kinds of answer."""
    from llm.checkpoint import save_model
    from llm.model import GPT, config_from_preset
    from llm.tokenizer import get_tokenizer
    from tests.support.polite import train_mixed_sft

    torch.manual_seed(0)
    base = save_model(GPT(config_from_preset("tiny", get_tokenizer("gpt2").vocab_size, block_size=64)),
                      root / "base", "gpt2")
    return Path(train_mixed_sft(base, root / "sft"))


def polite(text: str) -> bool:
    words = set(text.lower().replace(".", " ").split())
    return bool(words & {w.lower() for w in POLITE}) and not words & {w.lower() for w in PUSHY}


class MeasuredWatch(SampleWatch):
    """The watch, plus the coherent and polite shares of 40 more sampled answers at each evaluation."""

    def measure(self, policy, reference):
        result = super().measure(policy, reference)
        texts = []
        for index, prompt in enumerate(HELD_OUT):
            ids, stops = chat_prompt(self.tokenizer, prompt)
            settings = SamplingSettings(max_new_tokens=24, temperature=1.0, seed=5000 + index)
            texts.append(self.tokenizer.decode(generate_ids(policy, self.tokenizer, ids, settings, stop_ids=stops)[0]))
        result["coherent"] = sum(map(coherent, texts)) / len(texts)
        result["polite"] = sum(map(polite, texts)) / len(texts)
        return result


def run_grid(grid, out: Path, steps: int, make_policy=coherent_sft_model) -> list[dict]:
    runs = []
    llm.dpo.SampleWatch = MeasuredWatch  # what dpo() builds its watch with, for this measurement only
    with tempfile.TemporaryDirectory() as root:
        sft_dir = make_policy(Path(root))
        for full, rates, alphas, *beta in grid:
            for lr in rates:
                for alpha in alphas:
                    config = DPOConfig(method="full" if full else "lora", rpo_alpha=alpha,
                                       beta=beta[0] if beta else 0.1,
                                       stop_on_degeneration=False)
                    run_dir = Path(root) / f"dpo-{len(runs)}"
                    started = time.perf_counter()
                    dpo(sft_dir, polite_pairs(300, 7), run_dir, dpo_config=config, log=lambda _: None,
                        train_config=dpo_train_config(config, max_steps=steps, batch_size=8, lr=lr, block_size=64,
                                                      eval_every=steps // 10, eval_batches=5, warmup=10,
                                                      checkpoint_every=0, device="cpu"))
                    report = json.loads((run_dir / REPORT_FILE).read_text())
                    run = {"full": full, "lr": lr, "rpo_alpha": alpha, "beta": config.beta,
                           "seconds": time.perf_counter() - started,
                           "evaluations": [{key: value for key, value in e.items() if key != "samples"}
                                           for e in report["evaluations"]]}
                    runs.append(run)
                    with open(out, "a") as file:
                        file.write(json.dumps(run) + "\n")
                    last = run["evaluations"][-1]
                    print(f"{'full' if full else 'LoRA'} lr {lr:g} beta {config.beta:g} rpo_alpha {alpha:g}: "
                          f"coherent {last['coherent']:.0%}"
                          f" polite {last['polite']:.0%} accuracy {last['accuracy']:.0%} KL/token "
                          f"{last['kl_per_token']:.3f} ({run['seconds']:.0f} s)", flush=True)
    return runs


def analyse(runs: list[dict]) -> None:
    points = [e for run in runs for e in run["evaluations"]]
    healthy = [e for e in points if e["coherent"] >= 0.8]
    broken = [e for e in points if e["coherent"] < 0.7]
    print(f"{len(points)} evaluations: {len(healthy)} healthy (>= 80 % coherent), {len(broken)} broken (< 70 %)")

    def drop(e):
        return e["start_chosen_logp_per_token"] - e["chosen_logp_per_token"]

    for name, value, bounds in (("KL per token", lambda e: e["kl_per_token"], (0.1, 0.15, 0.2, 0.3, 0.5)),
                                ("chosen log-p drop per token", drop, (0.2, 0.3, 0.5, 1.0))):
        if healthy and broken:
            print(f"{name}: healthy at most {max(map(value, healthy)):.3f}, broken at least "
                  f"{min(map(value, broken)):.3f}")
        for bound in bounds:
            print(f"  bound {bound:g}: flags {sum(value(e) > bound for e in healthy)} healthy, "
                  f"{sum(value(e) > bound for e in broken)} broken")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="dpo_degeneration.jsonl", help="one JSON line per run is appended here")
    parser.add_argument("--quick", action="store_true", help="4 runs of 60 steps: a smoke run of the script")
    parser.add_argument("--gpt2", action="store_true", help="the policy with GPT-2's vocabulary, a smaller grid")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.gpt2:
        analyse(run_grid(GPT2_GRID, Path(args.out), 200, gpt2_vocabulary_sft_model))
    else:
        analyse(run_grid(QUICK_GRID if args.quick else GRID, Path(args.out), 60 if args.quick else 200))


if __name__ == "__main__":
    main()
