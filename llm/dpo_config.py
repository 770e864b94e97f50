"""`DPOConfig`: the settings of Direct Preference Optimization that are not the training loop's, and its
defaults for the loop. Declared once here for the worker's `dpo` kind, its form and `workbench dpo`.
Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting
from llm.sft_config import SFTConfig
from llm.train_config import FineTuningDefaults, TrainConfig, WidthRule

DPO_LOSSES = ("sigmoid", "ipo", "hinge")  # llm/preference_losses.py implements each
# RPO's weight by default, measured on the tiny preset (bench/README.md, "DPO degeneration"): with all weights at
# 20 to 200 times the default learning rate, plain DPO ended with 0-40 % of its sampled answers in the SFT format
# (85 % at the start), RPO at 1.0 with 75-88 % and 62-93 % of them polite (the preferred property; 40 % at the
# start); at 0.3 and 0.1 with 72-82 % and 47-85 %. LoRA at 10-100 times its rate: 0 % without, 50-72 % with it.
# At the default rates it changed neither share; held-out accuracy 93 % and 87 % against 100 % (1-2 of 15 pairs).
# 1.0 is also the RPO paper's.
RPO_ALPHA = 1.0


@dataclass
class DPOConfig(SFTConfig):
    """LoRA (the reference is the same network with the adapter switched off) or full (the reference's
    log-probabilities are computed once before training), plus DPO's own settings."""

    beta: float = setting(0.1, minimum=0, maximum=10, exclusive_minimum=True, label="beta",
                          help="how far the policy may move from the reference: smaller lets it move further")
    loss_type: str = setting("sigmoid", choices=DPO_LOSSES, label="loss",
                             help="sigmoid (DPO), ipo (IPO: squared, per-token averaged) or hinge (SLiC)")
    rpo_alpha: float = setting(RPO_ALPHA, minimum=0, maximum=10, advanced=True, label="RPO alpha (NLL on chosen)",
                               help="adds alpha times the chosen answers' negative log-likelihood per token (RPO; "
                                    "TRL's rpo_alpha): keeps the chosen answers likely, so the policy cannot raise "
                                    "the margin by leaving language; 0: off")
    stop_on_degeneration: bool = setting(
        True, advanced=True, label="stop on degeneration",
        help="at each evaluation, check that the chosen answers stay likely, the KL to the start stays within budget "
             "and sampled answers do not collapse (llm/degeneration.py); when one fails, stop and keep the weights of "
             "the last evaluation that passed. Off: only warn")


# DPO runs are short, with a small learning rate (TRL's default 1e-6 is for billion-parameter models; a LoRA
# adapter on a small model needs more) and few evaluations. The learning rate per method at the reference width
# and its power of the width (llm/sft_config.py says why), from the sweep (docs/defaults.md): DPO's gain grows
# with the rate up to where the degeneration watch stops the run, so these sit a factor of 3 below that point.
DPO_LORA_LR = WidthRule(at_reference=2.5e-4, power=1.0)
DPO_FULL_LR = WidthRule(at_reference=8.33e-5, power=1.0)
DPO_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "warmup": 10,
                                        "eval_every": 50, "checkpoint_every": 100, "weight_decay": 0.0},
                                  lora_lr=DPO_LORA_LR, full_lr=DPO_FULL_LR,
                                  # Rank 0 alone samples the watch's answers and keeps the last good weights
                                  # (llm/degeneration.py): a sharded model cannot run or be read on one rank.
                                  no_fsdp="DPO's degeneration watch samples answers from and keeps weights of the "
                                          "whole model on one rank")


def dpo_train_config(config: DPOConfig, n_embd: int | None = None, **given) -> TrainConfig:
    """The TrainConfig of a DPO run: these defaults, the method's learning rate at the model's width `n_embd`,
    then what the caller gave (None = not given)."""
    return DPO_DEFAULTS.train_config(config.method, n_embd, **given)
