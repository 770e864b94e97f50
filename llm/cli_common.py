"""What the `workbench` llm subcommands share (llm/cli.py, llm/cli_preferences.py, llm/cli_evaluate.py): the data
directory flag, a training subcommand's flags from the config dataclasses' declarations, and the refusal to
overwrite a run directory. Imports no torch, so `--help` stays fast."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from llm.params import Setting, add_arguments


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


def refuse_to_overwrite(out: Path, resume: bool) -> None:
    if (out / "checkpoint").exists() and not resume:
        raise ValueError(f"{out} already holds a training checkpoint: pass --resume to continue it, "
                         f"or choose another --out")
