"""The CLI's learning-rate range test (llm/lr_find.py), added to llm/cli.py's parser:

    workbench lr-find pretrain --data PREPARED_DIR --out DIR [--preset tiny] [--batch-size 16 ...]
    workbench lr-find sft --model BASE_DIR --data chats.jsonl --out DIR [--method full ...]
    workbench lr-find reward --model SFT_DIR --data pairs.jsonl --out DIR

Prints the loss at every few rates, the curve in characters with the suggested rate marked, and the suggestion;
writes DIR/lr_find.json and DIR/lr_find.png. The test's own settings (--start-lr, --end-lr, --steps, ...) and the
run's (batch size, block size, the model) are flags from their declarations; the schedule's flags (--lr, --warmup,
--max-steps, ...) are not offered: the test sets them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llm.cli_common import add_data_dir
from llm.lr_find import SET_BY_THE_TEST, LRFindConfig, loop_settings
from llm.params import add_arguments, settings_of, values_from_arguments
from llm.pretrain_config import PretrainConfig
from llm.reward_config import REWARD_DEFAULTS, RewardConfig
from llm.sft_config import SFT_DEFAULTS, SFTConfig
from llm.train_config import TrainConfig

def table(document: dict, rows: int = 15) -> str:
    """The loss at about `rows` rates, evenly spaced over the test."""
    points = document["points"]
    every = max(1, len(points) // rows)
    lines = [f"{'step':>5} {'learning rate':>14} {'loss':>9} {'smoothed':>9}"]
    lines += [f"{p['step']:>5} {p['lr']:>14.2e} {p['loss']:>9.4f} {p['smoothed']:>9.4f}" for p in points[::every]]
    return "\n".join(lines)


def show(document: dict, out: Path) -> None:
    from llm.lr_find import RESULT_FILE, ascii_plot, save_plot, summary

    print(table(document))
    print()
    print(ascii_plot(document))
    print()
    if document["points"]:
        print(f"plot: {save_plot(document, out / 'lr_find.png')}")
    print(f"points: {out / RESULT_FILE}")
    print(summary(document))
    if document.get("suggested_lr"):
        print(f"to use it: --lr {document['suggested_lr']:.2g}")


def _cmd_pretrain(args) -> None:
    from llm.lr_find import lr_find_pretrain

    out = Path(args.out)
    model = PretrainConfig(**values_from_arguments(args, settings_of(PretrainConfig)))
    loop = TrainConfig(**values_from_arguments(args, loop_settings(settings_of(TrainConfig))))
    document = lr_find_pretrain(args.data, out, preset=model.preset, model_overrides=model.overrides or None,
                                config=LRFindConfig(**values_from_arguments(args, settings_of(LRFindConfig))),
                                train_config=loop, data_dir=args.data_dir, log=_quiet)
    show(document, out)


def _cmd_sft(args) -> None:
    from llm.lr_find import lr_find_sft

    out = Path(args.out)
    sft_config = SFTConfig(**values_from_arguments(args, settings_of(SFTConfig)))
    given = values_from_arguments(args, loop_settings(SFT_DEFAULTS.settings()))
    loop = TrainConfig(**{**{k: v for k, v in SFT_DEFAULTS.loop.items() if k not in SET_BY_THE_TEST}, **given})
    document = lr_find_sft(args.model, args.data, out, sft_config=sft_config,
                           config=LRFindConfig(**values_from_arguments(args, settings_of(LRFindConfig))),
                           train_config=loop, data_dir=args.data_dir, log=_quiet)
    show(document, out)


def _cmd_reward(args) -> None:
    from llm.lr_find import lr_find_reward

    out = Path(args.out)
    reward_config = RewardConfig(**values_from_arguments(args, settings_of(RewardConfig)))
    given = values_from_arguments(args, loop_settings(REWARD_DEFAULTS.settings()))
    loop = TrainConfig(**{**{k: v for k, v in REWARD_DEFAULTS.loop.items() if k not in SET_BY_THE_TEST}, **given})
    document = lr_find_reward(args.model, args.data, out, reward_config=reward_config,
                              config=LRFindConfig(**values_from_arguments(args, settings_of(LRFindConfig))),
                              train_config=loop, data_dir=args.data_dir, log=_quiet)
    show(document, out)


def _quiet(line: str) -> None:
    """The loop's per-step lines are the table's rows: only its other lines (data, model) are shown."""
    if not line.startswith("step "):
        print(line)


def register_lr_find_command(add) -> None:
    """Add `lr-find` (with `pretrain`, `sft` and `reward` under it) with llm/cli.py's `add(name, help, func)`."""
    parser = add("lr-find", "Learning-rate range test: a short run with an exponentially rising rate; prints the "
                            "loss against the rate and suggests one.", None)
    targets = parser.add_subparsers(dest="target", required=True, metavar="{pretrain,sft,reward}")

    def target(name: str, help_text: str, func) -> argparse.ArgumentParser:
        sub = targets.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=func)
        return sub

    p = target("pretrain", "The range test of pretraining a GPT from scratch on prepared token files.", _cmd_pretrain)
    p.add_argument("--data", required=True, help="prepared directory (from `workbench prepare`)")
    p.add_argument("--out", required=True, help="directory for lr_find.json and lr_find.png")
    add_arguments(p, settings_of(LRFindConfig))
    add_arguments(p, settings_of(PretrainConfig))
    add_arguments(p, loop_settings(settings_of(TrainConfig)))
    add_data_dir(p)

    p = target("sft", "The range test of fine-tuning a model on conversations.", _cmd_sft)
    p.add_argument("--model", required=True, help="base model directory (a full model or an adapter)")
    p.add_argument("--data", required=True, help="chat dataset (.jsonl), as `workbench sft` takes")
    p.add_argument("--out", required=True, help="directory for lr_find.json and lr_find.png")
    add_arguments(p, settings_of(LRFindConfig))
    add_arguments(p, settings_of(SFTConfig))
    add_arguments(p, loop_settings(SFT_DEFAULTS.settings()))
    add_data_dir(p)

    p = target("reward", "The range test of training a reward model on preference pairs.", _cmd_reward)
    p.add_argument("--model", required=True, help="base or SFT model directory to start from")
    p.add_argument("--data", required=True, help="preference dataset (.jsonl), as `workbench reward` takes")
    p.add_argument("--out", required=True, help="directory for lr_find.json and lr_find.png")
    add_arguments(p, settings_of(LRFindConfig))
    add_arguments(p, settings_of(RewardConfig))
    add_arguments(p, loop_settings(REWARD_DEFAULTS.settings()))
    add_data_dir(p)
