"""The policy a preference or RL run tunes (DPO, KTO, GRPO): every weight or a LoRA adapter on the model it starts
from, the reference it is compared with (where it started), and how its directory is written (SFT writes its model
the same way: `save_tuned`).

    policy = start_policy(model, start_dir, config, tokenizer_name, extra)
    policy.model                 what the loop trains: the GPT itself (all weights) or the GPT wrapped by peft
    policy.architecture          what its directory will hold: "gpt" or "lora_adapter" (llm/checkpoint.py)
    policy.policy_of(trained)    the GPT the loop's model holds (peft injects the adapters into the GPT's own layers)
    with policy.reference() as reference:
        ...                      the starting weights: a frozen copy (all weights), or the same network with its
                                 adapter switched off (LoRA: no second model in memory)
    policy.save(trained, directory)

`config` is the run's settings (DPOConfig, KTOConfig, GRPOConfig): its `full` says all weights or LoRA, and for LoRA
its `lora_r`, `lora_alpha`, `lora_targets` shape the adapter (`llm.lora.apply_lora`).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch.nn as nn

from llm.atomic_files import atomic_write_text
from llm.checkpoint import ADAPTER_ARCHITECTURE, GPT_ARCHITECTURE, load_weights, save_model

# A run with all weights keeps its reference's log-probs here, computed once before training (no second model).
REFERENCE_FILE = "reference_logps.json"

# What a LoRA run writes (peft's format); a full run into the same directory removes an earlier LoRA run's.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def save_tuned(trained: nn.Module, directory: str | os.PathLike, *, full: bool, start_dir: str | os.PathLike,
               tokenizer_name: str, extra: dict[str, Any]) -> None:
    """Write a tuned model: all its weights (a model directory of its own), or its LoRA adapter, which loads onto
    the model in `start_dir`."""
    directory = Path(directory)
    if full:
        for name in ADAPTER_FILES:
            (directory / name).unlink(missing_ok=True)
        save_model(trained, directory, tokenizer_name, extra=extra)
    else:
        from llm.lora import save_adapter  # peft is imported only for LoRA runs

        save_adapter(trained, directory, start_dir, tokenizer_name, extra=extra)


@dataclass
class TunedPolicy:
    model: nn.Module
    full: bool
    start_dir: Path
    tokenizer_name: str
    extra: dict[str, Any]
    frozen_start: nn.Module | None = None  # all weights: the starting weights, no gradients, no optimizer state

    @property
    def architecture(self) -> str:
        return GPT_ARCHITECTURE if self.full else ADAPTER_ARCHITECTURE

    def policy_of(self, trained: nn.Module) -> nn.Module:
        return trained if self.full else trained.get_base_model()

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        if self.full:
            yield self.frozen_start.to(next(self.model.parameters()).device)
        else:
            with self.model.disable_adapter():
                yield self.model.get_base_model()

    def save(self, trained: nn.Module, directory: str | os.PathLike) -> None:
        save_tuned(trained, directory, full=self.full, start_dir=self.start_dir, tokenizer_name=self.tokenizer_name,
                   extra=self.extra)


def start_policy(model: nn.Module, start_dir: str | os.PathLike, config: Any, tokenizer_name: str,
                 extra: dict[str, Any]) -> TunedPolicy:
    """The policy `model` (loaded from `start_dir`) becomes for a run with `config`: itself with a frozen copy of its
    starting weights beside it (all weights), or itself with a fresh LoRA adapter (call after seeding: the adapter's
    initialisation draws from torch's generator)."""
    if config.full:
        frozen = load_weights(start_dir).eval().requires_grad_(False)
        return TunedPolicy(model, True, Path(start_dir), tokenizer_name, extra, frozen_start=frozen)
    from llm.lora import apply_lora  # peft is imported only for LoRA runs

    return TunedPolicy(apply_lora(model, config), False, Path(start_dir), tokenizer_name, extra)


def with_stored_reference(out_dir: Path, train: Sequence, val: Sequence, compute: Callable[[Sequence], list],
                          log: Callable[[str], None]) -> tuple[list, list]:
    """The training and validation examples with their reference log-probs (`reference_logps`) attached: read from
    the run's REFERENCE_FILE when an earlier attempt wrote it (a resumed run keeps the untouched model's), else
    computed by `compute(examples)` (the untrained model, before anything trains it) and written there."""
    path = Path(out_dir) / REFERENCE_FILE
    if path.is_file():
        stored = json.loads(path.read_text())
        return ([replace(e, reference_logps=tuple(r)) for e, r in zip(train, stored["train"])],
                [replace(e, reference_logps=tuple(r)) for e, r in zip(val, stored["val"])])
    log("computing the reference log-probabilities once (a run with all weights keeps no second model for them)")
    train, val = compute(train), compute(val)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"train": [e.reference_logps for e in train],
                                        "val": [e.reference_logps for e in val]}))
    return train, val
