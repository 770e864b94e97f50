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
# RPO's weight by default (bench/README.md, "DPO degeneration", tiny preset): at 1.0 every run up to 200 times the
# default learning rate (all weights) and 40 times it (LoRA) stayed coherent and moved the preferred property
# further, where plain DPO lost coherence from 20 (all weights) and 10 (LoRA) times the default rate on; at the default rates it changed
# neither coherence nor the property's share. 0.1 still broke at 60 times the rate. 1.0 is also the RPO paper's.
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
# adapter on a small model needs more) and few evaluations.
DPO_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "lr": 5e-5,
                                        "warmup": 10, "eval_every": 50, "checkpoint_every": 100, "weight_decay": 0.0},
                                  full_lr=5e-6)


def dpo_train_config(config: DPOConfig, **given) -> TrainConfig:
    """The TrainConfig of a DPO run: these defaults, then what the caller gave (None = not given)."""
    return DPO_DEFAULTS.train_config(config.full, **given)
