"""`KTOConfig`: the settings of Kahneman-Tversky Optimization that are not the training loop's, and its defaults
for the loop. Declared once here for the worker's `kto` kind, its form and `workbench kto`. Imports no torch.

KTO (Ethayarajh et al. 2024, TRL's `KTOTrainer`) learns from *unpaired* feedback: single answers marked good
(desirable) or bad (undesirable), such as chat thumbs, instead of chosen/rejected pairs. llm/kto.py has the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.dpo_config import DPO_FULL_LR, DPO_LORA_LR
from llm.params import setting
from llm.sft_config import SFTConfig
from llm.train_config import FineTuningDefaults, TrainConfig

# TRL's names: "kto" (the paper's loss, with the KL reference point) and "apo_zero_unpaired" (APO-zero for
# unpaired data: no KL term, so no mismatched completions are scored).
KTO_LOSSES = ("kto", "apo_zero_unpaired")


@dataclass
class KTOConfig(SFTConfig):
    """LoRA (the reference is the same network with the adapter switched off) or full (the reference's
    log-probabilities are computed once before training, as DPO's are), plus KTO's own settings."""

    beta: float = setting(0.1, minimum=0, maximum=10, exclusive_minimum=True, label="beta",
                          help="how far the policy may move from the reference: smaller lets it move further")
    desirable_weight: float = setting(1.0, minimum=0, maximum=100, exclusive_minimum=True,
                                      label="desirable weight",
                                      help="weight of the good answers' loss; with fewer good than bad answers, "
                                           "raise it so weight x good ≈ 1 to 1.33 x bad (the KTO paper's Eq. 8)")
    undesirable_weight: float = setting(1.0, minimum=0, maximum=100, exclusive_minimum=True,
                                        label="undesirable weight",
                                        help="weight of the bad answers' loss (see desirable weight)")
    loss_type: str = setting("kto", choices=KTO_LOSSES, label="loss",
                             help="kto (the paper's, with the KL reference point estimated from mismatched "
                                  "prompt-answer pairs of each batch) or apo_zero_unpaired (no KL term)")
    stop_on_degeneration: bool = setting(
        True, advanced=True, label="stop on degeneration",
        help="at each evaluation, check that the good answers stay likely, the KL to the start stays within budget "
             "and sampled answers do not collapse (llm/degeneration.py, DPO's watch); when one fails, stop and keep "
             "the weights of the last evaluation that passed. Off: only warn")


# KTO's updates are DPO's in size: both push a log-ratio to the reference through a sigmoid with the same beta, so
# the same learning rate per method and width (DPO's rules, fitted by the sweep: docs/defaults.md) and the same
# short run. The learning test (tests/llm/test_defaults_learn.py) checks these on a task the sweep never saw.
KTO_LORA_LR = DPO_LORA_LR
KTO_FULL_LR = DPO_FULL_LR
KTO_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "warmup": 10,
                                        "eval_every": 50, "checkpoint_every": 100, "weight_decay": 0.0},
                                  lora_lr=KTO_LORA_LR, full_lr=KTO_FULL_LR,
                                  # As DPO's: rank 0 alone samples the degeneration watch's answers and keeps the
                                  # last good weights (llm/degeneration.py), which a sharded model cannot give it.
                                  no_fsdp="KTO's degeneration watch samples answers from and keeps weights of the "
                                          "whole model on one rank")


def kto_train_config(config: KTOConfig, n_embd: int | None = None, **given) -> TrainConfig:
    """The TrainConfig of a KTO run: these defaults, the method's learning rate at the model's width `n_embd`,
    then what the caller gave (None = not given)."""
    return KTO_DEFAULTS.train_config(config.method, n_embd, **given)
