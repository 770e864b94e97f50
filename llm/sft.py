"""Supervised fine-tuning (SFT): a base model learns to answer in conversations, with a LoRA adapter or
every weight, through the one training loop (`llm.train.train`).

    sft(base_model_dir, data, out_dir, sft_config=..., train_config=...) -> result dict

The data is a list of conversations (each a list of {"role", "content"}, roles system/user/assistant) or
a chat dataset file. Each conversation is rendered with the one chat template and trained on its
assistant tokens only (`llm/chat_batches.py`). The method (`SFTConfig.method`; "auto", the default, is all
weights on a small model and LoRA on a large one: `llm.train_config.choose_method`) decides what the output
directory becomes:

  lora             an adapter directory: adapter_config.json + adapter_model.safetensors (peft's format)
                   + config.json naming the base model (`llm.lora.save_adapter`); it loads with
                   `llm.checkpoint.load_model` like any model.
  full             a full model directory: config.json + model.safetensors.

next to `metrics.jsonl` and the resumable `checkpoint/` (LoRA: the checkpoint holds only the adapter,
its optimizer moments and the data position). The base model's directory is only read.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from llm.chat import has_chat_template
from llm.chat_batches import (IGNORE_INDEX, ConversationBatches, Example, iterate_batches, read_conversations,
                              split_examples, tokenize_conversations)
from llm.checkpoint import ADAPTER_ARCHITECTURE, GPT_ARCHITECTURE, load_weights, read_config
from llm.lora import trainable_parameter_count
from llm.model import GPT
from llm.sft_config import SFTConfig, run_settings, sft_train_config
from llm.tokenizer import get_tokenizer
from llm.train import METRICS_FILE, MetricsLog, TrainConfig, train
from llm.tuned_policy import save_tuned

# Keys of the base's config.json that describe the base itself, not facts a fine-tune inherits
# (hf_vocab_size and preset are inherited: the export needs the first, people read the second).
_OWN_KEYS = ("architecture", "base_model", "model", "tokenizer", "merged_from", "sft")


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Of (N, vocab) logits at the trained positions and their (N,) targets: how many argmaxes are right."""
    return (logits.argmax(dim=-1) == targets).sum()


def answered(targets: torch.Tensor) -> torch.Tensor:
    """The targets of the trained positions, in the order `forward(..., target_logits_only=True)` uses."""
    flat = targets.reshape(-1)
    return flat[flat != IGNORE_INDEX]


class SFTObjective:
    """Cross-entropy on the assistant's tokens (the model's own forward with targets -100 elsewhere, the head
    computed at the answered positions only).

    Extras: `mean_token_accuracy` (TRL's name), the share of assistant tokens the model's argmax gets
    right. `tokens_in` counts every real token of the batch (system, user and assistant; not padding),
    as TRL's `num_tokens` does: the forward pass computes all of them, so tokens/s and MFU measure the
    work done, and padding, which is waste, is not counted as throughput.
    """

    def __init__(self, val_examples: Sequence[Example], batch_size: int, eval_batches: int, pad_id: int):
        self.val_examples = list(val_examples)
        self.batch_size = batch_size
        self.eval_batches = eval_batches
        self.pad_id = pad_id
        if not self.val_examples:
            self.evaluate = None  # train() then skips evaluation

    def loss(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        # The head runs on the answers only (see GPT.forward): prompts and padding have no target.
        logits, loss = model(batch["inputs"], batch["targets"], target_logits_only=True)
        # Before backward: on the CPU, backward turns the logits into their gradient (llm.model.cross_entropy).
        with torch.no_grad():
            targets = answered(batch["targets"])
            accuracy = token_accuracy(logits, targets).float() / max(targets.numel(), 1)
        return loss, {"mean_token_accuracy": accuracy}

    def tokens_in(self, batch: dict) -> int:
        return batch["tokens"]

    def evaluate(self, model: nn.Module) -> dict:
        """val_loss and val_mean_token_accuracy over the first eval_batches batches of the validation
        conversations (always the same ones, so evaluations are comparable), weighted by assistant token."""
        device = next(model.parameters()).device
        loss_sum, correct_sum, counted_sum = 0.0, 0, 0
        for batch in iterate_batches(self.val_examples, self.batch_size, self.pad_id, self.eval_batches):
            inputs, targets = batch["inputs"].to(device), batch["targets"].to(device)
            logits, loss = model(inputs, targets, target_logits_only=True)
            targets = answered(targets)
            loss_sum += loss.item() * targets.numel()
            correct_sum += token_accuracy(logits, targets).item()
            counted_sum += targets.numel()
        return {"val_loss": loss_sum / counted_sum, "val_mean_token_accuracy": correct_sum / counted_sum}


def training_flops_per_token(model: GPT, length: int, full: bool, answered_share: float) -> float:
    """Training FLOPs per real token, for MFU. Matmuls: forward 2N + backward 4N for full fine-tuning; LoRA's
    backward computes the activations' gradients through the frozen matrices (2N) but no weight gradient
    (the adapters' own FLOPs are a few percent: left out). The head (vocab x n_embd) runs only at the
    answered positions, `answered_share` of the tokens; attention as in pretraining (GPT.flops_per_token)."""
    head = model.config.vocab_size * model.config.n_embd
    per_parameter = 6 if full else 4
    matmuls = per_parameter * (model.num_params() - head + head * answered_share)
    return model.flops_per_token(length) - 6 * model.num_params() + matmuls


def chat_base(base_model_dir: Path, out_dir: Path, data_dir: str | os.PathLike | None = None):
    """(config, tokenizer name, tokenizer) of the model a chat fine-tune (SFT, reward, DPO) starts from,
    refusing an output directory that is the model's own and a tokenizer without the chat specials."""
    if out_dir.resolve() == base_model_dir.resolve():
        raise ValueError(f"the output directory {out_dir} is the starting model's own directory; choose another")
    base_config = read_config(base_model_dir)
    tokenizer_name = base_config["tokenizer"]
    tokenizer = get_tokenizer(tokenizer_name, data_dir=data_dir)
    if not has_chat_template(tokenizer):
        raise ValueError(f"tokenizer {tokenizer_name!r} has no chat special tokens (<|im_start|>, <|im_end|>)")
    return base_config, tokenizer_name, tokenizer


def inherited_config(base_model_dir: str | os.PathLike) -> dict:
    return {key: value for key, value in read_config(base_model_dir).items() if key not in _OWN_KEYS}


def sft(base_model_dir: str | os.PathLike, data: str | os.PathLike | list, out_dir: str | os.PathLike, *,
        sft_config: SFTConfig | None = None, train_config: TrainConfig | None = None,
        data_dir: str | os.PathLike | None = None,
        on_metrics: Callable[[dict], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        resume: bool = True, lr_schedule: Callable[[int], float] | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Fine-tune the model in `base_model_dir` (a full model or an adapter, which is merged first) on `data`.

    sft_config: its method "auto" is resolved here when the caller has not (`llm.sft_config.run_settings`).
    train_config: default `llm.sft_config.sft_train_config` (SFT's defaults, the learning rate of the method at
    the model's width). Its block_size
    is the longest conversation kept (capped at the model's context); longer ones are truncated at the end.
    lr_schedule: the rate of each step instead of the config's (the range test's: llm/lr_find.py).
    Returns {"stopped", "step", "loss", "val_loss", "mean_token_accuracy", "val_mean_token_accuracy",
    "tokens_seen", "conversations", "truncated", "dropped", "train_conversations", "val_conversations",
    "trainable_params", "total_params", "model_dir" (None when stopped), "architecture"}.
    """
    sft_config = sft_config or SFTConfig()
    base_model_dir, out_dir = Path(base_model_dir), Path(out_dir)
    base_config, tokenizer_name, tokenizer = chat_base(base_model_dir, out_dir, data_dir)
    sft_config, config = run_settings(sft_config, train_config, base_config["model"], sft_train_config, log)

    # Data first: a dataset with nothing to learn should fail before the model is loaded.
    max_length = min(config.block_size, base_config["model"]["block_size"])
    if max_length < config.block_size:
        log(f"conversations are cut at the model's context of {max_length} tokens (block_size {config.block_size})")
    tokenized = tokenize_conversations(tokenizer, read_conversations(data), max_length)
    train_examples, val_examples = split_examples(tokenized.examples, sft_config.val_fraction, config.seed)
    log(f"{tokenized.conversations:,} conversations: {tokenized.truncated:,} truncated to {max_length + 1} "
        f"tokens, {tokenized.dropped:,} dropped (no assistant token to learn), {len(train_examples):,} for "
        f"training, {len(val_examples):,} for validation")
    if not train_examples:
        raise ValueError("no conversation has an assistant answer to learn from (after truncation to "
                         f"{max_length} tokens)")
    model = load_weights(base_model_dir)
    batches = ConversationBatches(train_examples, config.batch_size, config.seed, tokenizer.eot_id)
    objective = SFTObjective(val_examples, config.batch_size, config.eval_batches, tokenizer.eot_id)

    extra = {**inherited_config(base_model_dir), "chat": True, "sft": asdict(sft_config)}
    answered_share = (sum(int((targets != IGNORE_INDEX).sum()) for _, targets in train_examples)
                      / sum(len(inputs) for inputs, _ in train_examples))
    flops_per_token = training_flops_per_token(model, max_length, sft_config.full, answered_share)
    torch.manual_seed(config.seed)  # the same seed gives the same adapter initialisation
    architecture = GPT_ARCHITECTURE if sft_config.full else ADAPTER_ARCHITECTURE
    if not sft_config.full:
        from llm.lora import apply_lora  # peft is imported only for LoRA runs

        model = apply_lora(model, sft_config)

    def save(trained: nn.Module, directory: Path) -> None:
        save_tuned(trained, directory, full=sft_config.full, start_dir=base_model_dir, tokenizer_name=tokenizer_name,
                   extra=extra)

    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable_count, total_count = trainable_parameter_count(model)
    log(f"{'full fine-tuning' if sft_config.full else f'LoRA r={sft_config.lora_r} on {sft_config.lora_targets}'}: "
        f"{trainable_count:,} trainable parameters of {total_count:,} ({100 * trainable_count / total_count:.2f}%)")

    last_record: dict = {}

    def record_metrics(record: dict) -> None:
        last_record.update(record)
        if on_metrics is not None:
            on_metrics(record)

    result = train(model, objective, batches, config, out_dir, on_metrics=record_metrics, should_stop=should_stop,
                   trainable_params=trainable, flops_per_token=flops_per_token, save_model_fn=save,
                   resume=resume, lr_schedule=lr_schedule, log=log)
    if not last_record:  # resumed a finished run: nothing trained, the records are in the file
        records = MetricsLog(out_dir / METRICS_FILE).read()
        last_record = records[-1] if records else {}
    return {"stopped": result["stopped"], "step": result["step"], "loss": result["loss"],
            "val_loss": result.get("val_loss"), "mean_token_accuracy": last_record.get("mean_token_accuracy"),
            "val_mean_token_accuracy": result.get("val_mean_token_accuracy"),
            "tokens_seen": result["tokens_seen"], "conversations": tokenized.conversations,
            "truncated": tokenized.truncated, "dropped": tokenized.dropped,
            "train_conversations": len(train_examples), "val_conversations": len(val_examples),
            "trainable_params": trainable_count, "total_params": total_count,
            "model_dir": None if result["stopped"] else str(out_dir), "architecture": architecture}
