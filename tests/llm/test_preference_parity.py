"""Parity with TRL 1.x: on the same weights and the same batch, our DPO losses and metrics equal `trl.DPOTrainer`'s,
and our reward-model loss and metrics equal `trl.RewardTrainer`'s, within 1e-5.

One tiny GPT (random weights, biases and LayerNorms randomised so a mis-mapped tensor shows) is exported with
`llm.hf_gpt2.to_hf_gpt2`. The batch is ours (`llm.preference_batches.pad_pairs`, chosen rows then rejected
rows); TRL gets the same token ids with `completion_mask` marking exactly the tokens our targets score (the
final answer's content and its <|im_end|>), so the two sides sum the same log-probabilities.

DPO is checked on both reference setups of `llm.dpo`: full weights (our reference log-probs computed ahead by
`precompute_reference`; TRL with a separate `ref_model`) and LoRA (our reference is the adapter switched off;
TRL's too, through peft), with a non-zero adapter copied from our side to TRL's so policy and reference differ.
"""

from __future__ import annotations

import copy

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from bench.bench_preference import PAD_ID, trl_dpo_inputs  # noqa: E402  (our batch in TRL's DPO layout)
from bench.bench_sft import hf_tokenizer  # noqa: E402  (GPT-2's BPE + our ChatML specials, built offline)
from llm.chat_batches import IGNORE_INDEX  # noqa: E402
from llm.dpo import DPOObjective, precompute_reference  # noqa: E402
from llm.dpo_config import DPO_LOSSES, DPOConfig  # noqa: E402
from llm.hf_gpt2 import to_hf_gpt2  # noqa: E402
from llm.lora import apply_lora, target_modules  # noqa: E402
from llm.model import GPT, config_from_preset  # noqa: E402
from llm.preference_batches import pad_pairs, tokenize_pairs  # noqa: E402
from llm.reward import RewardModel, RewardObjective  # noqa: E402
from llm.tokenizer import get_tokenizer  # noqa: E402

TOLERANCE = 1e-5
DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
               "logps/rejected")
REWARD_METRICS = ("accuracy", "margin", "min_reward", "mean_reward", "max_reward")
BETA = 0.3
PAIRS = [
    {"prompt": [{"role": "user", "content": "Name a colour of the sky."}],
     "chosen": [{"role": "assistant", "content": "Blue, on a clear day."}],
     "rejected": [{"role": "assistant", "content": "No."}], "margin": 0.5},
    {"prompt": [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is two plus two?"},
                {"role": "assistant", "content": "Four."},
                {"role": "user", "content": "And three plus three?"}],
     "chosen": [{"role": "assistant", "content": "Six."}],
     "rejected": [{"role": "assistant", "content": "Seven, I think, but let me count again slowly."}],
     "margin": 1.0},
    {"prompt": [{"role": "user", "content": "Write a word that rhymes with cat."}],
     "chosen": [{"role": "assistant", "content": "Hat."}],
     "rejected": [{"role": "assistant", "content": "Dog is a word too."}], "margin": 0.0},
]


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def batch(tokenizer):
    tokenized = tokenize_pairs(tokenizer, PAIRS, max_length=100)
    assert len(tokenized.examples) == len(PAIRS)
    return pad_pairs(tokenized.examples, tokenizer.eot_id), tokenized.examples


@pytest.fixture(scope="module")
def gpt(tokenizer):
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", tokenizer.vocab_size))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def hf_tokenizer_fixture():
    return hf_tokenizer()


def preference_dataset():
    return datasets.Dataset.from_list([{key: pair[key] for key in ("prompt", "chosen", "rejected")}
                                       for pair in PAIRS])


def trl_args(config_class, tmp_path, **settings):
    return config_class(output_dir=str(tmp_path), use_cpu=True, bf16=False, fp16=False, report_to="none",
                        activation_checkpointing=False, save_strategy="no", disable_tqdm=True, **settings)


def trl_dpo_loss(trainer, inputs: dict, loss_type: str, rpo_alpha: float = 0.0) -> tuple[float, dict]:
    """TRL's loss and the metrics `_compute_loss` records, for one loss type (set as DPOConfig would set it); with
    `rpo_alpha`, TRL 1.x's RPO: the "sft" loss added with that weight (TRL 0.x called the weight rpo_alpha)."""
    trainer.loss_types, trainer.loss_weights = [loss_type], [1.0]
    if rpo_alpha:
        trainer.loss_types, trainer.loss_weights = [loss_type, "sft"], [1.0, rpo_alpha]
    trainer._metrics["train"].clear()
    trainer.model.train()  # dropout is 0: train mode only makes TRL file the metrics under "train"
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, {key: value.clone() for key, value in inputs.items()})
    return float(loss), {name: trainer._metrics["train"][name][-1] for name in DPO_METRICS}


def assert_same(ours_loss, ours_metrics: dict, trl_loss: float, trl_metrics: dict, names) -> None:
    """Equal within TOLERANCE, relative above 1: summed log-probs reach -80, where float32's spacing is ~8e-6."""
    assert abs(float(ours_loss) - trl_loss) <= TOLERANCE * max(1.0, abs(trl_loss)), (float(ours_loss), trl_loss)
    for name in names:
        assert abs(float(ours_metrics[name]) - trl_metrics[name]) <= TOLERANCE * max(1.0, abs(trl_metrics[name])), (
            name, ours_metrics[name], trl_metrics[name])


def test_the_exported_model_computes_our_logits(gpt):
    """`to_hf_gpt2` (every vocabulary row kept): transformers' GPT-2 computes what our GPT computes."""
    ids = torch.randint(0, gpt.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, _ = gpt(ids)
        theirs = to_hf_gpt2(gpt)(ids).logits
    assert theirs.shape == ours.shape and (theirs - ours).abs().max() < 1e-4


def test_trl_inputs_score_the_same_tokens_as_our_targets(batch):
    """The translation itself: TRL's labels (input_ids where completion_mask is 1, shifted) are our targets."""
    ours, _ = batch
    inputs = trl_dpo_inputs(ours)
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, IGNORE_INDEX)[:, 1:]
    assert torch.equal(labels, ours["targets"])
    assert torch.equal(inputs["input_ids"][:, :-1][inputs["attention_mask"][:, :-1].bool()],
                       ours["inputs"][inputs["attention_mask"][:, :-1].bool()])
    assert int(inputs["completion_mask"].sum()) == int((ours["targets"] != IGNORE_INDEX).sum())


def full_weights_setup(batch, gpt, hf_tokenizer_fixture, tmp_path):
    """(policy, our batch with the reference's log-probs, TRL's trainer with a reference model, TRL's inputs)."""
    ours_batch, examples = batch
    policy = copy.deepcopy(gpt)
    torch.manual_seed(4)  # the same policy whichever tests ran before
    with torch.no_grad():  # a policy that has moved away from the reference
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    with_reference = precompute_reference(gpt, examples, batch_size=len(examples), pad_id=PAD_ID)
    full_batch = pad_pairs(with_reference, PAD_ID)
    assert torch.equal(full_batch["inputs"], ours_batch["inputs"])
    trainer = trl.DPOTrainer(model=to_hf_gpt2(policy), ref_model=to_hf_gpt2(gpt),
                             args=trl_args(trl.DPOConfig, tmp_path, beta=BETA, precompute_ref_log_probs=False),
                             train_dataset=preference_dataset(), processing_class=hf_tokenizer_fixture)
    return policy, full_batch, trainer, trl_dpo_inputs(ours_batch)


def test_dpo_full_weights_with_a_reference_model_matches_trl(batch, gpt, hf_tokenizer_fixture, tmp_path):
    policy, full_batch, trainer, inputs = full_weights_setup(batch, gpt, hf_tokenizer_fixture, tmp_path)
    for loss_type in DPO_LOSSES:
        objective = DPOObjective(DPOConfig(method="full", beta=BETA, loss_type=loss_type, rpo_alpha=0.0), [],
                                 len(PAIRS), 1, PAD_ID)
        with torch.no_grad():
            ours_loss, ours_metrics = objective.loss(policy, full_batch)
        trl_loss, trl_metrics = trl_dpo_loss(trainer, inputs, loss_type)
        assert_same(ours_loss, ours_metrics, trl_loss, trl_metrics, DPO_METRICS)
        assert trl_metrics["rewards/margins"] != 0  # the policy differs from the reference: a real comparison


def test_rpo_alpha_matches_trl_dpo_with_its_sft_loss_added(batch, gpt, hf_tokenizer_fixture, tmp_path):
    """RPO: our `rpo_alpha` adds what TRL 1.x adds with loss_type [<loss>, "sft"] and loss_weights [1, alpha]:
    the chosen answers' NLL per token over the batch's chosen tokens (not a mean of per-answer means: the
    answers here are 2 to 7 tokens long, so the two would differ)."""
    policy, full_batch, trainer, inputs = full_weights_setup(batch, gpt, hf_tokenizer_fixture, tmp_path)
    alpha = 0.7
    for loss_type in DPO_LOSSES:
        with_rpo = DPOObjective(DPOConfig(method="full", beta=BETA, loss_type=loss_type, rpo_alpha=alpha), [],
                                len(PAIRS), 1, PAD_ID)
        without = DPOObjective(DPOConfig(method="full", beta=BETA, loss_type=loss_type, rpo_alpha=0.0), [],
                               len(PAIRS), 1, PAD_ID)
        with torch.no_grad():
            ours_loss, ours_metrics = with_rpo.loss(policy, full_batch)
            dpo_only, _ = without.loss(policy, full_batch)
        trl_loss, trl_metrics = trl_dpo_loss(trainer, inputs, loss_type, rpo_alpha=alpha)
        assert_same(ours_loss, ours_metrics, trl_loss, trl_metrics, DPO_METRICS)
        # A real term, of the size it should have: alpha times the NLL per chosen token.
        assert float(ours_loss - dpo_only) == pytest.approx(alpha * float(ours_metrics["nll_loss"]), rel=1e-5)
        assert float(ours_metrics["nll_loss"]) == pytest.approx(-float(ours_metrics["logps/chosen_per_token"]))
        assert float(ours_metrics["nll_loss"]) > 1.0


def test_dpo_lora_with_the_adapter_switched_off_as_reference_matches_trl(batch, gpt, hf_tokenizer_fixture,
                                                                         tmp_path):
    from peft import LoraConfig

    ours_batch, examples = batch
    config = DPOConfig(beta=BETA, lora_r=4, lora_alpha=8.0, lora_dropout=0.0)
    torch.manual_seed(1)
    policy = apply_lora(copy.deepcopy(gpt), config)
    with torch.no_grad():  # peft starts B at zero (policy = reference); a trained adapter is not
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                             target_modules=target_modules(config.lora_targets), fan_in_fan_out=True,  # Conv1D
                             bias="none", task_type="CAUSAL_LM")
    trainer = trl.DPOTrainer(model=to_hf_gpt2(gpt), args=trl_args(trl.DPOConfig, tmp_path, beta=BETA),
                             train_dataset=preference_dataset(), processing_class=hf_tokenizer_fixture,
                             peft_config=peft_config)
    assert trainer.ref_model is None  # TRL's reference is its adapter disabled, as ours
    theirs = dict(trainer.model.named_parameters())
    copied = 0
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_" in name:
                theirs[name.replace(".blocks.", ".transformer.h.")].copy_(param)
                copied += 1
    assert copied == sum("lora_" in name for name in theirs) > 0

    inputs = trl_dpo_inputs(ours_batch)
    for loss_type in DPO_LOSSES:
        objective = DPOObjective(DPOConfig(beta=BETA, loss_type=loss_type, rpo_alpha=0.0), [], len(examples), 1,
                                 PAD_ID)
        with torch.no_grad():
            ours_loss, ours_metrics = objective.loss(policy, ours_batch)
        trl_loss, trl_metrics = trl_dpo_loss(trainer, inputs, loss_type)
        assert_same(ours_loss, ours_metrics, trl_loss, trl_metrics, DPO_METRICS)
        assert trl_metrics["rewards/margins"] != 0


@pytest.mark.parametrize("with_margin,center", [(False, None), (True, 0.01)])
def test_reward_model_loss_and_metrics_match_trl_reward_trainer(batch, gpt, hf_tokenizer_fixture, tmp_path,
                                                                 with_margin, center):
    from transformers import GPT2ForSequenceClassification

    ours_batch, examples = batch
    torch.manual_seed(2)
    model = RewardModel(copy.deepcopy(gpt)).eval()
    hf_model = to_hf_gpt2(gpt, GPT2ForSequenceClassification, num_labels=1, pad_token_id=PAD_ID)
    assert hf_model.score.bias is None
    with torch.no_grad():
        hf_model.score.weight.copy_(model.score.weight)
    trainer = trl.RewardTrainer(model=hf_model, args=trl_args(trl.RewardConfig, tmp_path,
                                                               center_rewards_coefficient=center),
                                train_dataset=preference_dataset(), processing_class=hf_tokenizer_fixture)
    # TRL reads each row's score at its last non-pad token: with our pad id that is our `last`, the <|im_end|>.
    pad = trainer.model.config.pad_token_id
    assert pad == PAD_ID
    real = (ours_batch["inputs"] != pad)
    assert torch.equal((real.long() * torch.arange(real.size(1))).argmax(dim=1), ours_batch["last"])

    batch_for_ours = dict(ours_batch)
    inputs = {"input_ids": ours_batch["inputs"].clone(), "attention_mask": real.long()}
    if with_margin:
        inputs["margin"] = ours_batch["margin"].clone()
    else:
        batch_for_ours["margin"] = torch.zeros_like(ours_batch["margin"])
    objective = RewardObjective([], len(examples), 1, pad, center_coefficient=center or 0.0)
    with torch.no_grad():
        ours_loss, ours_metrics = objective.loss(model, batch_for_ours)
    trainer.model.train()
    trainer._metrics["train"].clear()
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, inputs))
    trl_metrics = {name: trainer._metrics["train"][name][-1] for name in REWARD_METRICS}
    assert_same(ours_loss, ours_metrics, trl_loss, trl_metrics, REWARD_METRICS)
    assert trl_metrics["min_reward"] < trl_metrics["max_reward"]
