"""Reward models (llm/reward.py): saved and loaded whole, resumable, and they learn a preference rule.

The rule: of two answers that say the same thing, the one with a polite word (please, kindly, ...) is
preferred over the one with a pushy word (now, hurry, ...), eight of each, drawn at random per pair and put at
the same random place in both answers, so neither length nor position gives it away. A random network scores
a pair by which of the two words happens to weigh more, which is right about half the time over many pairs;
to pass, the model has to learn that every polite word outweighs every pushy one."""

from __future__ import annotations

import pytest
import torch

from llm.checkpoint import load_model, read_architecture
from llm.model import GPT, config_from_preset
from llm.reward import RewardModel, load_reward_model, reward, score
from llm.reward_config import RewardConfig
from llm.tokenizer import get_tokenizer
from tests.support.polite import polite_pairs, small_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_reward_model_is_saved_whole_and_refused_for_chat(base_dir, tmp_path):
    result = reward(base_dir, polite_pairs(16, 0), tmp_path / "rm", train_config=small_run(), log=lambda _: None)
    assert result["architecture"] == "reward_model" and read_architecture(tmp_path / "rm") == "reward_model"
    scorer = load_reward_model(tmp_path / "rm")
    assert isinstance(scorer, RewardModel)
    with pytest.raises(ValueError, match="reward model"):
        load_model(tmp_path / "rm")
    # score() on a file-like list gives the same accuracy the report computed for those pairs.
    scored = score(tmp_path / "rm", polite_pairs(8, 1))
    assert scored["scored"] == 8 and 0.0 <= scored["overall"]["accuracy"] <= 1.0
    assert set(scored["by_source"]) == {"upload"}
    assert set(scored["by_prompt_length"]) == {"17-32 tokens"}  # "What should I do with ...?" in the template
    assert sum(group["pairs"] for group in scored["by_longer_answer"].values()) == 8


def test_a_reward_model_that_learned_longer_wins_shows_on_its_report_card(tmp_path):
    """Scored by answer length (what a reward model that learned "longer wins" does), pairs whose chosen answer is
    the longer one are all right and the others all wrong: the card's rows by longer answer say so, beside
    accuracy by prompt length and the two score histograms."""
    import json

    from llm.preference_batches import tokenize_pairs
    from llm.reward import accuracy_report, length_groups
    from worker.kinds.reward.card import run_report

    tokenizer = get_tokenizer("gpt2")
    pairs = []
    for index in range(12):
        question = "Why?" if index % 3 else "Why is the sky blue on a clear day, and grey on most other days here? " * 2
        long, short = "Because light scatters off the air, blue most of all.", "Air."
        chosen, rejected = (long, short) if index % 2 == 0 else (short, long)
        pairs.append({"prompt": [{"role": "user", "content": question}],
                      "chosen": [{"role": "assistant", "content": chosen}],
                      "rejected": [{"role": "assistant", "content": rejected}]})
    examples = tokenize_pairs(tokenizer, pairs, 200).examples
    lengths = [(int((e.chosen[1] >= 0).sum()), int((e.rejected[1] >= 0).sum())) for e in examples]
    report = {"held_out": True, **accuracy_report([float(c) for c, _ in lengths], [float(r) for _, r in lengths],
                                                  length_groups(examples))}
    assert report["by_longer_answer"] == {"chosen": {"pairs": 6, "accuracy": 1.0, "margin": 11.0},
                                          "rejected": {"pairs": 6, "accuracy": 0.0, "margin": -11.0}}
    assert {bucket: group["pairs"] for bucket, group in report["by_prompt_length"].items()} == {
        "1-16 tokens": 8, "33-64 tokens": 4}
    (tmp_path / "reward_report.json").write_text(json.dumps(report))
    rows = dict(run_report(tmp_path))
    assert rows["accuracy where the chosen answer is longer"] == "100.0% of 6 pairs"
    assert rows["accuracy where the rejected answer is longer"] == "0.0% of 6 pairs"
    assert list(rows)[2:4] == ["accuracy, prompts of 1-16 tokens", "accuracy, prompts of 33-64 tokens"]
    chosen_bars = rows["held-out scores of chosen answers (16 bins from 3.00 to 14.00)"]
    rejected_bars = rows["held-out scores of rejected answers (same bins)"]
    # Both hold the same two scores (3 and 14 tokens, six of each): a bar at each end, nothing between.
    assert chosen_bars == rejected_bars == "█" + "·" * 14 + "█"


@pytest.mark.parametrize("method", ["lora", "full"])
def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(base_dir, tmp_path, method):
    from safetensors.torch import load_file

    full = method == "full"
    config = small_run(grad_accum=2, lr=1e-3 if full else 1e-2)
    reward_config = RewardConfig(method=method, lora_dropout=0.1, lora_r=4)
    pairs = polite_pairs(24, 2)
    whole = reward(base_dir, pairs, tmp_path / "whole", reward_config=reward_config, train_config=config,
                   log=lambda _: None)
    asked = []
    stopped = reward(base_dir, pairs, tmp_path / "parts", reward_config=reward_config, train_config=config,
                     should_stop=lambda: asked.append(1) or len(asked) >= 2, log=lambda _: None)
    assert stopped["stopped"] and stopped["step"] == 2 and stopped["model_dir"] is None
    resumed = reward(base_dir, pairs, tmp_path / "parts", reward_config=reward_config, train_config=config,
                     log=lambda _: None)
    assert resumed["loss"] == whole["loss"] and resumed["val_loss"] == whole["val_loss"]
    for name in ("score.safetensors", "model.safetensors"):
        expected, actual = load_file(tmp_path / "whole" / name), load_file(tmp_path / "parts" / name)
        assert all(torch.equal(expected[key], actual[key]) for key in expected)


@pytest.mark.slow
def test_the_reward_model_learns_the_preference_rule(base_dir, tmp_path):
    pairs = polite_pairs(200, 3)
    config = small_run(max_steps=150, batch_size=8, lr=3e-3, eval_every=50, eval_batches=10, log_every=10)
    result = reward(base_dir, pairs, tmp_path / "rm", reward_config=RewardConfig(method="lora", val_fraction=0.2),
                    train_config=config, log=lambda _: None)
    report = result["report"]
    assert report["held_out"] and report["overall"]["pairs"] == 40
    # >= 95 % of 40 held-out pairs (at most 2 wrong): the deciding word is visible in the answer, so anything
    # less means the rule was not learnt. Measured on three model seeds: 100 %, 97.5 %, 100 % after training,
    # 65 %, 57.5 %, 60 % untrained (near chance, checked below).
    assert report["overall"]["accuracy"] >= 0.95, report["overall"]
    assert report["by_source"]["upload"]["pairs"] == 40
    untrained = reward(base_dir, pairs, tmp_path / "untrained",
                       reward_config=RewardConfig(method="lora", val_fraction=0.2),
                       train_config=small_run(max_steps=1, lr=1e-9), log=lambda _: None)
    assert 0.2 < untrained["report"]["overall"]["accuracy"] < 0.8, untrained["report"]["overall"]


def test_the_score_reads_the_full_pass_at_each_rows_last_token_values_and_gradients():
    # RewardModel runs the final block only at each row's `last` position (GPT.hidden_states(last=...)):
    # the rewards and every gradient must be those of the full (B, T) pass read at `last`, padding included.
    # In float64, so that the check is of the arithmetic and not of float32 summation order (the two passes
    # multiply matrices of different shapes, which sum in different orders: a gradient entry near zero then
    # differs by ~1e-6 in float32, depending on the machine's thread count).
    torch.manual_seed(0)
    gpt = GPT(config_from_preset("tiny", 300, n_layer=3, block_size=32))
    model = RewardModel(gpt).double()
    inputs = torch.randint(0, 300, (4, 20))
    last = torch.tensor([19, 4, 0, 11])  # rows 1-3 end early: what follows is padding

    def full_pass_rewards():
        hidden = gpt.hidden_states(inputs)
        return model.score(hidden[torch.arange(4), last]).squeeze(-1).float()  # as forward returns it

    weights = torch.tensor([1.0, -2.0, 0.5, 3.0])
    rewards = model(inputs, last)
    expected = full_pass_rewards()
    torch.testing.assert_close(rewards, expected, rtol=1e-5, atol=1e-6)
    params = [p for p in model.parameters()]
    got = torch.autograd.grad((rewards * weights).sum(), params, allow_unused=True)
    want = torch.autograd.grad((full_pass_rewards() * weights).sum(), params, allow_unused=True)
    for name, g, w in zip([n for n, _ in model.named_parameters()], got, want):
        assert (g is None) == (w is None), name
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12, msg=name)
    final_fc = next(i for i, p in enumerate(params) if p is gpt.blocks[-1].mlp.c_fc.weight)
    assert got[final_fc].abs().sum() > 0  # the final block is trained
