"""GRPO training speed: our GRPO (`llm.grpo`, LoRA) against TRL's `GRPOTrainer` (+ peft), the whole step
(sampling G answers per prompt + scoring + the update), on the same model, prompts, G and answer length.

Same work on both sides:
- the model: our GPT (preset "small" = 6L/6H/384d; with --quick "tiny" = 2L/2H/64d) and Hugging Face GPT-2 of the
  same dimensions and weights (`llm.hf_gpt2.to_hf_gpt2`), float32, dropout 0, sdpa attention, random weights: they
  practically never end an answer early, so both sample `ANSWER_TOKENS` tokens per answer (the mean answer lengths
  are reported side by side to show it);
- the data: the same synthetic one-turn prompts (ChatML, the same template on both sides), `PROMPTS_PER_STEP`
  prompts a step, G = `GENERATIONS` answers each, temperature 1;
- the reward: the same regular expression (a letter "e" anywhere), our regex verifier and a TRL reward function;
- the objective: TRL's defaults on both: loss dapo, beta 0 (no reference pass), epsilon 0.2, one update per batch;
  LoRA r 16, alpha 32, dropout 0.05 on c_attn, c_proj and c_fc; fused AdamW, constant lr 1e-5, clipping at 1.0.

Ours prefills the step's prompts together (left-padded) and decodes all B x G answers together, each from a copy
of its prompt's KV cache, through the LoRA adapter merged into the weights; TRL's generation
(`transformers.generate` on the B x G left-padded rows) prefills every row. What is timed is each side's own training
loop, one optimizer step at a time, the two loops interleaved step by step (`bench.bench_sft.SteppedLoop`), medians.
samples/s = answers per step / step seconds. Peak memory: VmHWM of a fresh subprocess per loop (3 steps), as
bench_preference. --quick measures no peak memory.

Run: `python -m bench.bench_grpo [--quick] [--budget-s S]` or `python -m bench.run --only grpo`.
"""

from __future__ import annotations

import gc
import os
import random
import re
import tempfile
import time
from typing import Callable

import torch

from bench.bench_sft import (BETAS, EPS, GRAD_CLIP, LORA, LORA_TARGETS, QUICK_SKIPS_MEMORY, SEED, THREADS,
                             SteppedLoop, _WORDS, hf_tokenizer, write_base_model)
from bench.common import (TimeBudget, command_line, interleaved_runs, loop_figures, machine_info, median,
                          print_table, run_json_subprocess, stepped_loop_memory, time_budget, versus_peer_figures)

SHAPES = {"tiny": ("tiny", 32), "small": ("small", 64)}  # name -> (preset, answer tokens)
PROMPTS_PER_STEP = 4
GENERATIONS = 8
N_PROMPTS = 64
LR = 1e-5
PATTERN = "e"
TARGET = 2.0
SIDES = ("ours", "trl")


def make_prompts(n: int = N_PROMPTS, seed: int = 0) -> list[dict]:
    """One-turn prompts of 12-20 words (deterministic)."""
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 20)))
                         + "?"}]} for _ in range(n)]


# ----------------------------------------------------------------------------- our side

def ours_configs(answer_tokens: int):
    from llm.grpo_config import GRPOConfig
    from llm.train_config import TrainConfig

    config = GRPOConfig(method="lora", lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                        lora_targets="attn,mlp", val_fraction=0.0, num_generations=GENERATIONS,
                        max_completion_length=answer_tokens, verifier="regex", pattern=PATTERN)
    train_config = TrainConfig(max_steps=100_000, batch_size=PROMPTS_PER_STEP, block_size=128, lr=LR, min_lr=LR,
                               warmup=0, weight_decay=0.0, beta1=BETAS[0], beta2=BETAS[1], grad_clip=GRAD_CLIP,
                               eval_every=0, checkpoint_every=0, log_every=1, seed=SEED, device="cpu", compile=False,
                               dtype="float32")
    return config, train_config


def ours_loop(model_dir, prompts, answer_tokens: int, work_dir: str, lengths: list) -> Callable:
    def run(pause: Callable[[], bool]) -> None:
        from llm.grpo import grpo

        config, train_config = ours_configs(answer_tokens)
        grpo(str(model_dir), prompts, os.path.join(work_dir, "ours-grpo"), grpo_config=config,
             train_config=train_config, should_stop=pause, resume=False, log=lambda line: None,
             on_metrics=lambda record: lengths.append(record["completions/mean_length"]))

    return run


# ----------------------------------------------------------------------------- TRL's side

def trl_trainer(model_dir, prompts, answer_tokens: int, out_dir: str, lengths: list, callbacks: list | None = None):
    import datasets
    import transformers
    import trl
    from peft import LoraConfig
    from transformers import GPT2LMHeadModel, PrinterCallback, TrainerCallback

    from llm.checkpoint import load_weights
    from llm.hf_gpt2 import to_hf_gpt2

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.manual_seed(SEED)
    model = to_hf_gpt2(load_weights(model_dir), GPT2LMHeadModel, attn_implementation="sdpa")
    pattern = re.compile(PATTERN)

    def has_pattern(prompts, completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [1.0 if pattern.search(text) else 0.0 for text in texts]

    class Lengths(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    args = trl.GRPOConfig(
        output_dir=out_dir, max_steps=100_000, per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
        gradient_accumulation_steps=1, num_generations=GENERATIONS, max_completion_length=answer_tokens,
        temperature=1.0, loss_type="dapo", beta=0.0, epsilon=0.2, learning_rate=LR, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, optim="adamw_torch_fused", adam_beta1=BETAS[0], adam_beta2=BETAS[1],
        adam_epsilon=EPS, max_grad_norm=GRAD_CLIP, bf16=False, fp16=False, activation_checkpointing=False,
        use_cpu=True, disable_dropout=False, logging_steps=1, report_to="none", save_strategy="no",
        eval_strategy="no", dataloader_num_workers=0, seed=SEED, data_seed=SEED, disable_tqdm=True)
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules=list(LORA_TARGETS), fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    trainer = trl.GRPOTrainer(model=model.train(), reward_funcs=[has_pattern], args=args,
                              train_dataset=datasets.Dataset.from_list(prompts), processing_class=hf_tokenizer(),
                              peft_config=peft_config, callbacks=[Lengths(), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)
    return trainer


def trl_loop(model_dir, prompts, answer_tokens: int, work_dir: str, lengths: list) -> Callable:
    from transformers import TrainerCallback

    def run(pause: Callable[[], bool]) -> None:
        class Pause(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if pause():
                    control.should_training_stop = True
                return control

        trl_trainer(model_dir, prompts, answer_tokens, os.path.join(work_dir, "trl-grpo"), lengths,
                    callbacks=[Pause()]).train()

    return run


# ----------------------------------------------------------------------------- measurements

def _loop(side: str, model_dir, prompts, answer_tokens: int, work_dir: str, lengths: list) -> SteppedLoop:
    make = ours_loop if side == "ours" else trl_loop
    return SteppedLoop(f"{side}:grpo", make(model_dir, prompts, answer_tokens, work_dir, lengths))


def measure(shape: str, repeats: int, warmup: int, work_dir: str | None = None, log=print,
            budget: TimeBudget | None = None) -> dict:
    """Both loops built and timed step by step, interleaved, in as many of the `repeats` rounds as fit."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
            return measure(shape, repeats, warmup, tmp, log, budget)
    preset, answer_tokens = SHAPES[shape]
    prompts = make_prompts()
    model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
    result: dict = {"shape": shape, "preset": preset, "answer_tokens": answer_tokens, "prompts_per_step":
                    PROMPTS_PER_STEP, "generations": GENERATIONS, "first_step_s": {}, "mean_length": {}}
    loops, lengths = {}, {side: [] for side in SIDES}
    try:
        for side in SIDES:
            gc.collect()
            loop = _loop(side, model_dir, prompts, answer_tokens, work_dir, lengths[side])
            start = time.perf_counter()
            loop.start()
            result["first_step_s"][loop.name] = time.perf_counter() - start
            loops[loop.name] = loop
            log(f"  [{shape}] built {loop.name}: set-up + first step {result['first_step_s'][loop.name]:.1f}s")
        runs = interleaved_runs({name: loop.step for name, loop in loops.items()}, repeats=repeats, warmup=warmup,
                                budget=budget)
    finally:
        for loop in loops.values():
            loop.close()
    result["runs"] = runs
    result["median_s"] = {name: median(run["wall"]) for name, run in runs.items()}
    result["median_cpu_s"] = {name: median(run["cpu"]) for name, run in runs.items()}
    answers = PROMPTS_PER_STEP * GENERATIONS
    result["samples_per_s"] = {name: answers / seconds for name, seconds in result["median_s"].items()}
    result["mean_length"] = {f"{side}:grpo": median(values) if values else None for side, values in lengths.items()}
    return result


def memory_probe(side: str, shape: str, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of setting up one loop and running `steps` steps."""
    import importlib
    torch.set_num_threads(THREADS)
    for module in ("transformers", "datasets", "peft", "trl", "llm.grpo"):  # both pay every import
        importlib.import_module(module)
    preset, answer_tokens = SHAPES[shape]
    with tempfile.TemporaryDirectory(prefix="bench-grpo-mem-") as work_dir:
        model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
        return stepped_loop_memory(lambda: _loop(side, model_dir, make_prompts(), answer_tokens, work_dir, []), steps)


def memory(side: str, shape: str) -> dict:
    try:
        return run_json_subprocess("bench.bench_grpo", "memory_probe", {"side": side, "shape": shape})
    except Exception as exc:  # a figure we could not take is reported, not fatal
        return {"error": str(exc)[-500:]}


def run(quick: bool = False, log=print, budget_s: float | None = None) -> dict:
    budget = time_budget(quick, budget_s)
    torch.set_num_threads(THREADS)
    shape, repeats, warmup = ("tiny", 5, 1) if quick else ("small", 7, 1)
    figures: dict = {f"machine_{k}": v for k, v in machine_info().items()}
    figures["grpo_budget_s"] = budget.seconds
    figures["skipped"] = {"grpo_peak_rss_mb": QUICK_SKIPS_MEMORY} if quick else {}
    for side in SIDES if not quick else ():
        log(f"  [{shape}] peak memory of {side}:grpo (subprocess)")
        for key, value in memory(side, shape).items():
            figures[f"grpo_{key}[{side}:grpo]"] = value
    log(f"bench_grpo: {shape} shape, {PROMPTS_PER_STEP} prompts x G {GENERATIONS} x {SHAPES[shape][1]} answer tokens, "
        f"LoRA, ours vs TRL GRPOTrainer, up to {repeats} interleaved repeats after {warmup} warm-up steps")
    res = measure(shape, repeats, warmup, log=log, budget=budget)
    figures.update({"grpo_shape": shape, "grpo_answer_tokens": res["answer_tokens"],
                    "grpo_prompts_per_step": PROMPTS_PER_STEP, "grpo_generations": GENERATIONS,
                    **loop_figures("grpo", res, "samples_per_s"),
                    **versus_peer_figures("grpo", res, "samples_per_s", "grpo", TARGET)})
    for name, length in res["mean_length"].items():
        figures[f"grpo_mean_answer_tokens[{name}]"] = length
    rows = [(name, figures[f"grpo_step_s[{name}]"], figures[f"grpo_rounds[{name}]"],
             figures[f"grpo_samples_per_s[{name}]"], figures[f"grpo_step_cpu_s[{name}]"],
             figures[f"grpo_mean_answer_tokens[{name}]"], figures.get(f"grpo_peak_rss_mb[{name}]", "-"))
            for name in (f"{side}:grpo" for side in SIDES)]
    print_table(rows, headers=("loop", "step s", "rounds", "samples/s", "cpu s", "answer tokens", "peak RSS MB"))
    log(f"  grpo_vs_trl {figures['grpo_vs_trl']:.2f} (paired {figures['grpo_vs_trl_paired']:.2f}, CPU time "
        f"{figures['grpo_vs_trl_cpu']:.2f}; target >= {TARGET})")
    figures["grpo_raw"] = res
    return figures


if __name__ == "__main__":
    command_line(run, __doc__.splitlines()[0], "the tiny shape, fewer repeats (a few minutes)", budget=True)
