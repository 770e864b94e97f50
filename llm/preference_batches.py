"""Preference pairs -> training batches for reward models and DPO: one prompt, a chosen and a rejected answer.

Each pair is rendered twice with the one chat template (`llm.chat`): prompt + chosen, prompt + rejected.
As in SFT, inputs are ids[:-1] and targets ids[1:], but the targets are kept only on the *final* answer
(its content and <|im_end|>): an assistant turn inside a multi-turn prompt is context, never loss.

    tokenize_pairs(tokenizer, pairs, max_length) -> PairExamples (+ how many were truncated/dropped)
    pad_pairs(examples, pad_id)                  -> one batch, chosen rows first, then rejected rows
    PreferenceBatches(examples, batch_size, seed, pad_id)  -> a resumable BatchSource (llm/train.py)

A batch holds the B chosen sequences and then the B rejected ones in a single (2B, T) tensor, so a
model sees both in one forward pass (what TRL calls the concatenated forward):

    inputs   (2B, T) right-padded with pad_id     targets (2B, T), -100 outside the final answers
    last     (2B,)   index of each row's last real input token: the <|im_end|> that closes the answer,
                     where a reward model reads its score
    margin   (B,)    the data's margin per pair (0 when it has none)
    reference_logps (2B,)  the reference model's answer log-probs, when the examples carry them (full DPO)
    tokens   int     real (non-padding) input tokens in the batch

Pairs are {"prompt": [messages], "chosen": [assistant messages], "rejected": [...], "margin"?}, the normal
form `llm.chat_data.read_preference` returns for every preference format the Datasets tab accepts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from llm.chat import render_conversation, render_for_completion
from llm.chat_batches import IGNORE_INDEX, ConversationBatches, Example
from llm.chat_data import read_preference
from llm.tokenizer import Tokenizer


@dataclass(frozen=True)
class PairExample:
    chosen: Example
    rejected: Example
    margin: float = 0.0
    # The reference model's summed answer log-probs (chosen, rejected), when computed ahead (full DPO).
    reference_logps: tuple[float, float] | None = None


@dataclass
class PairExamples:
    examples: list[PairExample] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # the index, among the pairs read, of each example
    pairs: int = 0       # pairs read
    truncated: int = 0   # a side longer than max_length + 1 tokens: cut at the end
    dropped: int = 0     # a side with no answer token left after truncation


def read_pairs(data: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """Pairs in the normal form from a list of them, or from a preference dataset file (any accepted format)."""
    if isinstance(data, (list, tuple)):
        return list(data)
    return read_preference(data)


def _answer_example(tokenizer: Tokenizer, prompt: list[dict], answer: list[dict], prompt_length: int,
                    max_length: int) -> tuple[Example | None, bool]:
    """(inputs, targets) of prompt + answer with targets on the answer only; None when nothing is left to learn."""
    ids, mask = render_conversation(tokenizer, list(prompt) + list(answer))
    truncated = len(ids) > max_length + 1
    if truncated:
        ids, mask = ids[:max_length + 1], mask[:max_length + 1]
    ids_array = np.asarray(ids, dtype=np.int64)
    learn = np.asarray(mask, dtype=bool)
    learn[:prompt_length] = False  # earlier assistant turns are part of the prompt
    learn = learn[1:]
    if not learn.any():
        return None, truncated
    return (ids_array[:-1], np.where(learn, ids_array[1:], IGNORE_INDEX)), truncated


def tokenize_pairs(tokenizer: Tokenizer, pairs: Sequence[dict], max_length: int) -> PairExamples:
    """Render every pair; each side keeps at most max_length + 1 ids."""
    result = PairExamples(pairs=len(pairs))
    for index, pair in enumerate(pairs):
        prompt = list(pair["prompt"])
        prompt_length = len(render_for_completion(tokenizer, prompt))
        chosen, cut_chosen = _answer_example(tokenizer, prompt, pair["chosen"], prompt_length, max_length)
        rejected, cut_rejected = _answer_example(tokenizer, prompt, pair["rejected"], prompt_length, max_length)
        result.truncated += cut_chosen or cut_rejected
        if chosen is None or rejected is None:
            result.dropped += 1
            continue
        result.examples.append(PairExample(chosen, rejected, float(pair.get("margin", 0.0))))
        result.kept.append(index)
    return result


def tokenize_and_split(tokenizer: Tokenizer, pairs: Sequence[dict], max_length: int, val_fraction: float,
                       seed: int, log=print) -> tuple[PairExamples, list[tuple[int, PairExample]],
                                                      list[tuple[int, PairExample]]]:
    """Tokenize, then a seeded train/held-out split of (index of the pair read, example); logs the counts.
    Raises ValueError when no pair is left to train on."""
    from llm.chat_batches import split_examples

    tokenized = tokenize_pairs(tokenizer, pairs, max_length)
    train_part, val_part = split_examples(list(zip(tokenized.kept, tokenized.examples)), val_fraction, seed)
    log(f"{tokenized.pairs:,} pairs: {tokenized.truncated:,} truncated to {max_length + 1} tokens, "
        f"{tokenized.dropped:,} dropped (no answer token left), {len(train_part):,} for training, "
        f"{len(val_part):,} held out")
    if not train_part:
        raise ValueError(f"no preference pair has an answer left to learn from (after truncation to {max_length} "
                         "tokens)")
    return tokenized, train_part, val_part


def pad_pairs(examples: Sequence[PairExample], pad_id: int) -> dict:
    """One batch: the chosen sides, then the rejected sides, right-padded to the longest (see the docstring)."""
    rows = [example.chosen for example in examples] + [example.rejected for example in examples]
    length = max(len(inputs) for inputs, _ in rows)
    inputs = np.full((len(rows), length), pad_id, dtype=np.int64)
    targets = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
    for row, (row_inputs, row_targets) in enumerate(rows):
        inputs[row, :len(row_inputs)] = row_inputs
        targets[row, :len(row_targets)] = row_targets
    batch = {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets),
             "last": torch.tensor([len(row_inputs) - 1 for row_inputs, _ in rows], dtype=torch.int64),
             "margin": torch.tensor([example.margin for example in examples], dtype=torch.float32),
             "tokens": sum(len(row_inputs) for row_inputs, _ in rows)}
    if all(example.reference_logps is not None for example in examples):
        batch["reference_logps"] = torch.tensor([e.reference_logps[0] for e in examples]
                                                + [e.reference_logps[1] for e in examples], dtype=torch.float32)
    return batch


def iterate_pair_batches(examples: Sequence[PairExample], batch_size: int, pad_id: int,
                         max_batches: int | None = None):
    """The pairs in order, batch_size at a time: for evaluation."""
    for number, start in enumerate(range(0, len(examples), batch_size)):
        if max_batches is not None and number >= max_batches:
            return
        yield pad_pairs(examples[start:start + batch_size], pad_id)


class PreferenceBatches(ConversationBatches):
    """Endless, seeded, resumable batches of `batch_size` pairs (ConversationBatches' order and state)."""

    def __init__(self, examples: list[PairExample], batch_size: int, seed: int, pad_id: int):
        if not examples:
            raise ValueError("no preference pairs to train on")
        super().__init__(examples, batch_size, seed, pad_id, collate=pad_pairs)
