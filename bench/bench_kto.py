"""KTO training speed: our KTO (`llm.kto`, LoRA) against TRL's `KTOTrainer` (+ peft), on the same examples, batch
and model; examples/s and peak memory, the ratio in one run (target ours >= 1.5x).

Same work on both sides, as bench/bench_preference.py sets DPO up (its helpers are used here):
- the model: our GPT (preset "small" = 6L/6H/384d, 8 examples x 256 tokens a batch; with --quick "tiny" = 2L/2H/64d,
  8 x 128) and Hugging Face GPT-2 of the same dimensions and weights (`llm.hf_gpt2.to_hf_gpt2`), float32, dropout 0,
  sdpa attention;
- the data: the synthetic pairs of bench_preference (`make_pairs`) unpaired, chosen good and rejected bad (TRL's
  `unpair_preference_dataset`): 256 answers, half good; every prompt + answer renders to more than T + 1 tokens, so
  each sequence is cut to T on both sides (TRL: `max_length`, keeping the start) and a batch is B x T with no padding;
- the objective: TRL's default KTO (loss "kto", beta 0.1, weights 1 / 1), with its KL estimate: every example's
  prompt with another example's answer, scored by the policy without gradients; the reference = the same network
  with the adapter switched off (both sides), so each step runs the policy on 2B rows (B with gradients) and the
  reference on 2B rows;
- the optimizer: fused AdamW, constant lr 5e-5, betas (0.9, 0.95), eps 1e-8, no weight decay, clipping at 1.0; LoRA
  r 16, alpha 32, dropout 0.05 on c_attn, c_proj and c_fc (TRL's `disable_dropout` off, as in bench_preference).

What is timed is each side's own training loop (ours `llm.kto.kto` through `llm.train.train`; TRL's
`Trainer.train()`), one optimizer step at a time, the two loops interleaved step by step
(`bench.bench_sft.SteppedLoop`, `bench.common.interleaved_runs`), medians. examples/s = B / step.
Peak memory: VmHWM of a fresh subprocess per loop (`bench.common.stepped_loop_memory`), as bench_preference.

Run: `python -m bench.bench_kto [--quick] [--budget-s S]`, or `python -m bench.run --only kto`.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from typing import Callable

import torch

from bench.bench_preference import SHAPES, make_pairs
from bench.bench_sft import (BETAS, EPS, GRAD_CLIP, LORA, LORA_TARGETS, QUICK_SKIPS_MEMORY, SEED, THREADS,
                             SteppedLoop, hf_tokenizer, write_base_model)
from bench.common import (TimeBudget, command_line, interleaved_runs, loop_figures, machine_info, median,
                          print_table, run_json_subprocess, stepped_loop_memory, time_budget, versus_peer_figures)

N_PAIRS = 128          # 256 answers once unpaired
SIDES = ("ours", "trl")
LR = 5e-5
BETA = 0.1
TARGET = 1.5


def examples(seq: int) -> list[dict]:
    from llm.kto_batches import unpair

    return unpair(make_pairs(N_PAIRS, min_tokens=seq + 2))


# ----------------------------------------------------------------------------- our side

def ours_configs(batch: int, seq: int):
    from llm.kto_config import KTOConfig
    from llm.train_config import TrainConfig

    config = KTOConfig(method="lora", beta=BETA, loss_type="kto", lora_r=LORA["r"], lora_alpha=LORA["alpha"],
                       lora_dropout=LORA["dropout"], lora_targets="attn,mlp", val_fraction=0.0)
    train_config = TrainConfig(max_steps=100_000, batch_size=batch, block_size=seq, grad_accum=1, lr=LR, min_lr=LR,
                               warmup=0, weight_decay=0.0, beta1=BETAS[0], beta2=BETAS[1], grad_clip=GRAD_CLIP,
                               eval_every=0, checkpoint_every=0, log_every=10, seed=SEED, device="cpu",
                               compile=False, dtype="float32")
    return config, train_config


def ours_loop(model_dir, items, batch: int, seq: int, work_dir: str) -> Callable:
    def run(pause: Callable[[], bool]) -> None:
        from llm.kto import kto

        config, train_config = ours_configs(batch, seq)
        kto(str(model_dir), items, os.path.join(work_dir, "ours-kto"), kto_config=config, train_config=train_config,
            should_stop=pause, resume=False, log=lambda line: None)

    return run


# ----------------------------------------------------------------------------- TRL's side

def trl_trainer(model_dir, items, batch: int, seq: int, out_dir: str, callbacks: list | None = None):
    import datasets
    import transformers
    import trl
    from peft import LoraConfig
    from transformers import GPT2LMHeadModel, PrinterCallback

    from llm.checkpoint import load_weights
    from llm.hf_gpt2 import to_hf_gpt2

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    torch.manual_seed(SEED)
    model = to_hf_gpt2(load_weights(model_dir), GPT2LMHeadModel, attn_implementation="sdpa")
    args = trl.KTOConfig(
        output_dir=out_dir, max_steps=100_000, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch_fused",
        adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, max_grad_norm=GRAD_CLIP, bf16=False, fp16=False,
        activation_checkpointing=False, use_cpu=True, disable_dropout=False, logging_steps=10, report_to="none",
        save_strategy="no", eval_strategy="no", dataloader_num_workers=0, seed=SEED, data_seed=SEED,
        disable_tqdm=True, beta=BETA, loss_type="kto", max_length=seq, precompute_ref_log_probs=False)
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                             target_modules=list(LORA_TARGETS), fan_in_fan_out=True, bias="none",
                             task_type="CAUSAL_LM")
    dataset = datasets.Dataset.from_list([{key: item[key] for key in ("prompt", "completion", "label")}
                                          for item in items])
    trainer = trl.KTOTrainer(model=model.train(), args=args, train_dataset=dataset, processing_class=hf_tokenizer(),
                             peft_config=peft_config, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


def trl_loop(model_dir, items, batch: int, seq: int, work_dir: str) -> Callable:
    from transformers import TrainerCallback

    def run(pause: Callable[[], bool]) -> None:
        class Pause(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if pause():
                    control.should_training_stop = True
                return control

        trl_trainer(model_dir, items, batch, seq, os.path.join(work_dir, "trl-kto"), callbacks=[Pause()]).train()

    return run


# ----------------------------------------------------------------------------- measurements

def _loop(side: str, model_dir, items, batch: int, seq: int, work_dir: str) -> SteppedLoop:
    make = ours_loop if side == "ours" else trl_loop
    return SteppedLoop(f"{side}:kto", make(model_dir, items, batch, seq, work_dir))


def trainable_parameters(model_dir, items, batch: int, seq: int, work_dir: str) -> dict:
    """Both sides' trainable parameter counts (the same adapters must be trained) and the first batch's shape."""
    from llm.checkpoint import load_weights
    from llm.lora import apply_lora

    config, _ = ours_configs(batch, seq)
    ours = apply_lora(load_weights(model_dir), config)
    trainer = trl_trainer(model_dir, items, batch, seq, os.path.join(work_dir, "count"))
    theirs = next(iter(trainer.get_train_dataloader()))
    return {"ours": sum(p.numel() for p in ours.parameters() if p.requires_grad),
            "trl": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "trl_batch": list(theirs["input_ids"].shape), "trl_kl_batch": list(theirs["KL_input_ids"].shape)}


def measure(shape: str, repeats: int, warmup: int, work_dir: str | None = None, log=print,
            budget: TimeBudget | None = None) -> dict:
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="bench-kto-") as tmp:
            return measure(shape, repeats, warmup, tmp, log, budget)
    preset, batch, seq = SHAPES[shape]
    items = examples(seq)
    model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
    check = trainable_parameters(model_dir, items, batch, seq, work_dir)
    log(f"  [{shape}] kto: trainable parameters ours {check['ours']:,}, TRL {check['trl']:,}; TRL's batch "
        f"{check['trl_batch']} + KL {check['trl_kl_batch']}")
    if check["ours"] != check["trl"]:
        raise AssertionError(f"the two sides train different parameters ({check})")
    result: dict = {"shape": shape, "preset": preset, "batch": batch, "seq": seq, "examples": len(items),
                    "check": check, "first_step_s": {}}
    loops = {}
    try:
        for side in SIDES:
            gc.collect()
            loop = _loop(side, model_dir, items, batch, seq, work_dir)
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
    result["examples_per_s"] = {name: batch / seconds for name, seconds in result["median_s"].items()}
    return result


def memory_probe(side: str, shape: str, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of setting up one loop and running `steps` steps."""
    import importlib
    torch.set_num_threads(THREADS)
    for module in ("transformers", "datasets", "peft", "trl", "llm.kto"):  # both pay every import
        importlib.import_module(module)
    preset, batch, seq = SHAPES[shape]
    with tempfile.TemporaryDirectory(prefix="bench-kto-mem-") as work_dir:
        items = examples(seq)
        model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
        return stepped_loop_memory(lambda: _loop(side, model_dir, items, batch, seq, work_dir), steps)


def memory(side: str, shape: str) -> dict:
    try:
        return run_json_subprocess("bench.bench_kto", "memory_probe", {"side": side, "shape": shape})
    except Exception as exc:  # a figure we could not take is reported, not fatal
        return {"error": str(exc)[-500:]}


def run(quick: bool = False, log=print, budget_s: float | None = None) -> dict:
    budget = time_budget(quick, budget_s)
    torch.set_num_threads(THREADS)
    shape, repeats, warmup = ("tiny", 5, 1) if quick else ("small", 9, 2)
    figures: dict = {f"machine_{k}": v for k, v in machine_info().items()}
    figures["kto_budget_s"] = budget.seconds
    figures["skipped"] = {"kto_peak_rss_mb": QUICK_SKIPS_MEMORY} if quick else {}
    for side in SIDES if not quick else ():
        log(f"  [{shape}] peak memory of {side}:kto (subprocess)")
        for key, value in memory(side, shape).items():
            figures[f"kto_{key}[{side}:kto]"] = value
    log(f"bench_kto: {shape} shape {SHAPES[shape]}, KTO (LoRA), ours vs TRL, up to {repeats} interleaved repeats "
        f"after {warmup} warm-up steps" + (f", within a budget of {budget.seconds:g} s" if budget.seconds else ""))
    res = measure(shape, repeats, warmup, log=log, budget=budget)
    figures.update({"kto_shape": res["shape"], "kto_batch_examples": res["batch"], "kto_seq": res["seq"],
                    "kto_trainable_ours": res["check"]["ours"], "kto_trainable_trl": res["check"]["trl"],
                    **loop_figures("kto", res, "examples_per_s"),
                    **versus_peer_figures("kto", res, "examples_per_s", "kto", TARGET)})
    rows = [(name, figures[f"kto_step_s[{name}]"], figures[f"kto_rounds[{name}]"],
             figures[f"kto_examples_per_s[{name}]"], figures[f"kto_step_cpu_s[{name}]"],
             figures.get(f"kto_peak_rss_mb[{name}]", "-"), figures.get(f"kto_train_rss_mb[{name}]", "-"))
            for name in (f"{side}:kto" for side in SIDES)]
    print_table(rows, headers=("loop", "step s", "rounds", "examples/s", "cpu s", "peak RSS MB", "RSS growth MB"))
    log(f"  kto_vs_trl {figures['kto_vs_trl']:.2f} (paired {figures['kto_vs_trl_paired']:.2f}, CPU time "
        f"{figures['kto_vs_trl_cpu']:.2f}; target >= {TARGET})")
    figures["kto_raw"] = res
    return figures


if __name__ == "__main__":
    command_line(run, __doc__.splitlines()[0], "the tiny shape, fewer repeats (a few minutes)", budget=True)
