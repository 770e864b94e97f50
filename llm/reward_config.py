"""`RewardConfig`: the settings of reward-model training that are not the training loop's, and its defaults
for the loop. Declared once here (`llm.params.setting`) for the worker's `reward` kind, its form and
`workbench reward`. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting
from llm.sft_config import SFTConfig
from llm.train_config import FineTuningDefaults, TrainConfig, WidthRule


@dataclass
class RewardConfig(SFTConfig):
    """LoRA or full, as SFT (the scalar head is always trained), plus reward centering."""

    center_rewards_coefficient: float = setting(
        0.0, minimum=0, maximum=1, advanced=True, label="reward centering",
        help="adds c * mean((r_chosen + r_rejected)^2) to the loss, keeping rewards near 0 (0: off; 0.01 is usual)")


# Reward models are trained briefly (one or two passes over the pairs; longer overfits, as the InstructGPT
# paper notes), with batches of pairs (each pair is two sequences) and no weight decay (as SFT). The learning
# rate per method at the reference width and its power of the width (llm/sft_config.py says why), from the
# sweep (docs/defaults.md).
REWARD_LORA_LR = WidthRule(at_reference=2.887e-4, power=0.5)
REWARD_FULL_LR = WidthRule(at_reference=1.443e-4, power=0.5)
REWARD_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "warmup": 10,
                                           "eval_every": 50, "checkpoint_every": 100, "weight_decay": 0.0},
                                     lora_lr=REWARD_LORA_LR, full_lr=REWARD_FULL_LR)


def reward_train_config(config: RewardConfig, n_embd: int | None = None, **given) -> TrainConfig:
    """The TrainConfig of a reward run: these defaults, the method's learning rate at the model's width `n_embd`,
    then what the caller gave (None = not given)."""
    return REWARD_DEFAULTS.train_config(config.method, n_embd, **given)
