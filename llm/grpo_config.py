"""`GRPOConfig`: the settings of Group Relative Policy Optimization that are not the training loop's (sampling,
the loss variant, the rewards), and its defaults for the loop. Declared once here for the worker's `grpo` kind, its
form and `workbench grpo`. Imports no torch.

The loss variants are TRL's (GRPOTrainer, TRL 1.x), with its names and formulas (llm/grpo.py states them):
  grpo     each answer's per-token losses averaged over its own tokens, then averaged over answers
  bnpo     summed over every answer token of the batch, divided by those tokens
  dr_grpo  summed over every answer token, divided by answers x max_completion_length (Dr. GRPO: no length bias)
  dapo     summed over every answer token of the generation batch, divided by its tokens (DAPO; TRL's default)
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting
from llm.sft_config import SFTConfig
from llm.train_config import FineTuningDefaults, TrainConfig, WidthRule

GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")  # TRL's scale_rewards: divide the advantages by the group's / batch's std
# The built-in verifiers (llm/verifiers.py): each scores an answer from 0 to 1; "none": no verifier (a reward model).
VERIFIERS = ("none", "exact", "numeric", "regex", "contains", "json", "format")
# The KL weight when none is given, by what scores the answers (resolved_beta). A verifier cannot be fooled, so no
# KL is needed (TRL's 0); a reward model can, and at 0 GRPO found its adversarial answers within 20 steps (answers
# that never end, run-ons of the words it likes), where 0.5 kept the policy where the reward model was trained.
BETA_WITH_VERIFIERS_ONLY = 0.0
BETA_WITH_A_REWARD_MODEL = 0.5


def resolved_beta(beta: float | None, scored_by_a_reward_model: bool) -> float:
    """The KL weight a run uses: the one given, else the default for what scores its answers."""
    if beta is not None:
        return beta
    return BETA_WITH_A_REWARD_MODEL if scored_by_a_reward_model else BETA_WITH_VERIFIERS_ONLY


@dataclass
class GRPOConfig(SFTConfig):
    """LoRA (the KL reference is the same network with the adapter switched off) or full (a frozen copy of the
    starting weights), plus GRPO's own settings: sampling, the loss, and the rewards (verifier, reward model weight,
    length penalty)."""

    num_generations: int = setting(8, minimum=2, maximum=64, label="answers per prompt (G)",
                                   help="answers sampled per prompt; their rewards are compared within the group, so "
                                        "at least 2")
    max_completion_length: int = setting(48, minimum=1, maximum=4096, label="answer length limit",
                                         help="tokens an answer may take; a longer one is cut (and counted as clipped)")
    temperature: float = setting(1.0, minimum=0, maximum=10, exclusive_minimum=True, advanced=True,
                                 help="sampling temperature (the log-probabilities are taken at the same temperature)")
    loss_type: str = setting("dapo", choices=GRPO_LOSSES, label="loss",
                             help="dapo (TRL's default: token-level over the batch), grpo (per answer, then averaged), "
                                  "dr_grpo (over answers x length limit), bnpo (token-level per micro-batch)")
    beta: float | None = setting(None, type="float", minimum=0, maximum=10, label="KL weight (beta)",
                                 help=f"weight of the KL penalty to the starting model; empty: "
                                      f"{BETA_WITH_A_REWARD_MODEL:g} when a reward model scores the answers (at 0 the "
                                      f"policy learned the reward model's adversarial answers: docs/defaults.md, "
                                      f"GRPO), {BETA_WITH_VERIFIERS_ONLY:g} with verifiers alone (TRL's default; the "
                                      f"KL is still measured at each evaluation)")
    epsilon: float = setting(0.2, minimum=0, maximum=1, exclusive_minimum=True, advanced=True,
                             help="clipping range of the probability ratio (below 1)")
    epsilon_high: float | None = setting(None, type="float", minimum=0, maximum=10, exclusive_minimum=True,
                                         advanced=True, help="upper clipping range; empty: epsilon (DAPO uses 0.28)")
    scale_rewards: str = setting("group", choices=SCALE_REWARDS, advanced=True,
                                 help="divide the advantages by the std of the group's rewards (group), of the "
                                      "batch's (batch) or not at all (none, Dr. GRPO)")
    verifier: str = setting("none", choices=VERIFIERS,
                            help="how each answer is checked against the prompt's reference answer: exact match, "
                                 "numeric (the last number in the answer, within tolerance), regex (the pattern found "
                                 "in the answer), contains (the reference answer appears in it), json (valid JSON, "
                                 "with the required keys), format (the pattern matches the whole answer)")
    pattern: str | None = setting(None, type="str", max_length=500, label="pattern (regex / format)",
                                  help="the regular expression of the regex and format verifiers")
    tolerance: float = setting(1e-6, minimum=0, maximum=1e12, advanced=True,
                               help="numeric verifier: |answer - reference| within tolerance x max(1, |reference|)")
    json_keys: str | None = setting(None, type="str", max_length=500, advanced=True, label="required JSON keys",
                                    help="json verifier: keys the object must have, separated by commas")
    verifier_weight: float = setting(1.0, minimum=0, maximum=100, advanced=True,
                                     help="weight of the verifier's score in the reward")
    reward_model_weight: float = setting(1.0, minimum=0, maximum=100, advanced=True,
                                         help="weight of the reward model's score in the reward (when one is chosen)")
    length_target: int = setting(0, minimum=0, maximum=100_000, advanced=True,
                                 help="answer tokens past which the length penalty counts; 0: no penalty")
    length_penalty: float = setting(0.0, minimum=0, maximum=100, advanced=True,
                                    help="reward taken off per answer token past the length target")
    missing_eos_penalty: float = setting(0.0, minimum=0, maximum=100, advanced=True,
                                         label="unfinished answer penalty",
                                         help="reward taken off an answer cut at the length limit before it ended its "
                                              "turn (TRL's missing_eos_penalty: a reward model scores a cut answer as "
                                              "if it had ended); 0: none")
    eval_prompts: int = setting(16, minimum=1, maximum=1000, advanced=True,
                                help="held-out prompts answered at each evaluation (pass rate, KL, samples table)")


# GRPO steps sample G answers for each of `batch_size` prompts before the update: generation is most of a step, so
# runs are short (40 steps: 30-140 s on the tiny preset on 2 shared cores), each step is logged (the reward curve is
# what people watch), and evaluations are two per run. Steps, G and batch were set by cost, not swept.
# The learning rate per method at the reference width, from the sweep (bench/sweep_grpo.py, docs/defaults.md "GRPO";
# tiny preset, width 64): LoRA's best was 3e-3 (+36 points of verifier pass rate; 1e-2 +29); all weights' best 3e-3
# (+66) sits a factor 3 below a collapse within a few steps (1e-2), so the default is a factor 3 lower (1e-3, +46).
# The power of the width is DPO's (1), not measured: only the tiny preset was swept.
GRPO_LORA_LR = WidthRule(at_reference=2.5e-4, power=1.0)
GRPO_FULL_LR = WidthRule(at_reference=8.33e-5, power=1.0)
GRPO_DEFAULTS = FineTuningDefaults(loop={"max_steps": 40, "batch_size": 4, "block_size": 256, "warmup": 4,
                                         "eval_every": 20, "checkpoint_every": 20, "weight_decay": 0.0,
                                         "log_every": 1, "eval_batches": 1},
                                   lora_lr=GRPO_LORA_LR, full_lr=GRPO_FULL_LR,
                                   # Sharded ranks must run the same forwards in step; sampled answers end at
                                   # different lengths on different ranks.
                                   no_fsdp="GRPO samples answers of different lengths on each rank, and sharded "
                                           "ranks must run every forward together")


def grpo_train_config(config: GRPOConfig, n_embd: int | None = None, **given) -> TrainConfig:
    """The TrainConfig of a GRPO run (batch_size = prompts per step, each answered G times): these defaults, the
    method's learning rate at the model's width `n_embd`, then what the caller gave (None = not given)."""
    return GRPO_DEFAULTS.train_config(config.method, n_embd, **given)
