"""Parity with TRL 1.x GRPOTrainer: on identical weights, prompts, sampled answers and rewards, our GRPO advantages,
loss and metrics equal TRL's within 1e-5.

One tiny GPT (random weights, biases and LayerNorms randomised) is exported with `llm.hf_gpt2.to_hf_gpt2`. The
answers are sampled once by our policy (llm/grpo.py `sample_answers`, one prefill per prompt) and handed to TRL in
place of its own generation (`_generate` patched to return them), with the rewards through a reward function that
returns ours. TRL then computes the advantages and the reward metrics (`_generate_and_score_completions`) and the
loss (`_compute_loss`) on its own model; we compute ours on our GPT. The two prompts render to the same number of
tokens, so TRL's left padding adds no padding (GPT-2's positions would shift under it, ours never pad prompts).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from bench.bench_sft import hf_tokenizer  # noqa: E402  (GPT-2's BPE + our ChatML specials, built offline)
from llm.grpo import (GRPOObjective, PromptExample, Rewards, answer_logps, group_advantages,  # noqa: E402
                      grpo_loss, sample_answers)
from llm.grpo_config import GRPO_LOSSES, GRPOConfig  # noqa: E402
from llm.hf_gpt2 import to_hf_gpt2  # noqa: E402
from llm.model import GPT, config_from_preset  # noqa: E402
from llm.chat import end_of_turn_id  # noqa: E402
from llm.generate import chat_prompt  # noqa: E402
from llm.tokenizer import get_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-5
G = 4
ANSWER_TOKENS = 12
PROMPTS = [[{"role": "user", "content": "Name a colour of the sky."}],
           [{"role": "user", "content": "Name a shape of the moon."}]]
REWARDS = [1.0, 0.0, 0.5, 0.0,   # a group with a spread
           1.0, 1.0, 1.0, 1.0]   # a group that scored all the same: advantage 0, counted in frac_reward_zero_std
METRICS = ("reward", "reward_std", "frac_reward_zero_std")


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def gpt(tokenizer):
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def sampled(gpt, tokenizer):
    """The prompts as examples and G answers each, sampled once by our policy."""
    examples = [PromptExample(messages, chat_prompt(tokenizer, messages)[0], None) for messages in PROMPTS]
    assert len({len(example.ids) for example in examples}) == 1
    config = GRPOConfig(method="full", num_generations=G, max_completion_length=ANSWER_TOKENS, verifier="exact")
    objective = GRPOObjective(config, tokenizer, Rewards(config, tokenizer), examples, 0, lambda m: m, None)
    answers = [answer for index, example in enumerate(examples)
               for answer in sample_answers(gpt, tokenizer, example, G, config, 7 + index, objective.stops,
                                            objective.banned)]
    # A random model never ends its turn: end most answers early at <|im_end|>, so answers have several lengths
    # and TRL's padding and masks are exercised (the same answers go to both sides).
    im_end = end_of_turn_id(tokenizer)
    for index, answer in enumerate(answers[:-1]):
        answer.ids = answer.ids[:2 + index] + [im_end]
    assert len({len(answer.ids) for answer in answers}) > 1
    return examples, answers


def trl_trainer(model, tmp_path, peft_config=None, **settings):
    args = trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, fp16=False, report_to="none",
                          save_strategy="no", disable_tqdm=True, activation_checkpointing=False, num_generations=G,
                          per_device_train_batch_size=G * len(PROMPTS), max_completion_length=ANSWER_TOKENS,
                          **settings)
    dataset = datasets.Dataset.from_list([{"prompt": messages} for messages in PROMPTS])

    def our_rewards(prompts, completions, **kwargs):
        return list(REWARDS)

    return trl.GRPOTrainer(model=model, reward_funcs=[our_rewards], args=args, train_dataset=dataset,
                           processing_class=hf_tokenizer(), peft_config=peft_config)


def trl_inputs(trainer, examples, answers) -> dict:
    """TRL's batch from its own scoring step, its generation replaced by our answers."""
    def generate(prompts):
        prompt_ids = [examples[i // G].ids for i in range(len(answers))]
        return (prompt_ids, [a.ids for a in answers], None, [a.text for a in answers], None, {}, None, None)

    trainer._generate = generate
    trainer.current_gradient_accumulation_steps = 1  # what Trainer.training_step sets before the loss
    trainer.model.train()  # dropout is 0; train mode files the metrics under "train"
    trainer._metrics["train"].clear()
    inputs = [{"prompt": PROMPTS[i // G]} for i in range(len(answers))]
    with torch.no_grad():
        return trainer._generate_and_score_completions(inputs)


def ours(policy, reference_model, examples, answers, config):
    rows = [examples[i // G].ids + a.ids for i, a in enumerate(answers)]
    starts = [len(examples[i // G].ids) for i in range(len(answers))]
    with torch.no_grad():
        rewards = torch.tensor(REWARDS)
        advantages, same = group_advantages(rewards, G, config.scale_rewards)
        logps, mask = answer_logps(policy, rows, starts, 50256, config.temperature)
        reference = answer_logps(reference_model, rows, starts, 50256, config.temperature)[0] \
            if reference_model is not None else None
        loss, metrics = grpo_loss(logps, logps, reference, advantages, mask, config)
    metrics.update({"reward": rewards.mean(), "reward_std": rewards.std(), "frac_reward_zero_std": same.float().mean()})
    return advantages, loss, metrics


def close(a, b) -> bool:
    return abs(float(a) - float(b)) <= TOLERANCE * max(1.0, abs(float(b)))


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_and_reward_metrics_match_trl(gpt, sampled, tmp_path, scale_rewards):
    examples, answers = sampled
    trainer = trl_trainer(to_hf_gpt2(gpt), tmp_path, scale_rewards=scale_rewards)
    inputs = trl_inputs(trainer, examples, answers)
    config = GRPOConfig(method="full", num_generations=G, max_completion_length=ANSWER_TOKENS,
                        scale_rewards=scale_rewards)
    advantages, _, metrics = ours(gpt, None, examples, answers, config)
    assert torch.allclose(advantages, inputs["advantages"], atol=TOLERANCE)
    for name in METRICS:
        assert close(metrics[name], trainer._metrics["train"][name][-1]), name
    # TRL's answers are ours, token for token, and so is what it scores of them.
    assert torch.equal(inputs["completion_mask"].sum(1), torch.tensor([len(a.ids) for a in answers]))


@pytest.mark.parametrize("loss_type", GRPO_LOSSES)
def test_loss_matches_trl_with_all_weights_and_a_kl_penalty(gpt, sampled, tmp_path, loss_type):
    """All weights, beta 0.1: TRL's reference model is the exported start, ours its frozen copy; the policy has
    moved away from it (the same perturbation on both sides), so the KL term is real."""
    examples, answers = sampled
    beta = 0.1
    policy = copy.deepcopy(gpt)
    torch.manual_seed(4)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    start_dir = tmp_path / "start"
    to_hf_gpt2(gpt).save_pretrained(start_dir)
    trainer = trl_trainer(str(start_dir), tmp_path / "trl", loss_type=loss_type, beta=beta, epsilon_high=0.28)
    trainer.model.load_state_dict(to_hf_gpt2(policy).state_dict())
    inputs = trl_inputs(trainer, examples, answers)
    with torch.no_grad():
        trl_loss = float(trainer._compute_loss(trainer.model, inputs))
    config = GRPOConfig(method="full", num_generations=G, max_completion_length=ANSWER_TOKENS, loss_type=loss_type,
                        beta=beta, epsilon_high=0.28)
    _, loss, metrics = ours(policy, gpt, examples, answers, config)
    assert close(loss, trl_loss), (float(loss), trl_loss)
    assert close(metrics["kl"], trainer._metrics["train"]["kl"][-1])
    assert float(metrics["kl"]) > 1e-4
    assert close(metrics["clip_ratio/region_mean"], trainer._metrics["train"]["clip_ratio/region_mean"][-1])


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_lora_loss_matches_trl_with_the_adapter_switched_off_as_reference(gpt, sampled, tmp_path, loss_type):
    from peft import LoraConfig

    from llm.lora import apply_lora, target_modules

    examples, answers = sampled
    config = GRPOConfig(num_generations=G, max_completion_length=ANSWER_TOKENS, loss_type=loss_type, beta=0.2,
                        lora_r=4, lora_alpha=8.0, lora_dropout=0.0, temperature=0.7)
    torch.manual_seed(1)
    policy = apply_lora(copy.deepcopy(gpt), config)
    with torch.no_grad():  # a trained adapter: policy and reference differ
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    peft_config = LoraConfig(r=4, lora_alpha=8.0, lora_dropout=0.0, target_modules=target_modules(config.lora_targets),
                             fan_in_fan_out=True, bias="none", task_type="CAUSAL_LM")
    trainer = trl_trainer(to_hf_gpt2(gpt), tmp_path, peft_config=peft_config, loss_type=loss_type, beta=0.2,
                          temperature=0.7)
    assert trainer.ref_model is None
    theirs = dict(trainer.model.named_parameters())
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_" in name:
                theirs[name.replace(".blocks.", ".transformer.h.")].copy_(param)
    inputs = trl_inputs(trainer, examples, answers)
    with torch.no_grad():
        trl_loss = float(trainer._compute_loss(trainer.model, inputs))

    @contextmanager
    def switched_off():
        with policy.disable_adapter():
            yield policy

    rows = [examples[i // G].ids + a.ids for i, a in enumerate(answers)]
    starts = [len(examples[i // G].ids) for i in range(len(answers))]
    with torch.no_grad(), switched_off() as reference_model:
        reference = answer_logps(reference_model, rows, starts, 50256, 0.7)[0]
    with torch.no_grad():
        logps, mask = answer_logps(policy, rows, starts, 50256, 0.7)
        advantages, _ = group_advantages(torch.tensor(REWARDS), G)
        loss, metrics = grpo_loss(logps, logps, reference, advantages, mask, config)
    assert close(loss, trl_loss), (float(loss), trl_loss)
    assert close(metrics["kl"], trainer._metrics["train"]["kl"][-1])
    assert float(metrics["kl"]) > 1e-4
