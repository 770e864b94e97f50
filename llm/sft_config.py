"""`SFTConfig`: the settings of supervised fine-tuning that are not the training loop's, and SFT's own
defaults for the loop (`SFT_DEFAULTS`). Declared once here (`llm.params.setting`); the worker's
`sft` kind, the Fine-tune form and `workbench sft` all read them. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from llm.params import setting
from llm.train_config import (ALL_WEIGHTS_UP_TO, FINE_TUNING_METHODS, FineTuningDefaults, MethodChoice, TrainConfig,
                              WidthRule, choose_method)

# Which projections LoRA adapts: attention = c_attn (q, k, v) + its c_proj; MLP = c_fc + its c_proj.
LORA_TARGETS = ("attn,mlp", "attn", "mlp")


@dataclass
class SFTConfig:
    method: str = setting("auto", choices=FINE_TUNING_METHODS, label="method",
                          help=f"auto: all weights for a model of up to {ALL_WEIGHTS_UP_TO // 1_000_000} M parameters, "
                               "a LoRA adapter above; lora: a LoRA adapter that loads onto its base model; full: "
                               "every weight")
    lora_r: int = setting(16, minimum=1, maximum=1024, help="LoRA rank: the adapter's inner width", label="LoRA rank")
    lora_alpha: float = setting(32.0, minimum=0, maximum=4096, exclusive_minimum=True,
                                help="LoRA scale: the update is multiplied by alpha / rank", label="LoRA alpha")
    lora_dropout: float = setting(0.05, minimum=0, maximum=0.9, advanced=True, help="dropout on the adapter's input",
                                  label="LoRA dropout")
    lora_targets: str = setting("attn,mlp", choices=LORA_TARGETS, advanced=True,
                                help="projections to adapt: attention, MLP, or both", label="LoRA targets")
    val_fraction: float = setting(0.05, minimum=0, maximum=0.5, advanced=True,
                                  help="share of conversations held out for val_loss", label="validation share")

    def __post_init__(self):
        if self.method not in FINE_TUNING_METHODS:
            raise ValueError(f"method: must be one of {', '.join(FINE_TUNING_METHODS)}; got {self.method!r}")

    @property
    def full(self) -> bool:
        """Whether every weight is trained. "auto" is resolved before a run starts (`llm.train_config.choose_method`:
        at submit in the job layer, at start in the CLI and in `sft`/`reward`/`dpo` themselves)."""
        if self.method == "auto":
            raise ValueError("method 'auto' is not resolved yet: llm.train_config.choose_method gives lora or full")
        return self.method == "full"


Config = TypeVar("Config", bound=SFTConfig)


def resolve_method(config: Config, model_config: dict | None) -> tuple[Config, MethodChoice]:
    """`config` (SFT's, or reward's or DPO's, which inherit its method) with "auto" replaced by what it stands
    for on the model `model_config` describes (`choose_method`), and the choice with its reason."""
    choice = choose_method(config.method, model_config)
    return replace(config, method=choice.method), choice


def run_settings(config: Config, train_config: TrainConfig | None, model_config: dict,
                 train_config_of: Callable[..., TrainConfig], log: Callable[[str], None]) -> tuple[Config, TrainConfig]:
    """What `sft`, `reward` and `dpo` run with: `config` with "auto" resolved where its caller left it (the job layer
    and the CLI resolve it before; said in the log), and `train_config`, else the kind's defaults
    (`train_config_of`: sft_train_config, ...) with the learning rate for the model's width."""
    if config.method == "auto":
        config, choice = resolve_method(config, model_config)
        log(f"method auto: {choice.reason}")
    return config, train_config or train_config_of(config, model_config.get("n_embd"))


# SFT runs are short and start from trained weights: fewer steps (a few epochs of a small chat set), a
# short warmup (the weights are not random, and a LoRA adapter starts as a no-op), conversations of up to
# 256 tokens (block_size is the longest conversation kept; longer ones are truncated and counted). No weight
# decay: decaying an adapter pulls it back towards "no change", and decaying full weights towards zero forgets
# pretraining. Evaluations and checkpoints a few times per run, since runs are short.
# The learning rate, per method, at the reference width (llm.train_config.REFERENCE_WIDTH) and how it scales
# with the model's width: adapters start at zero, so they take a larger rate than full fine-tuning, which moves
# already-trained weights. Measured by the sweep (bench/sweep_defaults.py) at widths 64 and 384, all weights;
# docs/defaults.md has the table, the fit and what was extrapolated (LoRA above width 64, gpt2-124m).
SFT_LORA_LR = WidthRule(at_reference=8.66e-4, power=0.5)
SFT_FULL_LR = WidthRule(at_reference=5.77e-4, power=0.5)
SFT_DEFAULTS = FineTuningDefaults(loop={"max_steps": 200, "batch_size": 8, "block_size": 256, "warmup": 10,
                                        "eval_every": 50, "checkpoint_every": 100, "weight_decay": 0.0},
                                  lora_lr=SFT_LORA_LR, full_lr=SFT_FULL_LR)


def sft_train_config(config: SFTConfig, n_embd: int | None = None, **given) -> TrainConfig:
    """The TrainConfig of an SFT run: SFT's defaults, the learning rate of its method (resolved: lora or full) at
    the model's width `n_embd`, then whatever the caller gave (values of None count as not given)."""
    return SFT_DEFAULTS.train_config(config.method, n_embd, **given)
