"""Parity with TRL 1.x: on the same weights and the same batch, our KTO loss and metrics equal `trl.KTOTrainer`'s
within 1e-5, for both loss types (kto with its KL estimate, apo_zero_unpaired) and both reference setups of
`llm.kto` (full: our reference log-probs computed ahead, TRL with a separate `ref_model`; LoRA: the adapter switched
off on both sides, a non-zero adapter copied from ours to TRL's).

The batch is ours (`llm.kto_batches.pad_feedback`: the examples' rows, then their mismatched rows); TRL gets the same
token ids in its collator's layout (input_ids / completion_mask for the examples, KL_input_ids / KL_completion_mask
for the mismatched rows, `label`), with completion_mask on exactly the tokens our targets score, so both sides sum
the same log-probabilities. The model is the DPO parity test's: a tiny GPT with randomised biases and norms exported
with `llm.hf_gpt2.to_hf_gpt2`.
"""

from __future__ import annotations

import copy

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from bench.bench_preference import PAD_ID, trl_dpo_inputs  # noqa: E402  (a batch of rows in TRL's layout)
from bench.bench_sft import hf_tokenizer  # noqa: E402
from llm.hf_gpt2 import to_hf_gpt2  # noqa: E402
from llm.kto import KTOObjective, kto_loss, precompute_reference  # noqa: E402
from llm.kto_batches import pad_feedback, tokenize_feedback  # noqa: E402
from llm.kto_config import KTO_LOSSES, KTOConfig  # noqa: E402
from llm.lora import apply_lora, target_modules  # noqa: E402
from llm.model import GPT, config_from_preset  # noqa: E402
from llm.tokenizer import get_tokenizer  # noqa: E402

TOLERANCE = 1e-5
KTO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected", "kl")
BETA, DESIRABLE, UNDESIRABLE = 0.3, 1.2, 0.8
ITEMS = [
    {"prompt": [{"role": "user", "content": "Name a colour of the sky."}],
     "completion": [{"role": "assistant", "content": "Blue, on a clear day."}], "label": True},
    {"prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is two plus two?"},
                {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And three plus three?"}],
     "completion": [{"role": "assistant", "content": "Seven, I think, but let me count again slowly."}],
     "label": False},
    {"prompt": [{"role": "user", "content": "Write a word that rhymes with cat."}],
     "completion": [{"role": "assistant", "content": "Hat."}], "label": True},
    {"prompt": [{"role": "user", "content": "Say hello."}],
     "completion": [{"role": "assistant", "content": "No."}], "label": False},
]


@pytest.fixture(scope="module")
def tokenized():
    result = tokenize_feedback(get_tokenizer("gpt2"), ITEMS, max_length=100, seed=0)
    assert len(result.examples) == len(ITEMS)
    return result.examples


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", get_tokenizer("gpt2").vocab_size))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def trl_kto_inputs(batch: dict) -> dict:
    """Our batch in TRL's unpaired collator layout (the rows translated as the DPO parity test translates them)."""
    size = batch["label"].numel()
    rows = trl_dpo_inputs({"inputs": batch["inputs"], "targets": batch["targets"],
                           "last": (batch["inputs"] != PAD_ID).long().cumsum(1).argmax(1)})
    inputs = {"input_ids": rows["input_ids"][:size], "attention_mask": rows["attention_mask"][:size],
              "completion_mask": rows["completion_mask"][:size], "KL_input_ids": rows["input_ids"][size:],
              "KL_attention_mask": rows["attention_mask"][size:], "KL_completion_mask": rows["completion_mask"][size:],
              "label": batch["label"].clone()}
    return inputs


def trl_args(tmp_path, loss_type: str, **settings):
    return trl.KTOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, fp16=False, report_to="none",
                         activation_checkpointing=False, save_strategy="no", disable_tqdm=True, beta=BETA, desirable_weight=DESIRABLE,
                         undesirable_weight=UNDESIRABLE, loss_type=loss_type, per_device_train_batch_size=len(ITEMS),
                         **settings)


def unpaired_dataset():
    return datasets.Dataset.from_list([dict(item) for item in ITEMS])


def trl_loss(trainer, inputs: dict) -> tuple[float, dict]:
    trainer._metrics["train"].clear()
    trainer.model.train()  # dropout is 0: train mode only files the metrics under "train"
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, {key: value.clone() for key, value in inputs.items()})
    return float(loss), {name: trainer._metrics["train"][name][-1] for name in KTO_METRICS}


def assert_same(ours_loss, ours_metrics: dict, theirs_loss: float, theirs_metrics: dict) -> None:
    """Equal within TOLERANCE, relative above 1 (summed log-probs reach -80: float32's spacing there is ~8e-6)."""
    assert abs(float(ours_loss) - theirs_loss) <= TOLERANCE * max(1.0, abs(theirs_loss)), (float(ours_loss), theirs_loss)
    for name in KTO_METRICS:
        assert abs(float(ours_metrics[name]) - theirs_metrics[name]) <= TOLERANCE * max(1.0, abs(theirs_metrics[name])), (
            name, float(ours_metrics[name]), theirs_metrics[name])


def test_the_mismatched_rows_pair_each_prompt_with_another_answer(tokenized):
    batch = pad_feedback(tokenized, PAD_ID)
    own, other = batch["targets"][:len(ITEMS)], batch["targets"][len(ITEMS):]
    answers = {tuple(row[row != -100].tolist()) for row in own}
    for row in range(len(ITEMS)):
        assert tuple(other[row][other[row] != -100].tolist()) in answers  # one of the batch's answers...
        assert not torch.equal(own[row], other[row])                       # ...never its own


def test_kto_full_weights_with_a_reference_model_matches_trl(tokenized, gpt, tmp_path):
    policy = copy.deepcopy(gpt)
    torch.manual_seed(4)
    with torch.no_grad():  # a policy that has moved away from the reference
        for param in policy.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    batch = pad_feedback(precompute_reference(gpt, tokenized, len(tokenized), PAD_ID), PAD_ID)
    inputs = trl_kto_inputs(batch)
    for loss_type in KTO_LOSSES:
        trainer = trl.KTOTrainer(model=to_hf_gpt2(policy), ref_model=to_hf_gpt2(gpt),
                                 args=trl_args(tmp_path, loss_type), train_dataset=unpaired_dataset(),
                                 processing_class=hf_tokenizer())
        objective = KTOObjective(KTOConfig(method="full", beta=BETA, desirable_weight=DESIRABLE,
                                           undesirable_weight=UNDESIRABLE, loss_type=loss_type), [], len(ITEMS), 1,
                                 PAD_ID)
        with torch.no_grad():
            ours_loss, ours_metrics = objective.loss(policy, batch)
        theirs_loss, theirs_metrics = trl_loss(trainer, inputs)
        assert_same(ours_loss, ours_metrics, theirs_loss, theirs_metrics)
        assert theirs_metrics["rewards/margins"] != 0
        if loss_type == "kto":
            assert theirs_metrics["kl"] > 0  # the KL term is in play, not clamped away


def test_kto_lora_with_the_adapter_switched_off_as_reference_matches_trl(tokenized, gpt, tmp_path):
    from peft import LoraConfig

    config = KTOConfig(beta=BETA, lora_r=4, lora_alpha=8.0, lora_dropout=0.0, desirable_weight=DESIRABLE,
                       undesirable_weight=UNDESIRABLE)
    torch.manual_seed(1)
    policy = apply_lora(copy.deepcopy(gpt), config)
    with torch.no_grad():  # peft starts B at zero (policy = reference); a trained adapter is not
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                             target_modules=target_modules(config.lora_targets), fan_in_fan_out=True,  # Conv1D
                             bias="none", task_type="CAUSAL_LM")
    batch = pad_feedback(tokenized, PAD_ID)
    inputs = trl_kto_inputs(batch)
    for loss_type in KTO_LOSSES:
        trainer = trl.KTOTrainer(model=to_hf_gpt2(gpt), args=trl_args(tmp_path, loss_type),
                                 train_dataset=unpaired_dataset(), processing_class=hf_tokenizer(),
                                 peft_config=peft_config)
        assert trainer.ref_model is None  # TRL's reference is its adapter disabled, as ours
        theirs = dict(trainer.model.named_parameters())
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_" in name:
                    theirs[name.replace(".blocks.", ".transformer.h.")].copy_(param)
        objective = KTOObjective(KTOConfig(**{**config.__dict__, "loss_type": loss_type}), [], len(ITEMS), 1, PAD_ID)
        with torch.no_grad():
            ours_loss, ours_metrics = objective.loss(policy, batch)
        theirs_loss, theirs_metrics = trl_loss(trainer, inputs)
        assert_same(ours_loss, ours_metrics, theirs_loss, theirs_metrics)
        assert theirs_metrics["rewards/margins"] != 0


def test_a_batch_of_one_class_gives_that_class_alone():
    """TRL files no rewards/rejected for a batch without bad answers; ours reports 0 for it (the loop averages a
    fixed set of metrics) and the same loss as the good answers' alone."""
    policy, reference = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.0])
    labels = torch.tensor([True, True])
    kl_policy, kl_reference = torch.tensor([-6.0, -6.5]), torch.tensor([-6.5, -6.4])
    loss, metrics = kto_loss(policy, reference, labels, kl_policy, kl_reference, beta=0.5)
    kl = max(0.0, float((kl_policy - kl_reference).mean()))
    expected = (1 - torch.sigmoid(0.5 * (policy - reference - kl))).mean()
    assert float(loss) == pytest.approx(float(expected)) and float(metrics["rewards/rejected"]) == 0
    assert float(metrics["kl"]) == pytest.approx(kl)
