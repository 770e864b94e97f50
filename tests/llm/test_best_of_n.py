"""Best-of-N (llm/best_of_n.py): answers are scored as the reward model was trained, best first, and with a
reward model of the preference rule, best-of-8 answers follow the rule more often than single samples."""

from __future__ import annotations

import pytest
import torch

from llm.best_of_n import best_of_n, score_answers
from llm.chat import render_conversation
from llm.checkpoint import load_model
from llm.generate import SamplingSettings
from llm.reward import RewardModel, load_reward_model, reward
from llm.reward_config import RewardConfig
from llm.tokenizer import get_tokenizer
from tests.support.polite import HELD_OUT, is_polite, polite_pairs, quiet, small_run, train_mixed_sft

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_answers_are_scored_at_their_closing_token(base_dir):
    tokenizer = get_tokenizer("gpt2")
    torch.manual_seed(1)
    scorer = RewardModel(load_model(base_dir)[0]).eval()
    messages = [{"role": "user", "content": "Name a colour."}]
    answers = ["Red.", "A rather long answer about blue."]
    scores = score_answers(scorer, tokenizer, messages, answers)
    for answer, got in zip(answers, scores):
        ids, _ = render_conversation(tokenizer, messages + [{"role": "assistant", "content": answer}])
        inputs = torch.tensor([ids[:-1]])
        expected = scorer(inputs, torch.tensor([inputs.size(1) - 1])).item()
        assert got == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="from 1 to 16"):
        best_of_n(scorer.gpt, tokenizer, messages, scorer, 17, SamplingSettings())


@pytest.mark.slow
def test_best_of_8_follows_the_preference_more_often(base_dir, tmp_path):
    sft_dir = train_mixed_sft(base_dir, tmp_path / "sft")
    reward(sft_dir, polite_pairs(200, 3), tmp_path / "rm", reward_config=RewardConfig(val_fraction=0.1),
           train_config=small_run(max_steps=150, batch_size=8, lr=3e-3, eval_every=0), log=quiet)
    policy, tokenizer = load_model(sft_dir)
    scorer = load_reward_model(tmp_path / "rm")
    single = best = 0
    for index, prompt in enumerate(HELD_OUT):
        settings = SamplingSettings(max_new_tokens=16, temperature=1.0, seed=2000 + index)
        candidates = best_of_n(policy, tokenizer, prompt, scorer, 8, settings)
        assert [c.reward for c in candidates] == sorted((c.reward for c in candidates), reverse=True)
        single += is_polite(tokenizer, next(c.text for c in candidates if c.index == 0))
        best += is_polite(tokenizer, candidates[0].text)
    print(f"polite: single sample {single}/{len(HELD_OUT)}, best of 8 {best}/{len(HELD_OUT)}")
    # With ~55 % polite single samples, 8 draws almost always hold a polite one and a reward model at ~95 %
    # accuracy picks it: 20 points more is a loose bound for that.
    assert best - single >= 0.2 * len(HELD_OUT)
