"""Reward models: a GPT whose last hidden state at the end of an answer goes through a scalar head, trained
with the Bradley–Terry loss on preference pairs, through the one training loop (`llm.train.train`).

    reward(base_model_dir, pairs, out_dir, reward_config=..., train_config=...) -> result dict
    score(reward_model_dir, pairs)           -> accuracy, margins and every pair's two rewards
    load_reward_model(directory)             -> RewardModel (eval mode)
    RewardModel(gpt)(inputs, last)           -> (B,) rewards

The base is a pretrained or SFT model (an adapter is merged first). method "lora" adapts the projections and
trains the new head in full (peft's `modules_to_save`); "full" trains every weight ("auto", the default: all
weights on a small model, LoRA on a large one, `llm.train_config.choose_method`). Either way the output
directory is a full "reward_model" directory (llm/checkpoint.py): the network with the adapter merged in,
plus score.safetensors. A reward model is only ever used to score, and merged it scores at the base's cost.

The score is read at the answer's closing <|im_end|> (the last input token of prompt + answer): by then the
network has seen the whole answer, and the template puts the same token there for every answer.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from llm.atomic_files import atomic_write_text
from llm.chat_batches import IGNORE_INDEX
from llm.checkpoint import (CONFIG_FILE, REWARD_ARCHITECTURE, atomic_save_safetensors,
                            load_weights, read_architecture, read_config, save_model)
from llm.lora import trainable_parameter_count
from llm.model import GPT
from llm.preference_batches import (PairExample, PreferenceBatches, iterate_pair_batches, read_pairs,
                                    tokenize_and_split, tokenize_pairs)
from llm.preference_losses import reward_loss
from llm.reward_config import RewardConfig, reward_train_config
from llm.sft import chat_base, inherited_config, training_flops_per_token
from llm.sft_config import run_settings
from llm.tokenizer import get_tokenizer
from llm.train import TrainConfig, train

SCORE_FILE = "score.safetensors"
REPORT_FILE = "reward_report.json"


class RewardModel(nn.Module):
    """A GPT and a scalar head on its final hidden state at each row's `last` position."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        # No bias: a constant added to every reward cancels in every comparison (as transformers' score heads).
        self.score = nn.Linear(gpt.config.n_embd, 1, bias=False)
        nn.init.normal_(self.score.weight, std=1 / (gpt.config.n_embd + 1) ** 0.5)

    def forward(self, inputs: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        # Only each row's state at `last` is scored, so the final block computes only those rows
        # (GPT.hidden_states): on the tiny preset that is ~40 % of the network's work, on small ~12 %.
        return self.score(self.gpt.hidden_states(inputs, last=last)).squeeze(-1).float()


def save_reward_model(model: RewardModel, out_dir: str | os.PathLike, tokenizer_name: str,
                      extra: dict | None = None) -> Path:
    """The network as a full model directory, the head beside it; config.json (written last) says what it is."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors({"weight": model.score.weight.detach().contiguous().cpu()}, out_dir / SCORE_FILE)
    save_model(model.gpt, out_dir, tokenizer_name, extra=extra)
    config = {**read_config(out_dir), "architecture": REWARD_ARCHITECTURE}
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(config, indent=2))
    return out_dir


def load_reward_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> RewardModel:
    model_dir = Path(model_dir)
    if read_architecture(model_dir) != REWARD_ARCHITECTURE:
        raise ValueError(f"{model_dir} is not a reward model (train one with the reward job or `workbench reward`)")
    model = RewardModel(load_weights(model_dir))
    model.score.load_state_dict(load_file(str(model_dir / SCORE_FILE), device="cpu"))
    return model.to(device).eval()


class RewardObjective:
    """Bradley–Terry on each batch's chosen vs. rejected rewards; TRL's metric names (accuracy, margin,
    min/mean/max_reward). `evaluate` gives val_loss, val_accuracy and val_margin on the held-out pairs."""

    def __init__(self, val_examples: Sequence[PairExample], batch_size: int, eval_batches: int, pad_id: int,
                 center_coefficient: float = 0.0):
        self.val_examples = list(val_examples)
        self.batch_size, self.eval_batches, self.pad_id = batch_size, eval_batches, pad_id
        self.center_coefficient = center_coefficient
        if not self.val_examples:
            self.evaluate = None

    def _loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        chosen, rejected = model(batch["inputs"], batch["last"]).chunk(2)
        margin = batch["margin"] if bool(batch["margin"].any()) else None
        return reward_loss(chosen, rejected, margin, self.center_coefficient)

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        return self._loss(model, batch)

    def tokens_in(self, batch: dict) -> int:
        return batch["tokens"]

    def evaluate(self, model: nn.Module) -> dict:
        device = next(model.parameters()).device
        totals = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0}
        pairs = 0
        for batch in iterate_pair_batches(self.val_examples, self.batch_size, self.pad_id, self.eval_batches):
            batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
            loss, metrics = self._loss(model, batch)
            count = batch["margin"].numel()
            totals["loss"] += loss.item() * count
            totals["accuracy"] += metrics["accuracy"].item() * count
            totals["margin"] += metrics["margin"].item() * count
            pairs += count
        return {f"val_{key}": value / pairs for key, value in totals.items()}


@torch.no_grad()
def pair_rewards(model: RewardModel, examples: Sequence[PairExample], batch_size: int, pad_id: int
                 ) -> tuple[list[float], list[float]]:
    """The chosen and the rejected reward of every pair, in order."""
    device = next(model.parameters()).device
    chosen_all, rejected_all = [], []
    for batch in iterate_pair_batches(examples, batch_size, pad_id):
        rewards = model(batch["inputs"].to(device), batch["last"].to(device))
        chosen, rejected = rewards.chunk(2)
        chosen_all += chosen.tolist()
        rejected_all += rejected.tolist()
    return chosen_all, rejected_all


# Prompt lengths (tokens of the rendered prompt) are grouped by powers of two: the buckets a reward model's
# accuracy is shown by, so one that only works on short prompts shows.
PROMPT_LENGTH_EDGES = (16, 32, 64, 128, 256, 512)


def prompt_length_bucket(tokens: int) -> str:
    """`tokens` as its bucket's name: "17-32 tokens", ..., "over 512 tokens"."""
    lower = 1
    for upper in PROMPT_LENGTH_EDGES:
        if tokens <= upper:
            return f"{lower}-{upper} tokens"
        lower = upper + 1
    return f"over {PROMPT_LENGTH_EDGES[-1]} tokens"


def length_groups(examples: Sequence[PairExample]) -> dict[str, list[str]]:
    """Per example: its prompt's length bucket, and which answer is longer in tokens. A reward model that learned
    "longer wins" is right where the chosen answer is longer and wrong where it is shorter."""
    prompt_buckets, longer = [], []
    for example in examples:
        chosen_targets, rejected_targets = example.chosen[1], example.rejected[1]
        answered = np.flatnonzero(chosen_targets != IGNORE_INDEX)
        prompt_buckets.append(prompt_length_bucket(int(answered[0]) + 1))  # targets are the ids shifted by one
        chosen_length = int((chosen_targets != IGNORE_INDEX).sum())
        rejected_length = int((rejected_targets != IGNORE_INDEX).sum())
        longer.append("chosen" if chosen_length > rejected_length else
                      "rejected" if rejected_length > chosen_length else "neither")
    return {"prompt_length": prompt_buckets, "longer_answer": longer}


def accuracy_report(chosen: list[float], rejected: list[float], groups: dict[str, list[str | None]] | None = None
                    ) -> dict:
    """Accuracy (chosen scored higher) and mean margin overall and per value of each grouping (source, labeler,
    prompt length, longer answer), plus the rewards themselves for a histogram of chosen vs. rejected."""
    def summary(indices: list[int]) -> dict:
        wins = [chosen[i] > rejected[i] for i in indices]
        return {"pairs": len(indices), "accuracy": sum(wins) / len(indices) if indices else None,
                "margin": sum(chosen[i] - rejected[i] for i in indices) / len(indices) if indices else None}

    report = {"overall": summary(list(range(len(chosen)))), "chosen_rewards": chosen, "rejected_rewards": rejected}
    for name, values in (groups or {}).items():
        by_value: dict[str, list[int]] = {}
        for index, value in enumerate(values):
            if value is not None:
                by_value.setdefault(str(value), []).append(index)
        report[f"by_{name}"] = {value: summary(indices) for value, indices in sorted(by_value.items())}
    return report


def _groups(pairs: Sequence[dict], kept: list[int], examples: Sequence[PairExample]) -> dict[str, list]:
    """Per kept pair (and its example): its `source` and `labeler` when the data says (labeling exports and
    snapshots do), its prompt's length bucket and which answer is longer."""
    return {**{key: [pairs[i].get(key) for i in kept] for key in ("source", "labeler")
               if any(pairs[i].get(key) is not None for i in kept)},
            **length_groups(examples)}


def reward(base_model_dir: str | os.PathLike, data: str | os.PathLike | list, out_dir: str | os.PathLike, *,
           reward_config: RewardConfig | None = None, train_config: TrainConfig | None = None,
           data_dir: str | os.PathLike | None = None, on_metrics: Callable[[dict], None] | None = None,
           should_stop: Callable[[], bool] | None = None, resume: bool = True,
           lr_schedule: Callable[[int], float] | None = None, log: Callable[[str], None] = print) -> dict:
    """Train a reward model from the model in `base_model_dir` on preference pairs (a list in the normal form
    of `llm.chat_data.read_preference`, or a preference dataset file). lr_schedule: the rate of each step instead
    of the config's (the range test's: llm/lr_find.py).

    Returns {"stopped", "step", "loss", "val_accuracy", "val_loss", "pairs", "truncated", "dropped",
    "train_pairs", "val_pairs", "trainable_params", "total_params", "model_dir" (None when stopped),
    "architecture", "report" (held-out accuracy overall / by source / by labeler, with the rewards)}.
    """
    reward_config = reward_config or RewardConfig()
    base_model_dir, out_dir = Path(base_model_dir), Path(out_dir)
    base_config, tokenizer_name, tokenizer = chat_base(base_model_dir, out_dir, data_dir)
    reward_config, config = run_settings(reward_config, train_config, base_config["model"], reward_train_config, log)
    pairs = read_pairs(data)
    max_length = min(config.block_size, base_config["model"]["block_size"])
    tokenized, train_part, val_part = tokenize_and_split(tokenizer, pairs, max_length, reward_config.val_fraction,
                                                         config.seed, log)
    train_examples, val_examples = [e for _, e in train_part], [e for _, e in val_part]

    torch.manual_seed(config.seed)  # the same seed gives the same head (and adapter) initialisation
    model: nn.Module = RewardModel(load_weights(base_model_dir))
    flops_per_token = training_flops_per_token(model.gpt, max_length, reward_config.full, answered_share=0.0)
    if not reward_config.full:
        from llm.lora import apply_lora  # peft is imported only for LoRA runs

        model = apply_lora(model, reward_config, modules_to_save=["score"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count, total_count = trainable_parameter_count(model)
    log(f"{'full' if reward_config.full else f'LoRA r={reward_config.lora_r} on {reward_config.lora_targets} + head'}: "
        f"{trainable_count:,} trainable parameters of {total_count:,}")

    extra = {**inherited_config(base_model_dir), "reward": asdict(reward_config),
             "base_model_of_reward": str(base_model_dir.resolve())}

    def save(trained: nn.Module, directory: Path) -> None:
        merged = trained if reward_config.full else trained.merge_and_unload()
        save_reward_model(merged, directory, tokenizer_name, extra=extra)

    objective = RewardObjective(val_examples, config.batch_size, config.eval_batches, tokenizer.eot_id,
                                reward_config.center_rewards_coefficient)
    batches = PreferenceBatches(train_examples, config.batch_size, config.seed, tokenizer.eot_id)
    result = train(model, objective, batches, config, out_dir, on_metrics=on_metrics, should_stop=should_stop,
                   trainable_params=trainable, flops_per_token=flops_per_token, save_model_fn=save,
                   resume=resume, lr_schedule=lr_schedule, log=log)
    summary = {"stopped": result["stopped"], "step": result["step"], "loss": result["loss"],
               "val_loss": result.get("val_loss"), "val_accuracy": result.get("val_accuracy"),
               "pairs": tokenized.pairs, "truncated": tokenized.truncated, "dropped": tokenized.dropped,
               "train_pairs": len(train_examples), "val_pairs": len(val_examples),
               "trainable_params": trainable_count, "total_params": total_count,
               "model_dir": None if result["stopped"] else str(out_dir), "architecture": REWARD_ARCHITECTURE,
               "report": None}
    if result["stopped"]:
        return summary
    # The held-out report, from the saved model (what every later user of it will load).
    scorer = load_reward_model(out_dir)
    report_examples = val_examples or train_examples
    report_indices = [index for index, _ in (val_part or train_part)]
    chosen, rejected = pair_rewards(scorer, report_examples, config.batch_size, tokenizer.eot_id)
    report = {"held_out": bool(val_examples),
              **accuracy_report(chosen, rejected, _groups(pairs, report_indices, report_examples))}
    atomic_write_text(out_dir / REPORT_FILE, json.dumps(report))
    summary["report"] = report
    return summary


def score(reward_model_dir: str | os.PathLike, data: str | os.PathLike | list, batch_size: int = 16,
          data_dir: str | os.PathLike | None = None) -> dict:
    """Accuracy and margins of a reward model on any preference pairs (`workbench score`)."""
    model = load_reward_model(reward_model_dir)
    tokenizer = get_tokenizer(read_config(reward_model_dir)["tokenizer"], data_dir=data_dir)
    pairs = read_pairs(data)
    tokenized = tokenize_pairs(tokenizer, pairs, model.gpt.config.block_size - 1)
    chosen, rejected = pair_rewards(model, tokenized.examples, batch_size, tokenizer.eot_id)
    return {"pairs": tokenized.pairs, "scored": len(chosen), "dropped": tokenized.dropped,
            **accuracy_report(chosen, rejected, _groups(pairs, tokenized.kept, tokenized.examples))}
