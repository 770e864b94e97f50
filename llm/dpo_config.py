"""`DPOConfig`: the settings of Direct Preference Optimization that are not the training loop's, and its
defaults for the loop. Declared once here for the worker's `dpo` kind, its form and `workbench dpo`.
Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting
from llm.sft_config import SFTConfig
from llm.train_config import FineTuningDefaults, TrainConfig

DPO_LOSSES = ("sigmoid", "ipo", "hinge")  # llm/preference_losses.py implements each


@dataclass
class DPOConfig(SFTConfig):
    """LoRA (the reference is the same network with the adapter switched off) or full (the reference's
    log-probabilities are computed once before training), plus DPO's own settings."""

    beta: float = setting(0.1, minimum=0, maximum=10, exclusive_minimum=True, label="beta",
                          help="how far the policy may move from the reference: smaller lets it move further")
    loss_type: str = setting("sigmoid", choices=DPO_LOSSES, label="loss",
                             help="sigmoid (DPO), ipo (IPO: squared, per-token averaged) or hinge (SLiC)")
    sft_weight: float = setting(0.0, minimum=0, maximum=10, advanced=True, label="SFT term weight",
                                help="adds this times the chosen answers' per-token negative log-likelihood "
                                     "(keeps the chosen answers likely; 0: off)")


# DPO runs are short, with a small learning rate (TRL's default 1e-6 is for billion-parameter models; a LoRA
# adapter on a small model needs more) and few evaluations.
DPO_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "lr": 5e-5,
                                        "warmup": 10, "eval_every": 50, "checkpoint_every": 100, "weight_decay": 0.0},
                                  full_lr=5e-6)


def dpo_train_config(config: DPOConfig, **given) -> TrainConfig:
    """The TrainConfig of a DPO run: these defaults, then what the caller gave (None = not given)."""
    return DPO_DEFAULTS.train_config(config.full, **given)
