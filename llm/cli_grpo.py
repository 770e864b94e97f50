"""The CLI's `grpo` command (added to the same parser by llm/cli.py):

    workbench grpo --model SFT_DIR --data prompts.jsonl --out runs/grpo --verifier format --pattern 'Answer: \\w+\\.'
    workbench grpo --model SFT_DIR --data prompts.jsonl --out runs/rlhf --reward-model runs/rm
                   [--num-generations 8 --loss-type dapo|grpo|dr_grpo|bnpo --beta 0.5 --length-target 40 ...]

--data is a prompts dataset: JSONL with `prompt` (or `messages`) and, for the exact / numeric / contains verifiers,
`answer`; or .txt, one prompt a line (no answers). Training flags come from GRPOConfig's declarations and the loop's
with GRPO's defaults, like the other fine-tuning commands.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm.cli_common import add_fine_tuning_flags, another_rank, fine_tuning_settings, print_warnings, refuse_to_overwrite
from llm.grpo_config import GRPO_DEFAULTS, GRPOConfig

PROGRESS_KEYS = ("reward", "frac_reward_zero_std", "val_pass_rate")


def _cmd_grpo(args) -> None:
    from tqdm import tqdm

    from llm.grpo import grpo
    from llm.grpo_config import grpo_train_config
    from llm.train import checkpoint_step

    out = Path(args.out)
    refuse_to_overwrite(out, args.resume)
    config, train_config = fine_tuning_settings(args, GRPOConfig, GRPO_DEFAULTS, grpo_train_config)
    bar = tqdm(total=train_config.max_steps, initial=checkpoint_step(out) if args.resume else 0, desc="grpo",
               unit="step", dynamic_ncols=True, disable=another_rank())

    def on_metrics(record: dict) -> None:
        bar.update(record["step"] - bar.n)
        bar.set_postfix({key.split("/")[-1]: f"{record[key]:.3f}" for key in PROGRESS_KEYS
                         if isinstance(record.get(key), float)})

    try:
        result = grpo(args.model, args.data, out, grpo_config=config, train_config=train_config,
                      reward_model_dir=args.reward_model, data_dir=args.data_dir, on_metrics=on_metrics,
                      resume=args.resume, log=tqdm.write)
    finally:
        bar.close()
    result.pop("samples", None)  # every answer of the last evaluation: in grpo_report.json, not on the terminal
    print(json.dumps(result, indent=2, default=str))
    print_warnings(result, out)


def register_grpo_command(add) -> None:
    """Add `grpo` with llm/cli.py's `add(name, help, func)`."""
    p = add("grpo", "Group Relative Policy Optimization: the model answers prompts G times, a verifier and/or a reward "
                    "model scores the answers, and it learns from the better ones (all weights or LoRA: --method).",
            _cmd_grpo)
    p.add_argument("--model", required=True, help="SFT (or base) model directory: the policy and its KL reference")
    p.add_argument("--data", required=True, help="prompts dataset (.jsonl: prompt or messages, answer; or .txt)")
    p.add_argument("--out", required=True, help="run directory; becomes the adapter (or model) directory")
    p.add_argument("--reward-model", help="reward model directory whose score is added to the reward (RLHF)")
    add_fine_tuning_flags(p, GRPOConfig, GRPO_DEFAULTS.settings())
