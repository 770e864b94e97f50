"""`SFTConfig`: the settings of supervised fine-tuning that are not the training loop's, and SFT's own
defaults for the loop (`SFT_DEFAULTS`). Declared once here (`llm.params.setting`); the worker's
`sft` kind, the Fine-tune form and `workbench sft` all read them. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting
from llm.train_config import FineTuningDefaults, TrainConfig

# Which projections LoRA adapts: attention = c_attn (q, k, v) + its c_proj; MLP = c_fc + its c_proj.
LORA_TARGETS = ("attn,mlp", "attn", "mlp")


@dataclass
class SFTConfig:
    full: bool = setting(False, help="fine-tune every weight instead of training a LoRA adapter",
                         label="all weights (no LoRA)")
    lora_r: int = setting(16, minimum=1, maximum=1024, help="LoRA rank: the adapter's inner width", label="LoRA rank")
    lora_alpha: float = setting(32.0, minimum=0, maximum=4096, exclusive_minimum=True,
                                help="LoRA scale: the update is multiplied by alpha / rank", label="LoRA alpha")
    lora_dropout: float = setting(0.05, minimum=0, maximum=0.9, advanced=True, help="dropout on the adapter's input",
                                  label="LoRA dropout")
    lora_targets: str = setting("attn,mlp", choices=LORA_TARGETS, advanced=True,
                                help="projections to adapt: attention, MLP, or both", label="LoRA targets")
    val_fraction: float = setting(0.05, minimum=0, maximum=0.5, advanced=True,
                                  help="share of conversations held out for val_loss", label="validation share")


# SFT runs are short and start from trained weights: fewer steps (a few epochs of a small chat set), a
# short warmup (the weights are not random, and a LoRA adapter starts as a no-op), conversations of up to
# 256 tokens (block_size is the longest conversation kept; longer ones are truncated and counted), and the
# learning rate LoRA is usually trained with: adapters start at zero, so they take a larger rate than full
# fine-tuning, which moves already-trained weights (`FineTuningDefaults`). No weight decay: decaying an
# adapter pulls it back towards "no change", and decaying full weights towards zero forgets pretraining.
# Evaluations and checkpoints a few times per run, since runs are short.
SFT_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "lr": 2e-4,
                                        "warmup": 10, "eval_every": 50, "checkpoint_every": 100,
                                        "weight_decay": 0.0},
                                  full_lr=5e-5)


def sft_train_config(config: SFTConfig, **given) -> TrainConfig:
    """The TrainConfig of an SFT run: SFT's defaults, the learning rate for LoRA or full fine-tuning, then
    whatever the caller gave (values of None count as not given)."""
    return SFT_DEFAULTS.train_config(config.full, **given)
