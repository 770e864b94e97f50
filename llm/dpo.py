"""Direct Preference Optimization: a policy (an SFT or base model) learns from preference pairs to make the
chosen answers more likely than the rejected ones, relative to a frozen reference (where it started).

    dpo(policy_model_dir, pairs, out_dir, dpo_config=..., train_config=...) -> result dict

Both answers of a batch go through the model in one forward pass (chosen rows, then rejected rows:
`llm/preference_batches.py`), and only the final answer's tokens are scored; the prompt never is.

The reference, by method ("auto" is resolved to one of them first: `llm.train_config.choose_method`):
  lora            the same network with the adapter switched off (`peft`'s `disable_adapter`), under no_grad.
  full            every pair's reference log-probs are computed once before training, by the untouched
                  network, and kept with the run (reference_logps.json), so training steps run one model; a
                  frozen copy of the starting weights (no gradients, no optimizer state) serves the watch below.

`rpo_alpha` adds RPO's NLL term on the chosen answers (llm/preference_losses.py: chosen_nll), which keeps them
likely while the margin grows.

Every evaluation is watched (llm/degeneration.py): the chosen and rejected log-probabilities per token against
the start, the KL to the reference on answers the policy samples to fixed prompts, and whether those answers
collapse (one answer for every prompt, repetition). The answers go to the log, everything to the run's report
(dpo_report.json); a flag says what to change, and with `stop_on_degeneration` (the default) stops the run and
keeps the weights of the last evaluation that passed.

The output is what SFT writes (an adapter of the policy, or a full model), chat-ready.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from llm.checkpoint import load_weights
from llm.dpo_config import DPOConfig, dpo_train_config
from llm.degeneration import DegenerationBounds, DegenerationGuard, SampleWatch
from llm.lora import trainable_parameter_count
from llm.preference_batches import (PairExample, PreferenceBatches, iterate_pair_batches, read_pairs,
                                    tokenize_and_split)
from llm.preference_losses import chosen_nll, dpo_loss, sequence_logps
from llm.sft import chat_base, inherited_config, training_flops_per_token
from llm.sft_config import run_settings
from llm.train import TrainConfig, checkpoint_step
from llm.tuned_policy import start_policy, with_stored_reference
from llm.watched_training import train_watched

REPORT_FILE = "dpo_report.json"


class DPOObjective:
    """The DPO loss on each batch (+ RPO's NLL term with `rpo_alpha`), with TRL's metric names; `evaluate` gives
    the same on the evaluation pairs, the chosen and rejected log-probabilities per token of the policy and the
    chosen one of the reference (where the policy started), and what `watch(model)` adds (the sampled answers'
    signals: llm/degeneration.py)."""

    # Not judged by the loop's not-learning watch (llm/learning_watch.py): DPO stays near where it started by
    # design, so its loss moves a few per cent in a healthy run (3.8 % by a quarter of a run at the default rate,
    # from a trained SFT model), close to what a pair-to-pair noise moves it at a rate of 1e-7 (1.7 %):
    # bench/not_learning.py. The degeneration watch and the held-out accuracy say how DPO is doing instead.
    watch_learning = False

    def __init__(self, config: DPOConfig, eval_examples: Sequence[PairExample], batch_size: int, eval_batches: int,
                 pad_id: int, watch: Callable[[nn.Module], dict] | None = None):
        self.config = config
        self.eval_examples = list(eval_examples)
        self.batch_size, self.eval_batches, self.pad_id = batch_size, eval_batches, pad_id
        self.watch = watch
        if not self.eval_examples:
            self.evaluate = None

    def reference_logps(self, model: nn.Module, batch: dict) -> torch.Tensor:
        if "reference_logps" in batch:
            return batch["reference_logps"]
        with torch.no_grad(), model.disable_adapter():
            return sequence_logps(model, batch["inputs"], batch["targets"])[0]

    def _loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        policy, counts = sequence_logps(model, batch["inputs"], batch["targets"])
        reference = self.reference_logps(model, batch)
        loss, metrics = dpo_loss(policy, reference, counts, self.config.beta, self.config.loss_type)
        if self.config.rpo_alpha:
            nll = chosen_nll(policy, counts)
            loss = loss + self.config.rpo_alpha * nll
            metrics["nll_loss"] = nll.detach()
        return loss, metrics, reference, counts

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        loss, metrics, _, _ = self._loss(model, batch)
        return loss, metrics

    def tokens_in(self, batch: dict) -> int:
        return batch["tokens"]

    def evaluate(self, model: nn.Module) -> dict:
        device = next(model.parameters()).device
        totals: dict[str, float] = {}
        pairs = 0
        per_token = {"logps/chosen": 0.0, "logps/rejected": 0.0, "reference_logps/chosen": 0.0}
        chosen_tokens = rejected_tokens = 0
        for batch in iterate_pair_batches(self.eval_examples, self.batch_size, self.pad_id, self.eval_batches):
            batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
            loss, metrics, reference, counts = self._loss(model, batch)
            count = batch["margin"].numel()
            for key, value in {"loss": loss, **metrics}.items():
                totals[key] = totals.get(key, 0.0) + float(value) * count
            pairs += count
            # Per token over every evaluation pair's tokens (not a mean of the batches' ratios).
            per_token["logps/chosen"] += float(metrics["logps/chosen_per_token"]) * int(counts[:count].sum())
            per_token["logps/rejected"] += float(metrics["logps/rejected_per_token"]) * int(counts[count:].sum())
            per_token["reference_logps/chosen"] += float(reference[:count].sum())
            chosen_tokens += int(counts[:count].sum())
            rejected_tokens += int(counts[count:].sum())
        result = {f"val_{key}": value / pairs for key, value in totals.items()}
        result["val_logps/chosen_per_token"] = per_token["logps/chosen"] / max(chosen_tokens, 1)
        result["val_logps/rejected_per_token"] = per_token["logps/rejected"] / max(rejected_tokens, 1)
        result["val_reference_logps/chosen_per_token"] = per_token["reference_logps/chosen"] / max(chosen_tokens, 1)
        if self.watch is not None:
            result.update(self.watch(model))
        return result


@torch.no_grad()
def precompute_reference(model: nn.Module, examples: Sequence[PairExample], batch_size: int, pad_id: int
                         ) -> list[PairExample]:
    """The examples with the (untrained) model's answer log-probs attached: full DPO's reference."""
    was_training = model.training
    model.eval()
    result = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = next(iterate_pair_batches(chunk, batch_size, pad_id))
        logps, _ = sequence_logps(model, batch["inputs"], batch["targets"])
        chosen, rejected = logps.chunk(2)
        result += [replace(example, reference_logps=(c, r))
                   for example, c, r in zip(chunk, chosen.tolist(), rejected.tolist())]
    model.train(was_training)
    return result


def watched_prompts(pairs: Sequence[dict], parts: Sequence[Sequence[tuple[int, PairExample]]], count: int
                    ) -> list[list[dict]]:
    """The first `count` distinct prompts of the held-out pairs, then of the training pairs: fixed for a run."""
    seen, prompts = set(), []
    for part in parts:
        for index, _ in part:
            key = json.dumps(pairs[index]["prompt"], sort_keys=True)
            if key not in seen and len(prompts) < count:
                seen.add(key)
                prompts.append(list(pairs[index]["prompt"]))
    return prompts


def degeneration_advice(dpo_config: DPOConfig, lr: float) -> str:
    return (f"What to change: lower the learning rate (now {lr:g}), raise beta (now {dpo_config.beta:g}) or add an "
            f"NLL term on the chosen answers (rpo_alpha, now {dpo_config.rpo_alpha:g})")


# What each evaluation keeps in the report besides the sampled answers' signals: record name -> report name.
EVALUATION_FIGURES = {"val_loss": "loss", "val_rewards/accuracies": "accuracy", "val_rewards/margins": "margin",
                      "val_logps/chosen_per_token": "chosen_logp_per_token",
                      "val_logps/rejected_per_token": "rejected_logp_per_token",
                      "val_reference_logps/chosen_per_token": "start_chosen_logp_per_token"}
# The sampled answers' signals in the metrics: report name -> metric name.
WATCH_METRICS = {"kl_per_token": "val_kl", "same_answer_share": "val_samples/same_answer_share",
                 "distinct_2": "val_samples/distinct_2"}


def dpo(policy_model_dir: str | os.PathLike, data: str | os.PathLike | list, out_dir: str | os.PathLike, *,
        dpo_config: DPOConfig | None = None, train_config: TrainConfig | None = None,
        data_dir: str | os.PathLike | None = None, on_metrics: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, resume: bool = True,
        bounds: DegenerationBounds | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the model in `policy_model_dir` with DPO on preference pairs (a list in the normal form of
    `llm.chat_data.read_preference`, or a preference dataset file), watched for degeneration (`bounds`).

    Returns {"stopped", "step", "loss", "val_loss", "val_rewards/accuracies", "val_rewards/margins", "kl" (nats
    per token), "kl_per_answer", "held_out", "degeneration" (a sentence when flagged, else None), "kept_step"
    (the evaluation whose weights are the result, when a flag stopped the run), "samples", "pairs", "truncated",
    "dropped", "train_pairs", "val_pairs", "trainable_params", "total_params", "model_dir" (None when stopped),
    "architecture"}. The figures are those of the weights the run keeps.
    Raises `llm.degeneration.Degenerated` when a flag stops the run before any evaluation passed.
    """
    dpo_config = dpo_config or DPOConfig()
    bounds = bounds or DegenerationBounds()
    policy_model_dir, out_dir = Path(policy_model_dir), Path(out_dir)
    base_config, tokenizer_name, tokenizer = chat_base(policy_model_dir, out_dir, data_dir)
    dpo_config, config = run_settings(dpo_config, train_config, base_config["model"], dpo_train_config, log)
    pairs = read_pairs(data)
    max_length = min(config.block_size, base_config["model"]["block_size"])
    tokenized, train_part, val_part = tokenize_and_split(tokenizer, pairs, max_length, dpo_config.val_fraction,
                                                         config.seed, log)
    train_examples, val_examples = [e for _, e in train_part], [e for _, e in val_part]

    model: nn.Module = load_weights(policy_model_dir)
    flops_per_token = training_flops_per_token(model, max_length, dpo_config.full, answered_share=0.5)
    torch.manual_seed(config.seed)
    if dpo_config.full:
        train_examples, val_examples = with_stored_reference(
            out_dir, train_examples, val_examples,
            lambda examples: precompute_reference(model, examples, config.batch_size, tokenizer.eot_id), log)
    # The loss reads the precomputed log-probs (all weights) or the adapter-off network (LoRA); the watch's KL and the
    # start's answers need the reference's next-token distributions on answers sampled during the run, which the
    # policy's `reference()` gives either way (all weights: a frozen copy of the starting weights).
    policy = start_policy(model, policy_model_dir, dpo_config, tokenizer_name,
                          extra={**inherited_config(policy_model_dir), "chat": True, "dpo": asdict(dpo_config)})
    model = policy.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count, total_count = trainable_parameter_count(model)
    log(f"{'full' if dpo_config.full else f'LoRA r={dpo_config.lora_r} on {dpo_config.lora_targets}'} DPO "
        f"({dpo_config.loss_type}, beta {dpo_config.beta}"
        f"{f', rpo_alpha {dpo_config.rpo_alpha:g}' if dpo_config.rpo_alpha else ''}): "
        f"{trainable_count:,} trainable parameters of {total_count:,}")

    # Evaluation and the watch: the held-out pairs, or the first training pairs when none are held out.
    held_out = bool(val_examples)
    eval_examples = val_examples or train_examples[:config.batch_size * config.eval_batches]
    if not held_out:
        log("no pairs held out: evaluations (and the degeneration watch) read training pairs")
    watch = SampleWatch(tokenizer, watched_prompts(pairs, (val_part, train_part), bounds.prompts), bounds, config.seed)
    guard = DegenerationGuard(out_dir, out_dir / REPORT_FILE, bounds, watch, dpo_config.stop_on_degeneration,
                              degeneration_advice(dpo_config, config.lr), log,
                              resume_step=checkpoint_step(out_dir) if resume else None)

    def objective_of(watch_signals):
        return DPOObjective(dpo_config, eval_examples, config.batch_size, config.eval_batches, tokenizer.eot_id,
                            watch=watch_signals)

    batches = PreferenceBatches(train_examples, config.batch_size, config.seed, tokenizer.eot_id)
    result = train_watched(model, objective_of, batches, config, out_dir, policy=policy, guard=guard, watch=watch,
                           watch_metrics=WATCH_METRICS, evaluation_figures=EVALUATION_FIGURES,
                           trainable_params=trainable, flops_per_token=flops_per_token, resume=resume,
                           on_metrics=on_metrics, should_stop=should_stop, log=log)
    if result["stopped"] and not guard.stopped:
        return {"stopped": True, "step": result["step"], "loss": result["loss"], "model_dir": None,
                "architecture": policy.architecture}

    # The figures of the weights kept: the last evaluation, or the last one that passed when a flag stopped it.
    evaluations = guard.report["evaluations"]
    kept_step = guard.report["kept_step"] if guard.stopped else None
    final = next((e for e in reversed(evaluations) if kept_step is None or e["step"] == kept_step), {})
    closing = {"val_loss": final.get("loss"), "val_rewards/accuracies": final.get("accuracy"),
               "val_rewards/margins": final.get("margin"), "kl": final.get("kl_per_token"),
               "kl_per_answer": final.get("kl_per_answer"), "samples": final.get("samples"), "held_out": held_out,
               "val_pairs": len(val_examples), "degeneration": guard.summary()}
    guard.save(**closing)
    return {"stopped": False, "step": result["step"], "loss": result["loss"], **closing,
            "kept_step": kept_step, "pairs": tokenized.pairs, "truncated": tokenized.truncated,
            "dropped": tokenized.dropped, "train_pairs": len(train_examples), "trainable_params": trainable_count,
            "total_params": total_count, "model_dir": str(out_dir), "architecture": policy.architecture}
