"""How well a trained model does on the synthetic tasks of llm/synthetic_tasks.py (torch: models are run).

  format_score        share of prompts answered in the family's format AND ended at the end of the turn
                      (<|im_end|>; a reply cut by the length limit or one that opens a new turn fails)
  property_share      share of sampled answers with a preference rule's property, in one of the family's own
                      sentences (`well_formed`: a garbled answer with the keyword in it does not count); what
                      DPO should raise
  best_of_n_share     share of prompts whose best of N samples (by the reward model) has the property, against
                      the first sample's (what best-of-N should raise)
  pair_accuracy       a reward model's accuracy on held-out pairs (chosen scored above rejected)

The sweep of the default learning rates (bench/sweep_defaults.py) and the learning tests at the defaults
(tests/llm/test_defaults_learn.py) both measure with these, so the bench's table and the tests' bounds mean
the same thing.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from llm.checkpoint import load_model
from llm.chat import end_of_turn_id
from llm.generate import SamplingSettings, chat_prompt, generate_tokens
from llm.synthetic_tasks import follows_format, has_property, well_formed

MAX_ANSWER_TOKENS = 48  # every task answer is well under this in a small BPE; a reply that reaches it ran on


def _replies(model, tokenizer, messages: Sequence[dict], settings: SamplingSettings,
             num_samples: int) -> list[tuple[str, bool]]:
    """(text, ended at the end of the turn) of `num_samples` replies to one conversation."""
    ids, stops = chat_prompt(tokenizer, messages)
    end = end_of_turn_id(tokenizer)
    tokens: list[list[int]] = [[] for _ in range(num_samples)]
    ended = [False] * num_samples
    done = [False] * num_samples
    for step in generate_tokens(model, ids, settings, num_samples, stops | {tokenizer.eot_id},
                                tokenizer.vocab_size):
        for sample, token in enumerate(step.tolist()):
            if done[sample] or token < 0:
                continue
            if token in stops or token == tokenizer.eot_id:
                done[sample], ended[sample] = True, token == end
            else:
                tokens[sample].append(token)
    return [(tokenizer.decode(row), stop) for row, stop in zip(tokens, ended)]


@torch.no_grad()
def format_score(model_dir: str | os.PathLike, prompts: Sequence[Sequence[dict]], family: str) -> dict:
    """Greedy replies to `prompts`: {"share" (in format and ended), "in_format", "ended", "examples"}."""
    torch.manual_seed(0)
    model, tokenizer = load_model(model_dir)
    greedy = SamplingSettings(max_new_tokens=MAX_ANSWER_TOKENS, temperature=0.0)
    replies = [_replies(model, tokenizer, messages, greedy, 1)[0] for messages in prompts]
    in_format = [follows_format(text, family) for text, _ in replies]
    ended = [stop for _, stop in replies]
    count = max(1, len(replies))
    return {"share": sum(f and e for f, e in zip(in_format, ended)) / count, "in_format": sum(in_format) / count,
            "ended": sum(ended) / count, "examples": [text for text, _ in replies[:3]]}


@torch.no_grad()
def property_share(model_dir: str | os.PathLike, prompts: Sequence[Sequence[dict]], family: str, rule: str,
                   samples_per_prompt: int = 4, seed: int = 0, temperature: float = 1.0) -> dict:
    """Sampled replies (temperature 1: the policy's own distribution, as DPO sees it): {"share" well formed with
    the property, "property" (well formed or not), "well_formed", "ended" (ended their turn), "examples"}."""
    model, tokenizer = load_model(model_dir)
    answers: list[tuple[str, bool]] = []
    for index, messages in enumerate(prompts):
        settings = SamplingSettings(max_new_tokens=MAX_ANSWER_TOKENS, temperature=temperature, seed=seed + index)
        answers += _replies(model, tokenizer, messages, settings, samples_per_prompt)
    count = max(1, len(answers))
    good = [has_property(text, family, rule) and well_formed(text, family) for text, _ in answers]
    return {"share": sum(good) / count, "property": sum(has_property(t, family, rule) for t, _ in answers) / count,
            "well_formed": sum(well_formed(text, family) for text, _ in answers) / count,
            "ended": sum(stop for _, stop in answers) / count, "examples": [text for text, _ in answers[:3]]}


@torch.no_grad()
def best_of_n_share(policy_dir: str | os.PathLike, reward_dir: str | os.PathLike,
                    prompts: Sequence[Sequence[dict]], family: str, rule: str, n: int = 8, seed: int = 0,
                    temperature: float = 1.0) -> dict:
    """{"best": share of prompts whose highest-reward sample has the property, "first": the same for the first
    sample alone (what sampling once gives), and "best_well_formed" / "first_well_formed": the same counting only
    well-formed answers}. Best-of-N helps when best > first; it picks among the policy's answers and cannot mend
    them, so the property alone is its measure, and the well-formed shares say what the policy gives it."""
    from llm.best_of_n import best_of_n
    from llm.reward import load_reward_model

    policy, tokenizer = load_model(policy_dir)
    scorer = load_reward_model(reward_dir).eval()
    counts = {"best": 0, "first": 0, "best_well_formed": 0, "first_well_formed": 0}
    for index, messages in enumerate(prompts):
        settings = SamplingSettings(max_new_tokens=MAX_ANSWER_TOKENS, temperature=temperature, seed=seed + index)
        candidates = best_of_n(policy, tokenizer, list(messages), scorer, n, settings)
        for name, text in (("best", candidates[0].text), ("first", next(c.text for c in candidates if c.index == 0))):
            liked = has_property(text, family, rule)
            counts[name] += liked
            counts[f"{name}_well_formed"] += liked and well_formed(text, family)
    return {name: count / max(1, len(prompts)) for name, count in counts.items()}


def pair_accuracy(reward_dir: str | os.PathLike, pairs: list[dict]) -> float:
    """Share of `pairs` whose chosen answer the reward model scores above the rejected one."""
    from llm.reward import score

    return score(reward_dir, pairs)["overall"]["accuracy"]
