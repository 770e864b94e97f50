"""Kahneman-Tversky Optimization: a policy learns from unpaired feedback, single answers marked good or bad (chat
thumbs, "both bad" labels, TRL unpaired files), to make the good ones more likely and the bad ones less, relative
to a frozen reference (where it started) and to a reference point, the policy's KL from the reference.

    kto(policy_model_dir, items, out_dir, kto_config=..., train_config=...) -> result dict
    kto_loss(policy_logps, reference_logps, labels, kl_logps, kl_reference_logps, ...) -> (loss, metrics)

The loss is TRL's (`KTOTrainer`, 1.x), which tests/llm/test_kto_parity.py checks on identical weights and batches:

  r(x, y)  = log pi(y|x) - log ref(y|x), the answer's summed log-ratio
  z        = max(0, mean over the batch of r(x, y') for mismatched pairs (x, y')), detached: the KL estimate
  good     loss = desirable_weight   * (1 - sigmoid(beta (r - z)))
  bad      loss = undesirable_weight * (1 - sigmoid(beta (z - r)))
  loss     = the mean over the batch's examples, good and bad together
  apo_zero_unpaired: good 1 - sigmoid(beta r), bad sigmoid(beta r), no z
  metrics  rewards/chosen (the good answers' beta r, mean), rewards/rejected, rewards/margins (their difference),
           logps/chosen, logps/rejected (summed answer log-probs, mean), kl (z); ours also logps/*_per_token.
  (TRL's logits/* and entropy need the whole vocabulary's logits at every answer token; ours never keeps them.)

Each batch's examples go through the policy with gradients; their mismatched rows without (z is detached); the
reference, by method (as `llm.dpo`):
  lora   the same network with the adapter switched off, under no_grad, all 2B rows in one forward.
  full   the log-probs of both rows of every example computed once before training by the untouched network and
         kept with the run (reference_logps.json), so training runs one model.
Every evaluation is watched as DPO's are (llm/degeneration.py): the good answers' log-probability per token against
the start, the KL to the start on answers the policy samples to fixed prompts, and whether those answers collapse;
with `stop_on_degeneration` (the default) a flag stops the run and keeps the weights of the last evaluation that
passed. The output is what SFT writes (an adapter of the policy, or a full model), chat-ready; kto_report.json holds
the held-out figures and the watch's record.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from llm.checkpoint import load_weights
from llm.degeneration import DegenerationBounds, DegenerationGuard, SampleWatch
from llm.dpo import watched_prompts
from llm.kto_batches import (FeedbackBatches, FeedbackExample, class_counts, iterate_feedback_batches,
                             read_feedback_items, tokenize_feedback)
from llm.kto_config import KTO_LOSSES, KTOConfig, kto_train_config
from llm.lora import trainable_parameter_count
from llm.preference_losses import sequence_logps
from llm.sft import chat_base, inherited_config, training_flops_per_token
from llm.sft_config import run_settings
from llm.train import TrainConfig, checkpoint_step
from llm.tuned_policy import start_policy, with_stored_reference
from llm.watched_training import train_watched

REPORT_FILE = "kto_report.json"
# What each evaluation gives the degeneration watch: record name -> the watch's name (llm/degeneration.py).
EVALUATION_FIGURES = {"val_loss": "loss", "val_rewards/margins": "margin",
                      "val_logps/chosen_per_token": "chosen_logp_per_token",
                      "val_reference_logps/chosen_per_token": "start_chosen_logp_per_token"}
# The sampled answers' signals in the metrics, named apart from "kl", KTO's own reference point (TRL's name).
WATCH_METRICS = {"kl_per_token": "val_samples/kl_per_token", "same_answer_share": "val_samples/same_answer_share",
                 "distinct_2": "val_samples/distinct_2"}


def kto_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, labels: torch.Tensor,
             kl_logps: torch.Tensor | None, kl_reference_logps: torch.Tensor | None, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0, loss_type: str = "kto",
             answer_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """KTO on (B,) summed answer log-probs of the policy and the reference, `labels` True for good answers, and
    (B,) of the mismatched rows (for z; unused by apo_zero_unpaired). Metrics of a class the batch lacks are 0."""
    if loss_type not in KTO_LOSSES:
        raise ValueError(f"loss_type must be one of {', '.join(KTO_LOSSES)}, got {loss_type!r}")
    labels = labels.to(torch.bool)
    if loss_type == "kto":
        kl = (kl_logps - kl_reference_logps).mean().detach().clamp(min=0)
    else:
        kl = torch.zeros((), device=policy_logps.device)
    ratios = policy_logps - reference_logps
    if loss_type == "kto":
        losses = torch.where(labels, desirable_weight * (1 - torch.sigmoid(beta * (ratios - kl))),
                             undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratios))))
    else:
        losses = torch.where(labels, desirable_weight * (1 - torch.sigmoid(beta * ratios)),
                             undesirable_weight * torch.sigmoid(beta * ratios))
    with torch.no_grad():
        rewards = beta * ratios.detach()
        good, bad = labels.float(), (~labels).float()
        good_count, bad_count = good.sum(), bad.sum()
        metrics = {"kl": kl.detach(),
                   "rewards/chosen": (rewards * good).sum() / good_count.clamp(min=1),
                   "rewards/rejected": (rewards * bad).sum() / bad_count.clamp(min=1),
                   "logps/chosen": (policy_logps.detach() * good).sum() / good_count.clamp(min=1),
                   "logps/rejected": (policy_logps.detach() * bad).sum() / bad_count.clamp(min=1)}
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        if answer_tokens is not None:
            for name, mask in (("chosen", good), ("rejected", bad)):
                metrics[f"logps/{name}_per_token"] = ((policy_logps.detach() * mask).sum()
                                                      / (answer_tokens * mask).sum().clamp(min=1))
    return losses.mean(), metrics


class KTOObjective:
    """The KTO loss on each batch with TRL's metric names; `evaluate` gives the same on the held-out examples."""

    # KTO stays near where it started by design, as DPO does (llm/dpo.py says why the not-learning watch is off).
    watch_learning = False

    def __init__(self, config: KTOConfig, eval_examples: Sequence[FeedbackExample], batch_size: int,
                 eval_batches: int, pad_id: int, watch: Callable[[nn.Module], dict] | None = None):
        self.config = config
        self.eval_examples = list(eval_examples)
        self.batch_size, self.eval_batches, self.pad_id = batch_size, eval_batches, pad_id
        self.watch = watch
        if not self.eval_examples:
            self.evaluate = None

    @property
    def uses_kl(self) -> bool:
        return self.config.loss_type == "kto"

    def _reference(self, model: nn.Module, batch: dict, rows: int) -> torch.Tensor:
        """The reference's log-probs of the batch's first `rows` rows (the examples, then the mismatched rows)."""
        if "reference_logps" in batch:
            return batch["reference_logps"][:rows]
        with torch.no_grad(), model.disable_adapter():
            return sequence_logps(model, batch["inputs"][:rows], batch["targets"][:rows])[0]

    def _loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        return self._scored(model, batch)[:2]

    def _scored(self, model: nn.Module, batch: dict):
        """(loss, metrics, the examples' policy log-probs, their reference's, answer tokens)."""
        size = batch["label"].numel()
        policy, counts = sequence_logps(model, batch["inputs"][:size], batch["targets"][:size])
        reference = self._reference(model, batch, 2 * size if self.uses_kl else size)
        kl_policy = kl_reference = None
        if self.uses_kl:
            with torch.no_grad():
                kl_policy = sequence_logps(model, batch["inputs"][size:], batch["targets"][size:])[0]
            kl_reference = reference[size:]
        c = self.config
        loss, metrics = kto_loss(policy, reference[:size], batch["label"], kl_policy, kl_reference, c.beta,
                                 c.desirable_weight, c.undesirable_weight, c.loss_type, answer_tokens=counts)
        return loss, metrics, policy, reference[:size], counts

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        return self._loss(model, batch)

    def tokens_in(self, batch: dict) -> int:
        return batch["tokens"]

    def evaluate(self, model: nn.Module) -> dict:
        """Held-out figures, each class's averaged over its own examples (not a mean of the batches' means)."""
        device = next(model.parameters()).device
        sums = {"loss": 0.0, "kl": 0.0, "rewards/chosen": 0.0, "rewards/rejected": 0.0}
        examples = batches = good = bad = 0
        good_logps = good_reference = good_tokens = 0.0  # per token over every good answer, for the watch
        for batch in iterate_feedback_batches(self.eval_examples, self.batch_size, self.pad_id, self.eval_batches):
            batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value
                     for key, value in batch.items()}
            loss, metrics, policy, reference, counts = self._scored(model, batch)
            labels = batch["label"]
            good_logps += float(policy[labels].sum())
            good_reference += float(reference[labels].sum())
            good_tokens += float(counts[labels].sum())
            size, good_here = labels.numel(), int(labels.sum())
            sums["loss"] += float(loss) * size
            sums["kl"] += float(metrics["kl"])
            sums["rewards/chosen"] += float(metrics["rewards/chosen"]) * good_here
            sums["rewards/rejected"] += float(metrics["rewards/rejected"]) * (size - good_here)
            examples, batches, good, bad = examples + size, batches + 1, good + good_here, bad + size - good_here
        result = {"val_loss": sums["loss"] / max(examples, 1), "val_kl": sums["kl"] / max(batches, 1),
                  "val_rewards/chosen": sums["rewards/chosen"] / max(good, 1),
                  "val_rewards/rejected": sums["rewards/rejected"] / max(bad, 1)}
        result["val_rewards/margins"] = result["val_rewards/chosen"] - result["val_rewards/rejected"]
        if good_tokens:
            result["val_logps/chosen_per_token"] = good_logps / good_tokens
            result["val_reference_logps/chosen_per_token"] = good_reference / good_tokens
        if self.watch is not None:
            result.update(self.watch(model))
        return result


@torch.no_grad()
def precompute_reference(model: nn.Module, examples: Sequence[FeedbackExample], batch_size: int, pad_id: int
                         ) -> list[FeedbackExample]:
    """The examples with the (untrained) model's log-probs of their two rows attached: full KTO's reference."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    result = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = next(iterate_feedback_batches(chunk, batch_size, pad_id))
        logps, _ = sequence_logps(model, batch["inputs"].to(device), batch["targets"].to(device))
        own, mismatched = logps.float().cpu().chunk(2)
        result += [replace(e, reference_logps=(a, b)) for e, a, b in zip(chunk, own.tolist(), mismatched.tolist())]
    model.train(was_training)
    return result


def weight_advice(desirable: int, undesirable: int, config: KTOConfig) -> str | None:
    """TRL's warning, in our words: with unequal classes, the weights should make weight x count about equal
    (desirable_weight x good within 1 to 1.33 x undesirable_weight x bad: the KTO paper's Eq. 8)."""
    if desirable == undesirable or not desirable or not undesirable:
        return None
    low = undesirable * config.undesirable_weight / desirable
    high = 1.33 * low
    high_u = desirable * config.desirable_weight / undesirable
    low_u = high_u / 1.33
    if low <= config.desirable_weight <= high or low_u <= config.undesirable_weight <= high_u:
        return None
    return (f"{desirable:,} good and {undesirable:,} bad answers: set desirable_weight in [{low:.2f}, {high:.2f}] or "
            f"undesirable_weight in [{low_u:.2f}, {high_u:.2f}] (not both) so neither class dominates")


def kto(policy_model_dir: str | os.PathLike, data: str | os.PathLike | list, out_dir: str | os.PathLike, *,
        kto_config: KTOConfig | None = None, train_config: TrainConfig | None = None,
        data_dir: str | os.PathLike | None = None, on_metrics: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, resume: bool = True,
        bounds: DegenerationBounds | None = None, log: Callable[[str], None] = print) -> dict:
    """Train the model in `policy_model_dir` with KTO on unpaired feedback (a list of {"prompt", "completion",
    "label"} items or of preference pairs, which are unpaired; or a feedback dataset file).

    Returns {"stopped", "step", "loss", "val_loss", "val_rewards/margins", "val_kl", "examples", "desirable",
    "undesirable", "truncated", "dropped", "train_examples", "val_examples", "trainable_params", "total_params",
    "model_dir" (None when stopped), "architecture", "weight_advice", "degeneration" (a sentence when the watch
    flagged the run, else None), "kept_step"}.
    Raises ValueError when the data has no example of one class (KTO needs both), `llm.degeneration.Degenerated`
    when a flag stops the run before any evaluation passed.
    """
    kto_config = kto_config or KTOConfig()
    bounds = bounds or DegenerationBounds()
    policy_model_dir, out_dir = Path(policy_model_dir), Path(out_dir)
    base_config, tokenizer_name, tokenizer = chat_base(policy_model_dir, out_dir, data_dir)
    kto_config, config = run_settings(kto_config, train_config, base_config["model"], kto_train_config, log)
    if config.batch_size < 2 and kto_config.loss_type == "kto":
        raise ValueError("batch_size must be at least 2 for KTO: its KL estimate pairs each prompt with another "
                         "example's answer in the batch")
    items = read_feedback_items(data)
    desirable, undesirable = class_counts(items)
    if not desirable or not undesirable:
        raise ValueError(f"KTO needs good and bad answers; the data has {desirable:,} good and {undesirable:,} bad")
    advice = weight_advice(desirable, undesirable, kto_config)
    if advice:
        log(advice)
    max_length = min(config.block_size, base_config["model"]["block_size"])
    tokenized = tokenize_feedback(tokenizer, items, max_length, config.seed)
    from llm.chat_batches import split_examples

    train_part, val_part = split_examples(list(zip(tokenized.kept, tokenized.examples)), kto_config.val_fraction,
                                          config.seed)
    train_examples, val_examples = [e for _, e in train_part], [e for _, e in val_part]
    log(f"{tokenized.items:,} answers ({desirable:,} good, {undesirable:,} bad): {tokenized.truncated:,} truncated "
        f"to {max_length + 1} tokens, {tokenized.dropped:,} dropped, {len(train_examples):,} for training, "
        f"{len(val_examples):,} held out")
    if not train_examples:
        raise ValueError(f"no answer is left to learn from (after truncation to {max_length} tokens)")

    model: nn.Module = load_weights(policy_model_dir)
    flops_per_token = training_flops_per_token(model, max_length, kto_config.full, answered_share=0.5)
    torch.manual_seed(config.seed)
    if kto_config.full:
        train_examples, val_examples = with_stored_reference(
            out_dir, train_examples, val_examples,
            lambda examples: precompute_reference(model, examples, config.batch_size, tokenizer.eot_id), log)
    # The loss reads the precomputed log-probs (all weights) or the adapter-off network (LoRA); the watch's KL and the
    # start's answers need the reference's next-token distributions on sampled answers: `policy.reference()`, as DPO's.
    policy = start_policy(model, policy_model_dir, kto_config, tokenizer_name,
                          extra={**inherited_config(policy_model_dir), "chat": True, "kto": asdict(kto_config)})
    model = policy.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count, total_count = trainable_parameter_count(model)
    log(f"{'full' if kto_config.full else f'LoRA r={kto_config.lora_r} on {kto_config.lora_targets}'} KTO "
        f"({kto_config.loss_type}, beta {kto_config.beta}, weights {kto_config.desirable_weight:g} good / "
        f"{kto_config.undesirable_weight:g} bad): {trainable_count:,} trainable parameters of {total_count:,}")

    held_out = bool(val_examples)
    eval_examples = val_examples or train_examples[:config.batch_size * config.eval_batches]
    # The degeneration watch (llm/degeneration.py), wired as DPO's: fixed prompts, the held-out answers' first.
    watch = SampleWatch(tokenizer, watched_prompts(items, (val_part, train_part), bounds.prompts), bounds, config.seed)
    advice = f"What to change: lower the learning rate (now {config.lr:g}) or raise beta (now {kto_config.beta:g})"
    guard = DegenerationGuard(out_dir, out_dir / REPORT_FILE, bounds, watch, kto_config.stop_on_degeneration, advice,
                              log, resume_step=checkpoint_step(out_dir) if resume else None)

    def objective_of(watch_signals):
        return KTOObjective(kto_config, eval_examples, config.batch_size, config.eval_batches, tokenizer.eot_id,
                            watch=watch_signals)

    batches = FeedbackBatches(train_examples, config.batch_size, config.seed, tokenizer.eot_id)
    result = train_watched(model, objective_of, batches, config, out_dir, policy=policy, guard=guard, watch=watch,
                           watch_metrics=WATCH_METRICS, evaluation_figures=EVALUATION_FIGURES,
                           trainable_params=trainable, flops_per_token=flops_per_token, resume=resume,
                           on_metrics=on_metrics, should_stop=should_stop, log=log)
    if result["stopped"] and not guard.stopped:
        return {"stopped": True, "step": result["step"], "loss": result["loss"], "model_dir": None,
                "architecture": policy.architecture}
    # The figures of the weights kept: the last evaluation's, or the last one that passed when a flag stopped it.
    kept_step = guard.report["kept_step"] if guard.stopped else None
    final = next((e for e in reversed(guard.report["evaluations"]) if kept_step is None or e["step"] == kept_step), {})
    closing = {"val_loss": final.get("loss"), "val_rewards/margins": final.get("margin"),
               "kl_per_token": final.get("kl_per_token"), "samples": final.get("samples"),
               "val_rewards/chosen": None if guard.stopped else result.get("val_rewards/chosen"),
               "val_rewards/rejected": None if guard.stopped else result.get("val_rewards/rejected"),
               "val_kl": None if guard.stopped else result.get("val_kl"), "held_out": held_out,
               "examples": tokenized.items, "desirable": desirable, "undesirable": undesirable,
               "train_examples": len(train_examples), "val_examples": len(val_examples),
               "weight_advice": weight_advice(desirable, undesirable, kto_config), "degeneration": guard.summary(),
               "kto": asdict(kto_config)}
    guard.save(**closing)
    return {"stopped": False, "step": result["step"], "loss": result["loss"], **closing, "kept_step": kept_step,
            "truncated": tokenized.truncated, "dropped": tokenized.dropped, "trainable_params": trainable_count,
            "total_params": total_count, "model_dir": str(out_dir), "architecture": policy.architecture}
