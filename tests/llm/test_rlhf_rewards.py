"""GRPO against a reward model (RLHF) in pieces: the penalty on answers cut at the length limit (a reward model
scores a cut answer as if it had ended), and the simulated labeler that turns a policy's own answers into preference pairs
(bench/sweep_grpo.py --rlhf, where the reward models of docs/defaults.md's "GRPO against a reward model" come from)."""

from __future__ import annotations

from llm.grpo import Answer, Rewards
from llm.grpo_config import GRPOConfig


def test_an_answer_cut_at_the_length_limit_loses_the_missing_eos_penalty():
    config = GRPOConfig(verifier="contains", missing_eos_penalty=3.0)
    rewards = Rewards(config, tokenizer=None)
    answers = [Answer([1, 2], "cat.", clipped=False), Answer([1, 2, 3], "cat cat cat", clipped=True)]
    totals, parts = rewards.score([{"role": "user", "content": "?"}], "cat", answers)
    assert totals == [1.0, -2.0]
    assert parts["missing_eos"] == [0.0, -3.0] and "missing_eos" in rewards.names
    assert "missing_eos" not in Rewards(GRPOConfig(verifier="contains"), tokenizer=None).names  # 0: no penalty


def test_the_rule_labels_a_policys_own_answers_into_pairs():
    from bench.sweep_grpo import rule_pairs

    prompt = [{"role": "user", "content": "Do you know what a pebble is?"}]
    good, plain, garbled = ("Look at the pebble, thank you kindly.", "Look at the pebble, whatever.",
                            "Look at pebble thank kindly")
    pairs = rule_pairs([prompt, prompt], [[(good, True), (plain, True), (garbled, True)], [(plain, True)]],
                       "test", "polite", seed=0)
    # Each answer the rule does not prefer, garbled or not, against a preferred one; a prompt with none gives none.
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [(good, plain),
                                                                                        (good, garbled)]
