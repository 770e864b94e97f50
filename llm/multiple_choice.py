"""Multiple-choice benchmarks, scored the way lm-evaluation-harness scores HellaSwag and ARC.

A benchmark is JSON Lines, one question a line (read by `llm.chat_data.read_benchmark`):
    {"question": str, "choices": [str, ...], "answer": index of the right choice, "context": str (optional)}

Nothing is generated. For each choice the model scores the log-likelihood of the choice's tokens as the
continuation of the question, summed over those tokens, and the question counts as answered by the most
likely choice:
  - acc       argmax of the summed log-likelihoods;
  - acc_norm  argmax of the summed log-likelihood divided by the choice's length in characters (lm-eval's
              `acc_norm`: without it, long choices lose only because they have more tokens to pay for);
each with its standard error over the questions (sample standard deviation / sqrt(n), lm-eval's `mean_stderr`).

What the model reads:
  - a base model: the context and the question on lines of their own, continued by " " + the choice (lm-eval's
    target delimiter; its tokens are those of the whole string cut at the prompt, since a space-led choice
    starts a new word);
  - a chat model (`llm.checkpoint.is_chat_model`: SFT on the chat template): the context and question as the
    user's message rendered for completion (`llm.chat.render_for_completion`), the choice as the start of the
    assistant's answer: exactly the ids `render_conversation` gives that answer, without its end-of-turn.
A prompt longer than the model's context loses its oldest tokens, never the choice's (as lm-eval cuts it).

The settings are `llm.evaluate_config.EvaluateConfig`'s. The choices of every question are scored in batches
of `batch_size` rows, longest first so that a batch pads little; the language-model head runs only where a
choice's token is predicted (`llm.preference_losses.sequence_logps`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from llm.chat import has_chat_template, render_for_completion
from llm.chat_batches import IGNORE_INDEX
from llm.device import autocast_context, pick_device
from llm.evaluate_config import EvaluateConfig
from llm.preference_losses import sequence_logps
from llm.tokenizer import Tokenizer

TARGET_DELIMITER = " "  # between a base model's prompt and each choice, as lm-eval's default


def question_text(question: dict) -> str:
    """What the model is asked: the context (if any) and the question, each on its own line."""
    parts = [question["context"], question["question"]] if question.get("context") else [question["question"]]
    return "\n".join(parts).rstrip()  # the delimiter (or the template) supplies what separates the answer


def choice_requests(tokenizer: Tokenizer, question: dict, chat: bool) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) of each of the question's choices, in order."""
    text = question_text(question)
    if chat:
        prompt = render_for_completion(tokenizer, [{"role": "user", "content": text}])
        return [(prompt, tokenizer.encode(choice)) for choice in question["choices"]]
    prompt = tokenizer.encode(text)
    return [(prompt, tokenizer.encode(TARGET_DELIMITER + choice)) for choice in question["choices"]]


def _row(prompt: list[int], continuation: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one request cut to the model's context from the left; targets are the continuation's
    tokens where they are predicted and IGNORE_INDEX elsewhere."""
    tokens = (prompt + continuation)[-(block_size + 1):]
    inputs, targets = tokens[:-1], tokens[1:]
    scored = min(len(continuation), len(targets))
    return inputs, [IGNORE_INDEX] * (len(targets) - scored) + targets[len(targets) - scored:]


@torch.no_grad()
def continuation_loglikelihoods(model: nn.Module, requests: Sequence[tuple[list[int], list[int]]],
                                batch_size: int, device: torch.device | str) -> list[float]:
    """The summed log-probability of each request's continuation given its prompt, in the requests' order."""
    rows = [_row(prompt, continuation, model.config.block_size) for prompt, continuation in requests]
    order = sorted(range(len(rows)), key=lambda index: -len(rows[index][0]))
    loglikelihoods = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(rows[index][0]) for index in chunk)
        inputs = torch.zeros((len(chunk), width), dtype=torch.long)  # right-padded: padding is never attended
        targets = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
        for position, index in enumerate(chunk):
            row_inputs, row_targets = rows[index]
            inputs[position, :len(row_inputs)] = torch.tensor(row_inputs)
            targets[position, :len(row_targets)] = torch.tensor(row_targets)
        sums, _ = sequence_logps(model, inputs.to(device), targets.to(device))
        for position, value in zip(chunk, sums.tolist()):
            loglikelihoods[position] = value
    return loglikelihoods


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda index: values[index])  # the first of equals, as numpy's


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error (sample standard deviation / sqrt(n)); None for fewer than 2 values."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    variance = sum((value - mean) ** 2 for value in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def score_questions(model: nn.Module, tokenizer: Tokenizer, questions: Sequence[dict],
                    config: EvaluateConfig, chat: bool, device: torch.device | str,
                    dtype: str = "auto") -> dict:
    """acc and acc_norm (± stderr) of a loaded model on `questions` (normal form of `read_benchmark`).

    Returns {"questions", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "chat", "predictions"}, the last
    one per question: {"loglikelihoods", "choice" (acc's pick), "choice_norm" (acc_norm's), "answer"}.
    """
    if config.max_questions is not None:
        questions = questions[:config.max_questions]
    if not questions:
        raise ValueError("the benchmark holds no questions")
    if chat and not has_chat_template(tokenizer):
        raise ValueError(f"tokenizer {tokenizer.name!r} has no chat template tokens; score it as a base model")
    requests = [request for question in questions for request in choice_requests(tokenizer, question, chat)]
    was_training = model.training
    model.eval()
    try:
        with autocast_context(device, dtype):
            loglikelihoods = continuation_loglikelihoods(model, requests, config.batch_size, device)
    finally:
        model.train(was_training)
    predictions, start = [], 0
    for question in questions:
        choices = question["choices"]
        scores = loglikelihoods[start:start + len(choices)]
        start += len(choices)
        per_character = [score / len(choice) for score, choice in zip(scores, choices)]
        predictions.append({"loglikelihoods": scores, "choice": _argmax(scores),
                            "choice_norm": _argmax(per_character), "answer": question["answer"]})
    acc, acc_stderr = mean_and_stderr([float(p["choice"] == p["answer"]) for p in predictions])
    acc_norm, acc_norm_stderr = mean_and_stderr([float(p["choice_norm"] == p["answer"]) for p in predictions])
    return {"questions": len(questions), "acc": acc, "acc_stderr": acc_stderr, "acc_norm": acc_norm,
            "acc_norm_stderr": acc_norm_stderr, "chat": chat, "predictions": predictions}


def evaluate_benchmark(model_dir: str | os.PathLike, benchmark: str | os.PathLike | Sequence[dict],
                       config: EvaluateConfig | None = None, *, device: str = "auto", dtype: str = "auto",
                       data_dir: str | os.PathLike | None = None) -> dict:
    """Load a model directory (full model or adapter) and score it on a benchmark file or its questions."""
    from llm.chat_data import read_benchmark
    from llm.checkpoint import is_chat_model, load_model

    config = config or EvaluateConfig()
    questions = read_benchmark(benchmark) if isinstance(benchmark, (str, os.PathLike)) else list(benchmark)
    device = pick_device(device)
    model, tokenizer = load_model(Path(model_dir), device, data_dir=data_dir)
    chat = config.chat if config.chat is not None else is_chat_model(model_dir)
    return score_questions(model, tokenizer, questions, config, chat, device, dtype)
