"""Direct Preference Optimization: a policy (an SFT or base model) learns from preference pairs to make the
chosen answers more likely than the rejected ones, relative to a frozen reference (where it started).

    dpo(policy_model_dir, pairs, out_dir, dpo_config=..., train_config=...) -> result dict

Both answers of a batch go through the model in one forward pass (chosen rows, then rejected rows:
`llm/preference_batches.py`), and only the final answer's tokens are scored; the prompt never is.

The reference costs no second model in memory:
  LoRA (default)  the same network with the adapter switched off (`peft`'s `disable_adapter`), under no_grad.
  full            every pair's reference log-probs are computed once before training, by the untouched
                  network, and kept with the run (reference_logps.json); training then needs one model.

The output is what SFT writes (an adapter of the policy, or a full model), chat-ready. At the end, on the
held-out pairs: preference accuracy (rewards/accuracies) and an estimate of the KL divergence from the
reference (answers sampled from the trained policy, mean log pi - log ref per answer).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from llm.chat import end_of_turn_id, render_for_completion
from llm.chat_batches import IGNORE_INDEX
from llm.atomic_files import atomic_write_text
from llm.checkpoint import ADAPTER_ARCHITECTURE, GPT_ARCHITECTURE, load_weights, save_model
from llm.dpo_config import DPOConfig, dpo_train_config
from llm.generate import SamplingSettings, generate_tokens
from llm.lora import trainable_parameter_count
from llm.preference_batches import (PairExample, PreferenceBatches, iterate_pair_batches, read_pairs,
                                    tokenize_and_split)
from llm.preference_losses import dpo_loss, sequence_logps
from llm.sft import chat_base, inherited_config, training_flops_per_token
from llm.train import TrainConfig, train

REFERENCE_FILE = "reference_logps.json"
REPORT_FILE = "dpo_report.json"
KL_SAMPLES = 16          # held-out prompts sampled for the KL estimate
KL_MAX_NEW_TOKENS = 48


class DPOObjective:
    """The DPO loss on each batch, with TRL's metric names; `evaluate` gives the same on held-out pairs."""

    def __init__(self, config: DPOConfig, val_examples: Sequence[PairExample], batch_size: int, eval_batches: int,
                 pad_id: int):
        self.config = config
        self.val_examples = list(val_examples)
        self.batch_size, self.eval_batches, self.pad_id = batch_size, eval_batches, pad_id
        if not self.val_examples:
            self.evaluate = None

    def reference_logps(self, model: nn.Module, batch: dict) -> torch.Tensor:
        if "reference_logps" in batch:
            return batch["reference_logps"]
        with torch.no_grad(), model.disable_adapter():
            return sequence_logps(model, batch["inputs"], batch["targets"])[0]

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        policy, counts = sequence_logps(model, batch["inputs"], batch["targets"])
        loss, metrics = dpo_loss(policy, self.reference_logps(model, batch), counts, self.config.beta,
                                 self.config.loss_type)
        if self.config.sft_weight:
            chosen, chosen_counts = policy.chunk(2)[0], counts.chunk(2)[0]
            loss = loss + self.config.sft_weight * -(chosen / chosen_counts.clamp(min=1)).mean()
        return loss, metrics

    def tokens_in(self, batch: dict) -> int:
        return batch["tokens"]

    def evaluate(self, model: nn.Module) -> dict:
        device = next(model.parameters()).device
        totals: dict[str, float] = {}
        pairs = 0
        for batch in iterate_pair_batches(self.val_examples, self.batch_size, self.pad_id, self.eval_batches):
            batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
            loss, metrics = self.loss(model, batch)
            count = batch["margin"].numel()
            for key, value in {"loss": loss, **metrics}.items():
                totals[key] = totals.get(key, 0.0) + float(value) * count
            pairs += count
        return {f"val_{key}": value / pairs for key, value in totals.items()}


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


@torch.no_grad()
def estimate_kl(policy: nn.Module, reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tokenizer,
                prompts: Sequence[list[dict]], seed: int) -> float | None:
    """Mean over sampled answers of log pi(answer) - log ref(answer): a Monte-Carlo estimate of KL(pi || ref).

    `reference(inputs, targets)` gives the reference's summed log-probs of the same rows."""
    if not prompts:
        return None
    stop = end_of_turn_id(tokenizer)
    settings = SamplingSettings(max_new_tokens=KL_MAX_NEW_TOKENS, temperature=1.0, seed=seed)
    differences = []
    for prompt in prompts:
        prompt_ids = render_for_completion(tokenizer, prompt)
        room = policy.config.block_size - len(prompt_ids) - 1
        if room < 1:
            continue
        answer = [int(step[0]) for step in generate_tokens(
            policy, prompt_ids, replace(settings, max_new_tokens=min(KL_MAX_NEW_TOKENS, room)), 1, {stop},
            tokenizer.vocab_size) if int(step[0]) >= 0]
        if not answer:
            continue
        ids = torch.tensor([prompt_ids + answer])
        inputs, targets = ids[:, :-1], ids[:, 1:].clone()
        targets[:, :len(prompt_ids) - 1] = IGNORE_INDEX
        differences.append(float(sequence_logps(policy, inputs, targets)[0] - reference(inputs, targets)))
    return sum(differences) / len(differences) if differences else None


def dpo(policy_model_dir: str | os.PathLike, data: str | os.PathLike | list, out_dir: str | os.PathLike, *,
        dpo_config: DPOConfig | None = None, train_config: TrainConfig | None = None,
        data_dir: str | os.PathLike | None = None, on_metrics: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None, resume: bool = True,
        log: Callable[[str], None] = print) -> dict:
    """Train the model in `policy_model_dir` with DPO on preference pairs (a list in the normal form of
    `llm.chat_data.read_preference`, or a preference dataset file).

    Returns {"stopped", "step", "loss", "val_loss", "val_rewards/accuracies", "val_rewards/margins",
    "kl", "pairs", "truncated", "dropped", "train_pairs", "val_pairs", "trainable_params", "total_params",
    "model_dir" (None when stopped), "architecture"}.
    """
    dpo_config = dpo_config or DPOConfig()
    config = train_config or dpo_train_config(dpo_config)
    policy_model_dir, out_dir = Path(policy_model_dir), Path(out_dir)
    base_config, tokenizer_name, tokenizer = chat_base(policy_model_dir, out_dir, data_dir)
    pairs = read_pairs(data)
    max_length = min(config.block_size, base_config["model"]["block_size"])
    tokenized, train_part, val_part = tokenize_and_split(tokenizer, pairs, max_length, dpo_config.val_fraction,
                                                         config.seed, log)
    train_examples, val_examples = [e for _, e in train_part], [e for _, e in val_part]

    model: nn.Module = load_weights(policy_model_dir)
    flops_per_token = training_flops_per_token(model, max_length, dpo_config.full, answered_share=0.5)
    torch.manual_seed(config.seed)
    if dpo_config.full:
        architecture = GPT_ARCHITECTURE
        reference_file = out_dir / REFERENCE_FILE
        if reference_file.is_file():  # a resumed run: the reference is the untouched model's, kept from the start
            stored = json.loads(reference_file.read_text())
            train_examples = [replace(e, reference_logps=tuple(r)) for e, r in zip(train_examples, stored["train"])]
            val_examples = [replace(e, reference_logps=tuple(r)) for e, r in zip(val_examples, stored["val"])]
        else:
            log("computing the reference log-probabilities once (full DPO keeps no second model)")
            train_examples = precompute_reference(model, train_examples, config.batch_size, tokenizer.eot_id)
            val_examples = precompute_reference(model, val_examples, config.batch_size, tokenizer.eot_id)
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(reference_file, json.dumps({
                "train": [e.reference_logps for e in train_examples], "val": [e.reference_logps for e in val_examples]}))
    else:
        from llm.lora import apply_lora, save_adapter  # peft is imported only for LoRA runs

        architecture = ADAPTER_ARCHITECTURE
        model = apply_lora(model, dpo_config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count, total_count = trainable_parameter_count(model)
    log(f"{'full' if dpo_config.full else f'LoRA r={dpo_config.lora_r} on {dpo_config.lora_targets}'} DPO "
        f"({dpo_config.loss_type}, beta {dpo_config.beta}): {trainable_count:,} trainable parameters of {total_count:,}")

    extra = {**inherited_config(policy_model_dir), "chat": True, "dpo": asdict(dpo_config)}

    def save(trained: nn.Module, directory: Path) -> None:
        if dpo_config.full:
            for name in ("adapter_config.json", "adapter_model.safetensors"):
                (directory / name).unlink(missing_ok=True)
            save_model(trained, directory, tokenizer_name, extra=extra)
        else:
            save_adapter(trained, directory, policy_model_dir, tokenizer_name, extra=extra)

    objective = DPOObjective(dpo_config, val_examples, config.batch_size, config.eval_batches, tokenizer.eot_id)
    batches = PreferenceBatches(train_examples, config.batch_size, config.seed, tokenizer.eot_id)
    result = train(model, objective, batches, config, out_dir, on_metrics=on_metrics, should_stop=should_stop,
                   trainable_params=trainable, flops_per_token=flops_per_token, save_model_fn=save,
                   resume=resume, log=log)
    summary = {"stopped": result["stopped"], "step": result["step"], "loss": result["loss"],
               "val_loss": result.get("val_loss"), "val_rewards/accuracies": result.get("val_rewards/accuracies"),
               "val_rewards/margins": result.get("val_rewards/margins"), "kl": None,
               "pairs": tokenized.pairs, "truncated": tokenized.truncated, "dropped": tokenized.dropped,
               "train_pairs": len(train_examples), "val_pairs": len(val_examples),
               "trainable_params": trainable_count, "total_params": total_count,
               "model_dir": None if result["stopped"] else str(out_dir), "architecture": architecture}
    if result["stopped"]:
        return summary

    # KL from the reference on held-out prompts (the training prompts when nothing is held out).
    held_out = [pairs[index]["prompt"] for index, _ in (val_part or train_part)][:KL_SAMPLES]
    model.eval()
    if dpo_config.full:
        policy, reference_model = model, load_weights(policy_model_dir).eval()

        def reference(inputs, targets):
            return sequence_logps(reference_model, inputs, targets)[0]
    else:
        # peft injects the adapters into the GPT's own layers: the GPT it wraps samples as the policy.
        policy = model.get_base_model()

        def reference(inputs, targets):
            with model.disable_adapter():
                return sequence_logps(policy, inputs, targets)[0]
    summary["kl"] = estimate_kl(policy, reference, tokenizer, held_out, config.seed)
    atomic_write_text(out_dir / REPORT_FILE, json.dumps({key: summary[key] for key in (
        "val_loss", "val_rewards/accuracies", "val_rewards/margins", "kl", "val_pairs")}))
    return summary
