"""Preference-learning training speed: our DPO (`llm.dpo`, LoRA) and reward-model training (`llm.reward`, LoRA)
against TRL's `DPOTrainer` and `RewardTrainer` (+ peft), on the same pairs, batch and model.

Same work on both sides:
- the model: our GPT (preset "small" = 6L/6H/384d, 8 pairs x 256 tokens a batch; with --quick "tiny" =
  2L/2H/64d, 8 pairs x 128) and Hugging Face GPT-2 of the same dimensions and weights (`llm.hf_gpt2.to_hf_gpt2`,
  every one of our 50304 vocabulary rows), float32, dropout 0, sdpa attention; for reward models HF's
  `GPT2ForSequenceClassification` (a bias-free score head, as ours);
- the data: synthetic chat pairs (`make_pairs`, deterministic): a short prompt, a chosen and a rejected answer
  each rendering (ChatML, llm/chat.py) to more than T + 1 tokens, so every sequence is cut to the same length and
  a batch is 2B x T on both sides with no padding.
  DPO: TRL tokenizes the conversations itself with the same template (`bench.bench_sft.hf_tokenizer`) and keeps
  T tokens (`max_length`): the same T input ids as ours, the same answer tokens scored among them (checked pair
  by pair: `data_check`); ours also scores the token after the T-th (our targets are the inputs shifted by one;
  TRL would need T + 1 positions, more than the tiny preset's 128 position embeddings hold), one more
  log-prob of ~110 per row, no measurable cost.
  Reward: TRL's RewardTrainer drops sequences longer than `max_length` instead of cutting them, so it gets our
  T input ids of each side pre-tokenized (`chosen_ids` / `rejected_ids`, its documented processed form); both read
  the score at position T - 1;
- the objective: DPO sigmoid, beta 0.1, the reference = the same network with the adapter switched off (TRL's
  default with a peft adapter, ours always for LoRA); Bradley-Terry for reward models;
- the optimizer: fused AdamW, constant lr (DPO 5e-5, reward 1e-4), betas (0.9, 0.95), eps 1e-8, no weight decay,
  clipping at 1.0; LoRA r 16, alpha 32, dropout 0.05 on c_attn, c_proj and c_fc (the reward head trained in full
  on both sides: ours `modules_to_save=["score"]`, peft's SEQ_CLS task does the same for TRL); TRL's
  `disable_dropout` (default on, it would zero the LoRA dropout too) is off so both sides do the same work.

What is timed is each side's own training loop (ours `llm.dpo.dpo` / `llm.reward.reward` through
`llm.train.train`; TRL's `Trainer.train()`), one optimizer step at a time, the four loops interleaved step by
step (`bench.bench_sft.SteppedLoop`, `bench.common.interleaved_runs`), medians. pairs/s = B / step.

Peak memory: VmHWM of a fresh subprocess per loop that imports torch, transformers, datasets, peft, TRL and
llm.dpo / llm.reward, then sets up the run and trains 3 steps; `*_train_rss_mb` is the growth over the process
right before the run was set up.

Time budget (`--budget-s`, 60 s with --quick): the memory probes, checks and set-up run first, the timed rounds
fill what is left (at least one); `preference_rounds[...]` says how many each median is of. --quick measures no
peak memory, as bench_sft. Everything is float32 here, so what the CPU does natively in bf16 changes nothing.

Run: `python -m bench.bench_preference [--quick] [--budget-s S]`.
"""

from __future__ import annotations

import gc
import os
import random
import tempfile
import time
from typing import Callable

import torch

from bench.bench_sft import (BETAS, EPS, GRAD_CLIP, LORA, LORA_TARGETS, QUICK_SKIPS_MEMORY, SEED, THREADS,
                             SteppedLoop, _WORDS, hf_tokenizer, write_base_model)
from bench.common import (TimeBudget, command_line, interleaved_runs, loop_figures, machine_info, median,
                          print_table, run_json_subprocess, stepped_loop_memory, time_budget, versus_peer_figures)

SHAPES = {  # name -> (preset, pairs per batch, sequence length)
    "small": ("small", 8, 256),
    "tiny": ("tiny", 8, 128),
}
N_PAIRS = 128
KINDS = ("dpo", "reward")
SIDES = ("ours", "trl")
LR = {"dpo": 5e-5, "reward": 1e-4}
BETA = 0.1
TARGETS = {"dpo": 1.5, "reward": 1.3}
PAD_ID = 50256  # <|endoftext|>: what llm.dpo / llm.reward pad with, and hf_tokenizer's pad token


# ----------------------------------------------------------------------------- synthetic pairs

def _text(rng: random.Random, words: int) -> str:
    sentence = " ".join(rng.choice(_WORDS) for _ in range(words))
    return sentence[0].upper() + sentence[1:] + "."


def make_pairs(n: int = N_PAIRS, min_tokens: int = 258, seed: int = 0) -> list[dict]:
    """`n` preference pairs in the normal form (llm.chat_data), deterministic in `seed`: a short prompt (a system
    message in a third of them, a user question) and two different answers, each prompt + answer rendering to at
    least `min_tokens` tokens."""
    from llm.chat import render_conversation
    from llm.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = [{"role": "system", "content": "Answer briefly."}] if rng.random() < 1 / 3 else []
        prompt.append({"role": "user", "content": _text(rng, rng.randint(3, 10))[:-1] + "?"})
        answers = []
        for _side in range(2):
            answer = _text(rng, 12)
            while len(render_conversation(tokenizer, prompt + [{"role": "assistant", "content": answer}])[0]) \
                    < min_tokens:
                answer += " " + _text(rng, rng.randint(4, 14))
            answers.append([{"role": "assistant", "content": answer}])
        pairs.append({"prompt": prompt, "chosen": answers[0], "rejected": answers[1]})
    return pairs


# ----------------------------------------------------------------------------- our batch as TRL's

def trl_dpo_inputs(batch: dict) -> dict:
    """Our preference batch (llm.preference_batches.pad_pairs) as TRL 1.x's DPO collator lays it out:
    input_ids (2B, T + 1) = each row's full sequence, attention_mask, and completion_mask = 1 on each token our
    targets score (our target t is token t + 1), so both sides sum the log-probs of the same tokens."""
    from llm.chat_batches import IGNORE_INDEX

    inputs, targets = batch["inputs"], batch["targets"]
    rows, length = inputs.shape
    input_ids = torch.full((rows, length + 1), PAD_ID, dtype=torch.long)
    input_ids[:, :length] = inputs
    scored = targets != IGNORE_INDEX
    input_ids[:, 1:][scored] = targets[scored]
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[:, 1:] = scored.long()
    last_scored = (scored.long() * torch.arange(1, length + 1)).max(dim=1).values
    real = torch.arange(length + 1).unsqueeze(0) <= torch.maximum(batch["last"], last_scored).unsqueeze(1)
    input_ids[~real] = PAD_ID
    return {"input_ids": input_ids, "attention_mask": real.long(), "completion_mask": completion_mask}


def data_check(pairs: list[dict], trainer, seq: int) -> dict:
    """Does TRL's DPO see and score the same tokens as ours? Pair by pair, TRL's collated prepared example (T
    tokens) against our tokenized pair translated by `trl_dpo_inputs`, cut to the same T tokens."""
    from llm.preference_batches import pad_pairs, tokenize_pairs
    from llm.tokenizer import get_tokenizer

    ours = tokenize_pairs(get_tokenizer("gpt2"), pairs, max_length=seq)
    identical = 0
    for example, row in zip(ours.examples, trainer.train_dataset):
        theirs = trainer.data_collator([row])
        mine = trl_dpo_inputs(pad_pairs([example], PAD_ID))
        identical += all(torch.equal(theirs[key], mine[key][:, :seq]) for key in mine)
    return {"pairs": len(pairs), "ours_examples": len(ours.examples), "trl_examples": len(trainer.train_dataset),
            "identical": identical, "ours_truncated": ours.truncated}


# ----------------------------------------------------------------------------- our side

def ours_configs(kind: str, batch: int, seq: int):
    """(DPOConfig or RewardConfig, TrainConfig) of our run: the same hyperparameters as `trl_args`."""
    from llm.dpo_config import DPOConfig
    from llm.reward_config import RewardConfig
    from llm.train_config import TrainConfig

    lora = dict(lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], lora_targets="attn,mlp",
                val_fraction=0.0)
    # Plain DPO as TRL's default runs it: no RPO term, no degeneration watch (it samples at evaluations only).
    config = (DPOConfig(beta=BETA, loss_type="sigmoid", rpo_alpha=0.0, stop_on_degeneration=False, **lora)
              if kind == "dpo" else RewardConfig(**lora))
    train_config = TrainConfig(max_steps=100_000, batch_size=batch, block_size=seq, grad_accum=1, lr=LR[kind],
                               min_lr=LR[kind], warmup=0, weight_decay=0.0, beta1=BETAS[0], beta2=BETAS[1],
                               grad_clip=GRAD_CLIP, eval_every=0, checkpoint_every=0, log_every=10, seed=SEED,
                               device="cpu", compile=False, dtype="float32")
    return config, train_config


def ours_loop(kind: str, model_dir, pairs, batch: int, seq: int, work_dir: str) -> Callable:
    """A function(pause) that runs `llm.dpo.dpo` or `llm.reward.reward`, pausing after every optimizer step."""
    def run(pause: Callable[[], bool]) -> None:
        config, train_config = ours_configs(kind, batch, seq)
        out_dir = os.path.join(work_dir, f"ours-{kind}")
        if kind == "dpo":
            from llm.dpo import dpo
            dpo(str(model_dir), pairs, out_dir, dpo_config=config, train_config=train_config, should_stop=pause,
                resume=False, log=lambda line: None)
        else:
            from llm.reward import reward
            reward(str(model_dir), pairs, out_dir, reward_config=config, train_config=train_config,
                   should_stop=pause, resume=False, log=lambda line: None)

    return run


# ----------------------------------------------------------------------------- TRL's side

def trl_args(kind: str, batch: int, seq: int, out_dir: str):
    """TRL's DPOConfig / RewardConfig: our hyperparameters, float32, no checkpointing of activations."""
    import trl

    common = dict(
        output_dir=out_dir, max_steps=100_000, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        learning_rate=LR[kind], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        optim="adamw_torch_fused", adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
        max_grad_norm=GRAD_CLIP, bf16=False, fp16=False, activation_checkpointing=False, use_cpu=True,
        disable_dropout=False,  # TRL's default zeroes every dropout, peft's LoRA dropout included: keep ours (0.05)
        logging_steps=10, report_to="none", save_strategy="no", eval_strategy="no", dataloader_num_workers=0,
        seed=SEED, data_seed=SEED, disable_tqdm=True)
    if kind == "dpo":  # T tokens: the same input ids as ours (see the module docstring)
        return trl.DPOConfig(beta=BETA, loss_type="sigmoid", max_length=seq, truncation_mode="keep_start",
                             precompute_ref_log_probs=False, **common)
    return trl.RewardConfig(max_length=seq, center_rewards_coefficient=None, **common)


def trl_lora_config(kind: str):
    from peft import LoraConfig
    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=list(LORA_TARGETS), fan_in_fan_out=True,  # GPT-2's Conv1D layout
                      bias="none", task_type="CAUSAL_LM" if kind == "dpo" else "SEQ_CLS")


def trl_dataset(kind: str, pairs: list[dict], seq: int):
    """DPO: the conversations (TRL renders and tokenizes them). Reward: our tokenized inputs of each side."""
    import datasets

    from llm.preference_batches import tokenize_pairs
    from llm.tokenizer import get_tokenizer

    datasets.disable_progress_bars()
    if kind == "dpo":
        return datasets.Dataset.from_list([{key: pair[key] for key in ("prompt", "chosen", "rejected")}
                                           for pair in pairs])
    examples = tokenize_pairs(get_tokenizer("gpt2"), pairs, max_length=seq).examples
    return datasets.Dataset.from_list([{"chosen_ids": e.chosen[0].tolist(), "rejected_ids": e.rejected[0].tolist()}
                                       for e in examples])


def trl_trainer(kind: str, model_dir, pairs, batch: int, seq: int, out_dir: str, callbacks: list | None = None):
    import transformers
    import trl
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel, PrinterCallback

    from llm.checkpoint import load_weights
    from llm.hf_gpt2 import to_hf_gpt2

    transformers.logging.set_verbosity_error()
    torch.manual_seed(SEED)
    if kind == "dpo":
        model = to_hf_gpt2(load_weights(model_dir), GPT2LMHeadModel, attn_implementation="sdpa")
        trainer_class = trl.DPOTrainer
    else:
        model = to_hf_gpt2(load_weights(model_dir), GPT2ForSequenceClassification, num_labels=1, pad_token_id=PAD_ID,
                           attn_implementation="sdpa")
        trainer_class = trl.RewardTrainer
    trainer = trainer_class(model=model.train(), args=trl_args(kind, batch, seq, out_dir),
                            train_dataset=trl_dataset(kind, pairs, seq), processing_class=hf_tokenizer(),
                            peft_config=trl_lora_config(kind), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    return trainer


def trl_loop(kind: str, model_dir, pairs, batch: int, seq: int, work_dir: str) -> Callable:
    """A function(pause) that runs TRL's training loop, calling pause() after every optimizer step."""
    from transformers import TrainerCallback

    def run(pause: Callable[[], bool]) -> None:
        class Pause(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if pause():
                    control.should_training_stop = True
                return control

        trl_trainer(kind, model_dir, pairs, batch, seq, os.path.join(work_dir, f"trl-{kind}"),
                    callbacks=[Pause()]).train()

    return run


# ----------------------------------------------------------------------------- measurements

def _loop(side: str, kind: str, model_dir, pairs, batch: int, seq: int, work_dir: str) -> SteppedLoop:
    make = ours_loop if side == "ours" else trl_loop
    return SteppedLoop(f"{side}:{kind}", make(kind, model_dir, pairs, batch, seq, work_dir))


def trainable_parameters(kind: str, model_dir, pairs, batch: int, seq: int, work_dir: str) -> dict:
    """Both sides' trainable parameter counts (the same adapters, and the reward head, must be trained)."""
    from llm.checkpoint import load_weights
    from llm.lora import apply_lora
    from llm.reward import RewardModel

    config, _ = ours_configs(kind, batch, seq)
    ours = load_weights(model_dir)
    ours = apply_lora(ours, config) if kind == "dpo" else apply_lora(RewardModel(ours), config, ["score"])
    trainer = trl_trainer(kind, model_dir, pairs, batch, seq, os.path.join(work_dir, f"count-{kind}"))
    result = {side: sum(p.numel() for p in model.parameters() if p.requires_grad)
              for side, model in (("ours", ours), ("trl", trainer.model))}
    if kind == "dpo":
        result["data"] = data_check(pairs, trainer, seq)
    return result


def measure(shape: str, repeats: int, warmup: int, work_dir: str | None = None, n_pairs: int = N_PAIRS,
            log=print, budget: TimeBudget | None = None) -> dict:
    """Checks (same trainable parameters, same tokens), then the four loops built and timed step by step,
    interleaved, in as many of the `repeats` rounds as fit the `budget`. Everything written goes to `work_dir`
    (default: a temporary directory, removed afterwards)."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="bench-preference-") as tmp:
            return measure(shape, repeats, warmup, tmp, n_pairs, log, budget)
    preset, batch, seq = SHAPES[shape]
    pairs = make_pairs(n_pairs, min_tokens=seq + 2)
    model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
    result: dict = {"shape": shape, "preset": preset, "batch": batch, "seq": seq, "pairs": len(pairs), "checks": {},
                    "first_step_s": {}}
    for kind in KINDS:
        check = trainable_parameters(kind, model_dir, pairs, batch, seq, work_dir)
        result["checks"][kind] = check
        log(f"  [{shape}] {kind}: trainable parameters ours {check['ours']:,}, TRL {check['trl']:,}")
        if check["ours"] != check["trl"]:
            raise AssertionError(f"{kind}: the two sides train different parameters ({check})")
        if "data" in check:
            data = check["data"]
            log(f"  [{shape}] {kind} data: {data['identical']}/{data['pairs']} pairs give TRL the same tokens and "
                f"the same scored tokens as ours")
            if data["identical"] != data["pairs"]:
                raise AssertionError(f"{kind}: TRL and ours score different tokens ({data})")
    loops = {}
    try:
        for kind in KINDS:
            for side in SIDES:
                gc.collect()
                loop = _loop(side, kind, model_dir, pairs, batch, seq, work_dir)
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
    result["pairs_per_s"] = {name: batch / seconds for name, seconds in result["median_s"].items()}
    return result


def memory_probe(side: str, kind: str, shape: str, steps: int = 3) -> dict:
    """Run in a fresh process: peak RSS of setting up one loop and running `steps` steps."""
    import importlib
    torch.set_num_threads(THREADS)
    for module in ("transformers", "datasets", "peft", "trl", "llm.dpo", "llm.reward"):  # both pay every import
        importlib.import_module(module)
    preset, batch, seq = SHAPES[shape]
    with tempfile.TemporaryDirectory(prefix="bench-preference-mem-") as work_dir:
        pairs = make_pairs(N_PAIRS, min_tokens=seq + 2)
        model_dir = write_base_model(preset, os.path.join(work_dir, "base"))
        return stepped_loop_memory(lambda: _loop(side, kind, model_dir, pairs, batch, seq, work_dir), steps)


def memory(side: str, kind: str, shape: str) -> dict:
    try:
        return run_json_subprocess("bench.bench_preference", "memory_probe", {"side": side, "kind": kind,
                                                                             "shape": shape})
    except Exception as exc:  # a figure we could not take is reported, not fatal
        return {"error": str(exc)[-500:]}


# ----------------------------------------------------------------------------- figures

def preference_figures(res: dict) -> dict:
    """Per loop pairs/s, step and CPU times, page faults; per kind the ratios ours / TRL."""
    f: dict = {"preference_shape": res["shape"], "preference_batch_pairs": res["batch"],
               "preference_seq": res["seq"], **loop_figures("preference", res, "pairs_per_s")}
    for kind in KINDS:
        f.update(versus_peer_figures(kind, res, "pairs_per_s", kind, TARGETS[kind]))
        check = res.get("checks", {}).get(kind)
        if check:
            f[f"{kind}_trainable_ours"], f[f"{kind}_trainable_trl"] = check["ours"], check["trl"]
            for key, value in check.get("data", {}).items():
                f[f"{kind}_data_{key}"] = value
    return f


def run(quick: bool = False, log=print, budget_s: float | None = None) -> dict:
    budget = time_budget(quick, budget_s)
    torch.set_num_threads(THREADS)
    shape, repeats, warmup = ("tiny", 5, 1) if quick else ("small", 9, 2)
    figures: dict = {f"machine_{k}": v for k, v in machine_info().items()}
    figures["preference_budget_s"] = budget.seconds
    figures["skipped"] = {"preference_peak_rss_mb": QUICK_SKIPS_MEMORY} if quick else {}
    # The memory probes first: a fixed cost, so that the timed rounds fill what is left of the budget.
    for kind in KINDS if not quick else ():
        for side in SIDES:
            log(f"  [{shape}] peak memory of {side}:{kind} (subprocess)")
            for key, value in memory(side, kind, shape).items():
                figures[f"preference_{key}[{side}:{kind}]"] = value
    log(f"bench_preference: {shape} shape {SHAPES[shape]}, DPO and reward model (LoRA), ours vs TRL, up to {repeats} "
        f"interleaved repeats after {warmup} warm-up steps"
        + (f", within a budget of {budget.seconds:g} s ({budget.spent():.0f} s spent)" if budget.seconds else ""))
    res = measure(shape, repeats, warmup, log=log, budget=budget)
    figures.update(preference_figures(res))
    rows = [(name, figures[f"preference_step_s[{name}]"], figures[f"preference_rounds[{name}]"],
             figures[f"preference_pairs_per_s[{name}]"], figures[f"preference_step_cpu_s[{name}]"],
             figures.get(f"preference_peak_rss_mb[{name}]", "-"), figures.get(f"preference_train_rss_mb[{name}]", "-"))
            for name in (f"{side}:{kind}" for kind in KINDS for side in SIDES)]
    print_table(rows, headers=("loop", "step s", "rounds", "pairs/s", "cpu s", "peak RSS MB", "RSS growth MB"))
    for kind in KINDS:
        log(f"  {kind}_vs_trl {figures[f'{kind}_vs_trl']:.2f} (paired {figures[f'{kind}_vs_trl_paired']:.2f}, "
            f"CPU time {figures[f'{kind}_vs_trl_cpu']:.2f}; target >= {TARGETS[kind]})")
    figures["preference_raw"] = res
    return figures


if __name__ == "__main__":
    command_line(run, __doc__.splitlines()[0], "the tiny shape, fewer repeats (a few minutes)", budget=True)
