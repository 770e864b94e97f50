"""Preference pairs as batches (llm/preference_batches.py) and the reward/DPO losses (llm/preference_losses.py):
the prompt is never a target, the score is read at the answer's <|im_end|>, log-probs match a full softmax,
and the losses equal their formulas on numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from llm.chat import end_of_turn_id, render_for_completion
from llm.chat_batches import IGNORE_INDEX
from llm.model import GPT, config_from_preset
from llm.preference_batches import PreferenceBatches, pad_pairs, tokenize_pairs
from llm.preference_losses import dpo_loss, reward_loss, sequence_logps
from llm.tokenizer import get_tokenizer

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


def pair(chosen="Red.", rejected="I would rather not say.", margin=None):
    record = {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": chosen}],
              "rejected": [{"role": "assistant", "content": rejected}]}
    if margin is not None:
        record["margin"] = margin
    return record


def test_targets_are_the_final_answer_only(tokenizer):
    examples = tokenize_pairs(tokenizer, [pair()], max_length=512)
    (example,) = examples.examples
    prompt_length = len(render_for_completion(tokenizer, PROMPT))
    for side, answer in ((example.chosen, "Red."), (example.rejected, "I would rather not say.")):
        inputs, targets = side
        learnt = targets[targets != IGNORE_INDEX].tolist()
        # The answer and its <|im_end|>; "Hello." (an assistant turn inside the prompt) is not learnt.
        assert learnt == tokenizer.encode(answer) + [end_of_turn_id(tokenizer)]
        assert (targets[:prompt_length - 1] == IGNORE_INDEX).all()
        assert inputs[-1] == end_of_turn_id(tokenizer)  # the last input token closes the answer


def test_a_batch_puts_chosen_rows_first_and_knows_where_each_ends(tokenizer):
    pairs = [pair(), pair("Blue, of course.", "No.", margin=1.5)]
    batch = pad_pairs(tokenize_pairs(tokenizer, pairs, 512).examples, pad_id=tokenizer.eot_id)
    assert batch["inputs"].shape[0] == 4 and batch["margin"].tolist() == [0.0, 1.5]
    for row in range(4):
        assert batch["inputs"][row, batch["last"][row]] == end_of_turn_id(tokenizer)
    chosen_second = batch["targets"][1][batch["targets"][1] != IGNORE_INDEX].tolist()
    assert chosen_second[:-1] == tokenizer.encode("Blue, of course.")
    assert batch["tokens"] == int(sum(batch["last"] + 1))


def test_truncation_drops_pairs_with_no_answer_left(tokenizer):
    prompt_length = len(render_for_completion(tokenizer, PROMPT))
    result = tokenize_pairs(tokenizer, [pair()], max_length=prompt_length - 2)
    assert result.examples == [] and result.dropped == 1 and result.truncated == 1


def test_batches_are_seeded_and_resume_where_they_stopped(tokenizer):
    examples = tokenize_pairs(tokenizer, [pair(f"Colour {i}.", f"No {i}.") for i in range(5)], 512).examples
    first = PreferenceBatches(examples, 2, seed=1, pad_id=0)
    batches = [first.next_batch() for _ in range(3)]
    second = PreferenceBatches(examples, 2, seed=1, pad_id=0)
    second.next_batch()
    resumed = PreferenceBatches(examples, 2, seed=1, pad_id=0)
    resumed.load_state_dict(second.state_dict())
    assert torch.equal(resumed.next_batch()["inputs"], batches[1]["inputs"])


def test_sequence_logps_equal_a_full_softmax(tokenizer):
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=128)).eval()
    batch = pad_pairs(tokenize_pairs(tokenizer, [pair(), pair("Green.", "Maybe.")], 127).examples, tokenizer.eot_id)
    with torch.no_grad():
        sums, counts = sequence_logps(model, batch["inputs"], batch["targets"])
        logits, _ = model(batch["inputs"])
        logps = torch.log_softmax(logits.float(), dim=-1)
    targets = batch["targets"]
    mask = targets != IGNORE_INDEX
    expected = (logps.gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2) * mask).sum(dim=1)
    torch.testing.assert_close(sums, expected, rtol=1e-5, atol=1e-4)
    assert counts.tolist() == mask.sum(dim=1).tolist()


def test_sequence_logps_gradients_equal_a_full_softmax(tokenizer):
    # With gradients the chunked target_log_probs computes the head's gradient in the logits' own memory;
    # chosen and rejected rows get gradients of opposite sign, as in DPO: all must equal plain autograd's.
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=128, tie_weights=False))
    batch = pad_pairs(tokenize_pairs(tokenizer, [pair(), pair("Green.", "Maybe.")], 127).examples, tokenizer.eot_id)
    inputs, targets = batch["inputs"], batch["targets"]
    weights = torch.tensor([1.0, -0.5, -2.0, 0.25])
    params = list(model.parameters())
    sums, _ = sequence_logps(model, inputs, targets)
    got = torch.autograd.grad((sums * weights).sum(), params)
    logps = torch.log_softmax(model(inputs)[0].float(), dim=-1)
    mask = targets != IGNORE_INDEX
    expected = (logps.gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2) * mask).sum(dim=1)
    want = torch.autograd.grad((expected * weights).sum(), params)
    torch.testing.assert_close(sums, expected.detach(), rtol=1e-5, atol=1e-4)
    for (name, _), g, w in zip(model.named_parameters(), got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6, msg=name)
    assert got[[name for name, _ in model.named_parameters()].index("lm_head.weight")].abs().sum() > 0


def test_reward_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    loss, metrics = reward_loss(chosen, rejected)
    # differences 1 and -1: (log(1 + e^-1) + log(1 + e^1)) / 2
    assert loss.item() == pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2, rel=1e-6)
    assert metrics["accuracy"].item() == 0.5 and metrics["margin"].item() == 0.0
    assert (metrics["min_reward"].item(), metrics["mean_reward"].item(), metrics["max_reward"].item()) == (0.0, 1.0, 2.0)
    with_margin, _ = reward_loss(chosen, rejected, margin=torch.tensor([1.0, 0.0]))
    assert with_margin.item() == pytest.approx((math.log(2) + math.log1p(math.exp(1))) / 2, rel=1e-6)
    centered, _ = reward_loss(chosen, rejected, center_coefficient=0.01)
    assert centered.item() == pytest.approx(loss.item() + 0.01 * (9 + 1) / 2, rel=1e-6)


def test_dpo_losses_by_hand():
    policy = torch.tensor([-1.0, -3.0])      # chosen, rejected
    reference = torch.tensor([-2.0, -2.0])
    tokens = torch.tensor([2, 4])
    # h = (-1 - -2) - (-3 - -2) = 2
    sigmoid, metrics = dpo_loss(policy, reference, tokens, beta=0.1, loss_type="sigmoid")
    assert sigmoid.item() == pytest.approx(math.log1p(math.exp(-0.2)), rel=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2) and metrics["rewards/accuracies"].item() == 1.0
    assert metrics["logps/chosen"].item() == -1.0 and metrics["logps/rejected"].item() == -3.0
    hinge, _ = dpo_loss(policy, reference, tokens, beta=0.1, loss_type="hinge")
    assert hinge.item() == pytest.approx(0.8)
    # IPO: 1/2 - (-1)/4 = 0.75 per token; (0.75 - 1/(2 * 0.1))^2 = (0.75 - 5)^2
    ipo, _ = dpo_loss(policy, reference, tokens, beta=0.1, loss_type="ipo")
    assert ipo.item() == pytest.approx((0.75 - 5) ** 2)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(policy, reference, tokens, loss_type="kto")
