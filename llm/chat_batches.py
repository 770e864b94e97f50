"""Conversations -> training batches: render with the chat template, truncate, split, shuffle, pad.

Every conversation becomes one example (no packing): its ids through `llm.chat.render_conversation`,
inputs ids[:-1], targets ids[1:] with -100 wherever the template's loss mask is 0 (system and user
turns, role headers), so only the assistant's content and its <|im_end|> are learnt.

    tokenize_conversations(tokenizer, conversations, max_length) -> Examples (+ how many were truncated/dropped)
    split_examples(examples, val_fraction, seed)                 -> (train, val)
    ConversationBatches(examples, batch_size, seed, pad_id)      -> a resumable BatchSource (llm/train.py)
    pad_batch(examples, pad_id)                                  -> {"inputs", "targets", "tokens"}

A batch is right-padded to its longest conversation; padding is fed as `pad_id` with target -100, and
since attention is causal, padding after a conversation changes none of its logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from llm.chat import render_conversation
from llm.chat_data import read_chat
from llm.tokenizer import Tokenizer

IGNORE_INDEX = -100  # targets the loss skips (F.cross_entropy's and transformers' convention)

Example = tuple[np.ndarray, np.ndarray]  # (inputs, targets), int64, the same length


@dataclass
class Examples:
    examples: list[Example] = field(default_factory=list)
    conversations: int = 0  # conversations read
    truncated: int = 0      # longer than max_length + 1 tokens: cut at the end
    dropped: int = 0        # no assistant token left to learn from (after truncation, or none at all)


def read_conversations(data: str | os.PathLike | Sequence) -> list[list[dict]]:
    """Conversations (lists of {"role", "content"}) from a list, or from a chat dataset file in any format
    the Datasets tab accepts (`llm.chat_data.read_chat`, which refuses a bad line by number).

    A list may hold conversations or {"messages": conversation} records.
    """
    if isinstance(data, (list, tuple)):
        return [item["messages"] if isinstance(item, dict) else list(item) for item in data]
    return read_chat(data)


def tokenize_conversations(tokenizer: Tokenizer, conversations: Sequence[Sequence[dict]],
                           max_length: int) -> Examples:
    """Render each conversation; keep at most max_length + 1 ids (inputs and targets are max_length long)."""
    result = Examples(conversations=len(conversations))
    for messages in conversations:
        ids, mask = render_conversation(tokenizer, messages)
        if len(ids) > max_length + 1:
            result.truncated += 1
            ids, mask = ids[:max_length + 1], mask[:max_length + 1]
        ids_array = np.asarray(ids, dtype=np.int64)
        learn = np.asarray(mask[1:], dtype=bool)
        if not learn.any():
            result.dropped += 1
            continue
        targets = np.where(learn, ids_array[1:], IGNORE_INDEX)
        result.examples.append((ids_array[:-1], targets))
    return result


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded random split; at least one validation example when val_fraction > 0 and there are two or more."""
    if val_fraction <= 0 or len(examples) < 2:
        return list(examples), []
    count = min(max(1, round(len(examples) * val_fraction)), len(examples) - 1)
    order = np.random.default_rng(seed).permutation(len(examples))
    val_indices = set(order[:count].tolist())
    train = [example for index, example in enumerate(examples) if index not in val_indices]
    val = [example for index, example in enumerate(examples) if index in val_indices]
    return train, val


def pad_batch(examples: Sequence[Example], pad_id: int) -> dict:
    """Right-pad to the longest example: inputs (B, T) and targets (B, T) as int64 tensors, plus `tokens`,
    the number of real (non-padding) input tokens."""
    length = max(len(inputs) for inputs, _ in examples)
    inputs = np.full((len(examples), length), pad_id, dtype=np.int64)
    targets = np.full((len(examples), length), IGNORE_INDEX, dtype=np.int64)
    for row, (example_inputs, example_targets) in enumerate(examples):
        inputs[row, :len(example_inputs)] = example_inputs
        targets[row, :len(example_targets)] = example_targets
    return {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets),
            "tokens": sum(len(example_inputs) for example_inputs, _ in examples)}


def iterate_batches(examples: Sequence[Example], batch_size: int, pad_id: int,
                    max_batches: int | None = None) -> Iterator[dict]:
    """The examples in order, batch_size at a time (the last batch may be smaller): for evaluation."""
    for number, start in enumerate(range(0, len(examples), batch_size)):
        if max_batches is not None and number >= max_batches:
            return
        yield pad_batch(examples[start:start + batch_size], pad_id)


class ConversationBatches:
    """Endless batches of `batch_size` examples: each epoch visits every example once in a seeded order.

    A batch that crosses the end of an epoch is filled from the next one, so every batch has the same
    number of conversations. Its state (epoch, position) goes into checkpoints: a resumed run continues
    with exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, examples: list, batch_size: int, seed: int, pad_id: int,
                 collate: Callable[[Sequence, int], dict] | None = None):
        if not examples:
            raise ValueError("no conversations to train on")
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        # How picked examples become a batch: conversations by default; preference pairs bring their own.
        self.collate = collate or pad_batch
        self.epoch = 0
        self.position = 0
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order_epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        return self._order

    def _next_indices(self) -> list[int]:
        picked = []
        while len(picked) < self.batch_size:
            if self.position == len(self.examples):
                self.epoch, self.position = self.epoch + 1, 0
            picked.append(int(self._order_of(self.epoch)[self.position]))
            self.position += 1
        return picked

    def next_batch(self) -> dict:
        return self.collate([self.examples[index] for index in self._next_indices()], self.pad_id)

    def skip_batch(self) -> None:
        """Move past one batch without padding it: another rank trains on it (llm/distributed.py)."""
        self._next_indices()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "examples": len(self.examples)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("examples", len(self.examples)) != len(self.examples):
            raise ValueError(f"the checkpoint was written for {state['examples']} training conversations, "
                             f"this data has {len(self.examples)}: start fresh with resume=False")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
