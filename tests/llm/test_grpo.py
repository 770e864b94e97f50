"""GRPO (llm/grpo.py) in pieces: advantages within groups, each loss type's aggregation, the answers' log-probs
against a plain forward, the G answers of a prompt sharing one prefill, a step's prompts sampled together as each
alone, sampling through merged LoRA adapters restoring the weights exactly, and a run interrupted and resumed equal to
the uninterrupted one. Parity with TRL: test_grpo_parity.py; learning at the defaults: test_defaults_learn.py."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from llm.generate import chat_prompt
from llm.grpo import (AGGREGATIONS, PromptExample, answer_logps, group_advantages, grpo, grpo_loss, sample_answers,
                      sample_groups)
from llm.grpo_config import GRPOConfig, grpo_train_config
from llm.model import GPT, config_from_preset
from llm.tokenizer import get_tokenizer
from tests.support.polite import quiet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_advantages_are_relative_to_the_group_and_zero_where_it_scored_the_same():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    advantages, same = group_advantages(rewards, 4)
    assert advantages[0] > 0 and (advantages[1:4] < 0).all() and torch.allclose(advantages[4:], torch.zeros(4))
    assert same.tolist() == [False] * 4 + [True] * 4
    assert abs(float(advantages[:4].sum())) < 1e-6
    unscaled, _ = group_advantages(rewards, 4, "none")
    assert torch.allclose(unscaled[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_each_loss_type_aggregates_as_declared():
    per_token = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(AGGREGATIONS["grpo"](per_token, mask, 3)) == pytest.approx((1.5 + 3.0) / 2)
    assert float(AGGREGATIONS["bnpo"](per_token, mask, 3)) == pytest.approx(6.0 / 3)
    assert float(AGGREGATIONS["dapo"](per_token, mask, 3)) == pytest.approx(6.0 / 3)
    assert float(AGGREGATIONS["dr_grpo"](per_token, mask, 3)) == pytest.approx(6.0 / (2 * 3))


def test_the_loss_pushes_up_answers_that_beat_their_group():
    logps = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]], requires_grad=True)
    mask = torch.ones(2, 2)
    loss, metrics = grpo_loss(logps, logps.detach(), None, torch.tensor([1.0, -1.0]), mask,
                              GRPOConfig(max_completion_length=2))
    loss.backward()
    assert (logps.grad[0] < 0).all() and (logps.grad[1] > 0).all()  # descent raises the first answer's log-prob
    assert float(metrics["clip_ratio/region_mean"]) == 0.0 and "kl" not in metrics


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    tokenizer = get_tokenizer("gpt2")
    return GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)).eval(), tokenizer


def test_answer_log_probs_equal_a_plain_forward_at_the_temperature(tiny):
    model, _ = tiny
    rows = [[5, 6, 7, 8, 9], [5, 6, 10, 11, 12, 13, 14], [20, 21, 22]]
    starts = [3, 2, 1]
    with torch.no_grad():
        logps, mask = answer_logps(model, rows, starts, pad_id=0, temperature=0.7)
        for index, (row, start) in enumerate(zip(rows, starts)):
            logits, _ = model(torch.tensor([row[:-1]]))
            expected = F.log_softmax(logits[0].float() / 0.7, dim=-1)[torch.arange(len(row) - 1), torch.tensor(row[1:])]
            answer = expected[start - 1:]
            assert int(mask[index].sum()) == len(answer)
            assert torch.allclose(logps[index, :len(answer)], answer, atol=1e-5)


def test_the_answers_of_a_prompt_share_one_prefill_and_are_reproducible(tiny):
    model, tokenizer = tiny
    messages = [{"role": "user", "content": "Say something."}]
    ids, stops = chat_prompt(tokenizer, messages)
    example = PromptExample(messages, ids, None)
    config = GRPOConfig(max_completion_length=6)
    calls = []
    hook = model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    try:
        answers = sample_answers(model, tokenizer, example, 4, config, 3, stops, [])
    finally:
        hook.remove()
    assert calls[0] == (1, len(ids)) and all(shape == (4, 1) for shape in calls[1:])  # one prefill, then 4 rows
    again = sample_answers(model, tokenizer, example, 4, config, 3, stops, [])
    assert [a.ids for a in answers] == [a.ids for a in again] and len({tuple(a.ids) for a in answers}) > 1


def test_the_prompts_of_a_step_sampled_together_answer_as_each_sampled_alone(tiny):
    model, tokenizer = tiny
    contents = ["Say something.", "Name three colours of the rainbow, please.", "Hi"]
    conversations = [[{"role": "user", "content": content}] for content in contents]
    examples = [PromptExample(messages, chat_prompt(tokenizer, messages)[0], None) for messages in conversations]
    stops = chat_prompt(tokenizer, examples[0].messages)[1]
    config = GRPOConfig(max_completion_length=8)
    calls = []
    hook = model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    try:
        together = sample_groups(model, tokenizer, examples, 4, config, [3, 4, 5], stops, [])
    finally:
        hook.remove()
    longest = max(len(example.ids) for example in examples)
    assert calls[0] == (3, longest) and all(shape == (12, 1) for shape in calls[1:])  # one left-padded prefill
    alone = [sample_answers(model, tokenizer, example, 4, config, seed, stops, [])
             for example, seed in zip(examples, [3, 4, 5])]
    assert [[a.ids for a in group] for group in together] == [[a.ids for a in group] for group in alone]


def test_sampling_through_merged_adapters_leaves_the_weights_as_they_were(tiny):
    import copy

    from llm.lora import adapters_merged, apply_lora

    policy = apply_lora(copy.deepcopy(tiny[0]), GRPOConfig(method="lora", lora_dropout=0.0)).eval()
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    model = policy.get_base_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    idx = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        adapted, _ = model(idx)
        with adapters_merged(model):
            merged, _ = model(idx)
        after, _ = model(idx)
    assert torch.allclose(merged, adapted, atol=1e-5) and torch.equal(after, adapted)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_an_interrupted_and_resumed_run_equals_the_uninterrupted_one(base_dir, tmp_path):
    from safetensors.torch import load_file

    records = [{"prompt": f"Count to {i}.", "answer": str(i)} for i in range(10)]
    config = GRPOConfig(method="full", num_generations=2, max_completion_length=6, verifier="regex", pattern="[aeiou]",
                        eval_prompts=2, beta=0.1)
    train_config = grpo_train_config(config, 64, max_steps=4, batch_size=2, block_size=64, eval_every=2,
                                     checkpoint_every=0, device="cpu")
    whole = grpo(base_dir, records, tmp_path / "whole", grpo_config=config, train_config=train_config, log=quiet)
    asked = []
    stopped = grpo(base_dir, records, tmp_path / "parts", grpo_config=config, train_config=train_config, log=quiet,
                   should_stop=lambda: asked.append(1) or len(asked) >= 2)
    assert stopped["stopped"] and stopped["step"] == 2
    resumed = grpo(base_dir, records, tmp_path / "parts", grpo_config=config, train_config=train_config, log=quiet)
    assert resumed["loss"] == whole["loss"] and resumed["val_reward"] == whole["val_reward"]
    for a, b in zip(load_file(str(tmp_path / "whole" / "model.safetensors")).values(),
                    load_file(str(tmp_path / "parts" / "model.safetensors")).values()):
        assert torch.equal(a, b)
    report = json.loads((tmp_path / "parts" / "grpo_report.json").read_text())
    assert [e["step"] for e in report["evaluations"]] == [2, 4]
