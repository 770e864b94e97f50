"""Best-of-N: sample N answers that share one prefill, score each with a reward model, keep the best.

    best_of_n(policy, tokenizer, messages, reward_model, n, settings) -> [Candidate], best first

The N answers come from one `generate_text(..., num_samples=N)` call: the prompt is prefilled once and
its KV cache copied to the N samples (llm/generate.py), so N answers cost one prompt pass plus N
continuations. Each answer is then scored as the reward model was trained: prompt + answer rendered
with the chat template, the score read at the answer's closing <|im_end|>.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from llm.chat import render_conversation, with_system_prompt
from llm.generate import SamplingSettings, chat_prompt, generate_text
from llm.preference_batches import PairExample, pad_pairs
from llm.reward import RewardModel

MAX_N = 16


@dataclass(frozen=True)
class Candidate:
    text: str
    reward: float
    index: int  # which sample it was (its seed is settings.seed's index-th)


@torch.no_grad()
def score_answers(reward_model: RewardModel, tokenizer, messages: Sequence[dict], answers: Sequence[str]) -> list[float]:
    """The reward of each answer to the conversation `messages`."""
    block = reward_model.gpt.config.block_size
    rows = []
    for answer in answers:
        ids, _ = render_conversation(tokenizer, list(messages) + [{"role": "assistant", "content": answer}])
        ids = ids[:block + 1]
        rows.append((torch.tensor(ids[:-1]), torch.tensor(ids[1:])))
    # pad_pairs pads pairs: pair each answer with itself and score the first half of the rows.
    batch = pad_pairs([PairExample(row, row) for row in rows], pad_id=tokenizer.eot_id)
    half = len(rows)
    device = next(reward_model.parameters()).device
    rewards = reward_model(batch["inputs"][:half].to(device), batch["last"][:half].to(device))
    return rewards.tolist()


def best_of_n(policy: torch.nn.Module, tokenizer, messages: Sequence[dict], reward_model: RewardModel, n: int,
              settings: SamplingSettings, system_prompt: str | None = None) -> list[Candidate]:
    """N sampled answers with their rewards, best first (ties keep sampling order)."""
    if not 1 <= n <= MAX_N:
        raise ValueError(f"best-of-N takes N from 1 to {MAX_N}, got {n}")
    ids, stops = chat_prompt(tokenizer, messages, system_prompt)
    answers = generate_text(policy, tokenizer, ids, settings, num_samples=n, stop_ids=stops)
    rewards = score_answers(reward_model, tokenizer, with_system_prompt(messages, system_prompt), answers)
    candidates = [Candidate(text, reward, index) for index, (text, reward) in enumerate(zip(answers, rewards))]
    return sorted(candidates, key=lambda c: (-c.reward, c.index))
