"""The CLI's preference commands: `reward`, `score`, `dpo` and `kto` (added to the same parser by llm/cli.py).

    workbench reward --model SFT_OR_BASE_DIR --data pairs.jsonl --out runs/rm [--method auto|lora|full]
    workbench score  --model runs/rm --data pairs.jsonl
    workbench dpo    --model SFT_DIR --data pairs.jsonl --out runs/dpo [--beta 0.1 --loss-type sigmoid|ipo|hinge]
    workbench kto    --model SFT_DIR --data feedback.jsonl --out runs/kto [--beta 0.1 --desirable-weight 1.0 ...]

--data is a preference dataset in any format the Datasets tab accepts (prompt/chosen/rejected, conversational
or not, HH-RLHF transcripts); for `kto`, unpaired feedback (TRL's prompt / completion / label). Training flags come from the config dataclasses' declarations, like `sft`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from llm.cli_common import (add_data_dir, add_fine_tuning_flags, another_rank, fine_tuning_settings, print_warnings,
                            refuse_to_overwrite)
from llm.dpo_config import DPO_DEFAULTS, DPOConfig
from llm.kto_config import KTO_DEFAULTS, KTOConfig
from llm.reward_config import REWARD_DEFAULTS, RewardConfig


def _progress_bar(total: int, initial: int, name: str, keys: tuple[str, ...]):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True,
               disable=another_rank())  # one bar: rank 0's

    def on_metrics(record: dict) -> None:
        bar.update(record["step"] - bar.n)
        bar.set_postfix({key.split("/")[-1]: f"{record[key]:.4f}" for key in keys if isinstance(record.get(key), float)})

    return bar, on_metrics, tqdm.write


def _train(args, name: str, config_class, defaults, train_config_of: Callable, run: Callable,
           keys: tuple[str, ...]) -> None:
    from llm.train import checkpoint_step

    out = Path(args.out)
    refuse_to_overwrite(out, args.resume)
    config, train_config = fine_tuning_settings(args, config_class, defaults, train_config_of)
    bar, on_metrics, write = _progress_bar(train_config.max_steps, checkpoint_step(out) if args.resume else 0, name, keys)
    try:
        result = run(args.model, args.data, out, config, train_config, on_metrics, write)
    finally:
        bar.close()
    result.pop("report", None)  # the rewards of every held-out pair: in reward_report.json, not on the terminal
    print(json.dumps(result, indent=2, default=str))
    print_warnings(result, out)


def _cmd_reward(args) -> None:
    from llm.reward import reward
    from llm.reward_config import reward_train_config

    def run(model, data, out, config, train_config, on_metrics, write):
        return reward(model, data, out, reward_config=config, train_config=train_config, data_dir=args.data_dir,
                      on_metrics=on_metrics, resume=args.resume, log=write)

    _train(args, "reward", RewardConfig, REWARD_DEFAULTS, reward_train_config, run,
           ("loss", "accuracy", "val_accuracy"))


def _cmd_dpo(args) -> None:
    from llm.dpo import dpo
    from llm.dpo_config import dpo_train_config

    def run(model, data, out, config, train_config, on_metrics, write):
        return dpo(model, data, out, dpo_config=config, train_config=train_config, data_dir=args.data_dir,
                   on_metrics=on_metrics, resume=args.resume, log=write)

    _train(args, "dpo", DPOConfig, DPO_DEFAULTS, dpo_train_config, run,
           ("loss", "rewards/margins", "rewards/accuracies"))


def _cmd_kto(args) -> None:
    from llm.kto import kto
    from llm.kto_config import kto_train_config

    def run(model, data, out, config, train_config, on_metrics, write):
        return kto(model, data, out, kto_config=config, train_config=train_config, data_dir=args.data_dir,
                   on_metrics=on_metrics, resume=args.resume, log=write)

    _train(args, "kto", KTOConfig, KTO_DEFAULTS, kto_train_config, run, ("loss", "rewards/margins", "kl"))


def _cmd_score(args) -> None:
    from llm.reward import score

    result = score(args.model, args.data, data_dir=args.data_dir)
    overall = result["overall"]
    print(f"{result['scored']:,} of {result['pairs']:,} pairs scored ({result['dropped']:,} too long)")
    print(f"accuracy {overall['accuracy']:.4f}  (chosen scored above rejected)")
    print(f"margin   {overall['margin']:.4f}  (mean chosen - rejected reward)")
    for group in (key for key in result if key.startswith("by_")):  # source, labeler, prompt length, longer answer
        for value, summary in result[group].items():
            print(f"  {group[3:].replace('_', ' ')} {value}: accuracy {summary['accuracy']:.4f} on "
                  f"{summary['pairs']:,} pairs")


def register_preference_commands(add) -> None:
    """Add `reward`, `score`, `dpo` and `kto` with llm/cli.py's `add(name, help, func)`."""
    def training_flags(parser, config_class, defaults) -> None:
        add_fine_tuning_flags(parser, config_class, defaults.settings())

    p = add("reward", "Train a reward model on preference pairs (Bradley-Terry; a scalar head on all weights or a LoRA adapter: --method).",
            _cmd_reward)
    p.add_argument("--model", required=True, help="base or SFT model directory to start from")
    p.add_argument("--data", required=True, help="preference dataset (.jsonl: prompt / chosen / rejected)")
    p.add_argument("--out", required=True, help="run directory; becomes the reward model directory")
    training_flags(p, RewardConfig, REWARD_DEFAULTS)

    p = add("score", "Accuracy and margins of a reward model on preference pairs.", _cmd_score)
    p.add_argument("--model", required=True, help="reward model directory")
    p.add_argument("--data", required=True, help="preference dataset (.jsonl)")
    add_data_dir(p)

    p = add("dpo", "Direct Preference Optimization of a chat model on preference pairs (all weights or LoRA: --method).",
            _cmd_dpo)
    p.add_argument("--model", required=True, help="SFT (or base) model directory: the policy and its reference")
    p.add_argument("--data", required=True, help="preference dataset (.jsonl: prompt / chosen / rejected)")
    p.add_argument("--out", required=True, help="run directory; becomes the adapter (or model) directory")
    training_flags(p, DPOConfig, DPO_DEFAULTS)

    p = add("kto", "Kahneman-Tversky Optimization of a chat model on unpaired feedback: answers marked good or bad "
                   "(all weights or LoRA: --method).", _cmd_kto)
    p.add_argument("--model", required=True, help="SFT (or base) model directory: the policy and its reference")
    p.add_argument("--data", required=True, help="feedback dataset (.jsonl: prompt / completion / label true|false)")
    p.add_argument("--out", required=True, help="run directory; becomes the adapter (or model) directory")
    training_flags(p, KTOConfig, KTO_DEFAULTS)
