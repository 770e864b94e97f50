"""Unpaired feedback -> training batches for KTO: single answers, each marked good (desirable) or bad.

Each example is rendered with the one chat template (`llm.chat`) as prompt + answer, targets on the final answer
only (its content and <|im_end|>), exactly as a side of a DPO pair (`llm.preference_batches`).

KTO's reference point, the KL between the policy and the reference, is estimated from *mismatched* prompt-answer
pairs (TRL: "KL completions"): each example also carries its prompt with another example's answer. TRL rotates the
answers by one within each fixed batch of the data; here every training example gets a fixed partner when the data
is tokenized, the next one in a seeded cyclic order (a derangement: never its own answer), so the partner is the
same whatever batch the example lands in. That is what lets full KTO compute the reference's log-probs of both
sequences once before training and a resumed run see the same pairs. Both estimate the same quantity, the
expected log-ratio of answers to prompts they were not written for.

    read_feedback_items(data)                       -> items {"prompt", "completion", "label"} (any source)
    tokenize_feedback(tokenizer, items, max_length)  -> FeedbackExamples (+ truncated / dropped counts)
    pad_feedback(examples, pad_id)                   -> one batch (below)
    FeedbackBatches(examples, batch_size, seed, pad_id)  -> a resumable BatchSource (llm/train.py)

A batch of B examples:
    inputs, targets (2B, T)  the B examples' sequences, then their B mismatched (KL) sequences, right-padded
    label   (B,) bool        True: a desirable answer
    reference_logps (2B,)    the reference's summed answer log-probs of those 2B rows, when precomputed (full KTO)
    tokens  int              real input tokens of the B examples (what is trained on)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from llm.chat import render_for_completion
from llm.chat_batches import IGNORE_INDEX, ConversationBatches, Example
from llm.preference_batches import _answer_example
from llm.tokenizer import Tokenizer


@dataclass(frozen=True)
class FeedbackExample:
    example: Example           # prompt + its own answer
    mismatched: Example        # prompt + another example's answer: for the KL estimate
    label: bool
    # The reference's summed answer log-probs of (example, mismatched), when computed ahead (full KTO).
    reference_logps: tuple[float, float] | None = None


@dataclass
class FeedbackExamples:
    examples: list[FeedbackExample] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # the index, among the items read, of each example
    items: int = 0
    truncated: int = 0
    dropped: int = 0


def unpair(pairs: Sequence[dict]) -> list[dict]:
    """Preference pairs as unpaired feedback (TRL's `unpair_preference_dataset`): the chosen answer desirable, the
    rejected one undesirable, each with the pair's prompt and its other keys (source, ids)."""
    items = []
    for pair in pairs:
        extra = {key: value for key, value in pair.items() if key not in ("prompt", "chosen", "rejected", "margin")}
        items.append({**extra, "prompt": pair["prompt"], "completion": pair["chosen"], "label": True})
        items.append({**extra, "prompt": pair["prompt"], "completion": pair["rejected"], "label": False})
    return items


def read_feedback_items(data: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """Items in the normal form {"prompt", "completion", "label"} from a list of them (or of preference pairs,
    unpaired), or from a file: a feedback dataset (TRL's unpaired format), or a preference one, unpaired."""
    if isinstance(data, (list, tuple)):
        items = list(data)
        return unpair(items) if items and "chosen" in items[0] else items
    from llm.chat_data import read_feedback, read_preference
    from llm.dataset_kind import looks_like

    return unpair(read_preference(data)) if looks_like(data) == "preference" else read_feedback(data)


def class_counts(items: Sequence[dict]) -> tuple[int, int]:
    """(desirable, undesirable) answers among the items."""
    desirable = sum(1 for item in items if item["label"])
    return desirable, len(items) - desirable


def tokenize_feedback(tokenizer: Tokenizer, items: Sequence[dict], max_length: int, seed: int) -> FeedbackExamples:
    """Render every item (prompt + answer, at most max_length + 1 ids) and give each kept one its mismatched
    partner: the next kept example's answer in a seeded cyclic order."""
    result = FeedbackExamples(items=len(items))
    rendered = []  # (index, prompt, prompt_length, example)
    for index, item in enumerate(items):
        prompt = list(item["prompt"])
        prompt_length = len(render_for_completion(tokenizer, prompt))
        example, truncated = _answer_example(tokenizer, prompt, item["completion"], prompt_length, max_length)
        result.truncated += truncated
        if example is None:
            result.dropped += 1
            continue
        rendered.append((index, prompt, prompt_length, example))
    if not rendered:
        return result
    order = np.random.default_rng([seed, 7]).permutation(len(rendered)).tolist()
    partner_of = {order[position]: order[(position + 1) % len(order)] for position in range(len(order))}
    for position, (index, prompt, prompt_length, example) in enumerate(rendered):
        partner = items[rendered[partner_of[position]][0]]
        mismatched, _ = _answer_example(tokenizer, prompt, partner["completion"], prompt_length, max_length)
        if mismatched is None:  # the prompt leaves no room for the partner's answer: its own stands in
            mismatched = example
        result.examples.append(FeedbackExample(example, mismatched, bool(items[index]["label"])))
        result.kept.append(index)
    return result


def pad_feedback(examples: Sequence[FeedbackExample], pad_id: int) -> dict:
    """One batch: the examples' rows, then their mismatched rows, right-padded to the longest (module docstring)."""
    rows = [e.example for e in examples] + [e.mismatched for e in examples]
    length = max(len(inputs) for inputs, _ in rows)
    inputs = np.full((len(rows), length), pad_id, dtype=np.int64)
    targets = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
    for row, (row_inputs, row_targets) in enumerate(rows):
        inputs[row, :len(row_inputs)] = row_inputs
        targets[row, :len(row_targets)] = row_targets
    batch = {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets),
             "label": torch.tensor([e.label for e in examples], dtype=torch.bool),
             "tokens": sum(len(e.example[0]) for e in examples)}
    if all(e.reference_logps is not None for e in examples):
        batch["reference_logps"] = torch.tensor([e.reference_logps[0] for e in examples]
                                                + [e.reference_logps[1] for e in examples], dtype=torch.float32)
    return batch


def iterate_feedback_batches(examples: Sequence[FeedbackExample], batch_size: int, pad_id: int,
                             max_batches: int | None = None):
    """The examples in order, batch_size at a time: for evaluation and the reference's precomputation."""
    for number, start in enumerate(range(0, len(examples), batch_size)):
        if max_batches is not None and number >= max_batches:
            return
        yield pad_feedback(examples[start:start + batch_size], pad_id)


class FeedbackBatches(ConversationBatches):
    """Endless, seeded, resumable batches of `batch_size` examples (ConversationBatches' order and state)."""

    def __init__(self, examples: list[FeedbackExample], batch_size: int, seed: int, pad_id: int):
        if not examples:
            raise ValueError("no feedback examples to train on")
        super().__init__(examples, batch_size, seed, pad_id, collate=pad_feedback)
