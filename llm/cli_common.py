"""What the `workbench` llm subcommands share (llm/cli.py, llm/cli_preferences.py, llm/cli_evaluate.py): the data
directory flag, a training subcommand's flags from the config dataclasses' declarations, the settings a
fine-tuning subcommand (sft, reward, dpo) starts with, and the refusal to overwrite a run directory. Imports no
torch, so `--help` stays fast."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llm.params import Setting, add_arguments, settings_of, values_from_arguments


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=os.environ.get("WORKBENCH_DATA_DIR"),
                        help="workbench data directory (for trained tokenizers); default $WORKBENCH_DATA_DIR")


def add_training_flags(parser: argparse.ArgumentParser, *declared: dict[str, Setting]) -> None:
    """A flag per declared setting (e.g. SFTConfig's, then the loop's with the run's own defaults), then --resume
    and --data-dir: what every training subcommand takes. A flag left out is None: the declared default applies."""
    for settings in declared:
        add_arguments(parser, settings)
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    add_data_dir(parser)


def add_fine_tuning_flags(parser: argparse.ArgumentParser, config_class: type, declared: dict[str, Setting]) -> None:
    """A fine-tuning subcommand's flags: its config's (--method, --lora-r, ...), the loop's with the kind's defaults
    (`FineTuningDefaults.settings`), and --full / --no-full, the older names of --method full / lora."""
    add_training_flags(parser, settings_of(config_class), declared)
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=None,
                        help="older name of --method full (--no-full: --method lora)")


def fine_tuning_settings(args: argparse.Namespace, config_class: type, defaults, train_config_of):
    """(config, TrainConfig) a fine-tuning subcommand runs with: the flags given, checked first; then the method
    "auto" resolved on --model's size and the learning rate, unless --lr, the method's at the model's width,
    both said on the terminal once, before the run starts."""
    from llm.checkpoint import read_config
    from llm.sft_config import resolve_method

    values = values_from_arguments(args, settings_of(config_class))
    loop = values_from_arguments(args, defaults.settings())
    if args.full is not None:
        older = "full" if args.full else "lora"
        if values.get("method", older) != older:
            raise ValueError(f"--{'' if args.full else 'no-'}full means --method {older}, but --method "
                             f"{values['method']} was given: give only --method")
        values["method"] = older
    model_config = read_config(args.model).get("model") or {}
    config, choice = resolve_method(config_class(**values), model_config)
    train_config = train_config_of(config, model_config.get("n_embd"), **loop)
    rate = ("as given" if "lr" in loop else f"the {choice.method} rule at the model's width "
            f"{model_config.get('n_embd', '(not recorded)')}; see docs/defaults.md")
    print(f"method {config.method}: {choice.reason}\nlearning rate {train_config.lr:g} ({rate})")
    return config, train_config


def another_rank() -> bool:
    """Whether this process is a rank other than 0 of a `torchrun` run: it trains, but prints and shows nothing."""
    return os.environ.get("RANK", "0") != "0"


def refuse_to_overwrite(out: Path, resume: bool) -> None:
    if (out / "checkpoint").exists() and not resume:
        raise ValueError(f"{out} already holds a training checkpoint: pass --resume to continue it, "
                         f"or choose another --out")


def print_warnings(result: dict, out: Path) -> None:
    """What a training run's watches found, said last on stderr where it is seen: the loop's not-learning watch
    (llm/learning_watch.py, any kind) and DPO's degeneration watch (llm/degeneration.py)."""
    from llm.learning_watch import read_warning

    for warning in (read_warning(out), result.get("degeneration")):
        if warning:
            print(f"WARNING: {warning}", file=sys.stderr)
