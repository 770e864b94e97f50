"""`workbench evaluate`: one or several models side by side on a multiple-choice benchmark or prepared text.

    workbench evaluate --model runs/a --model runs/b --data bench.jsonl        # acc, acc_norm ± stderr
    workbench evaluate --model runs/a --model runs/b --data prepared/          # loss, perplexity, bits per byte

A file is a benchmark (`llm.multiple_choice`); a directory is prepared token data (`workbench prepare`), of
which the validation split is read, so models with different tokenizers need data prepared with each. The
table is `llm.evaluation_table`'s, the one the Models tab's comparison shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llm.cli_common import add_data_dir
from llm.evaluate_config import EvaluateConfig
from llm.params import add_arguments, settings_of, values_from_arguments


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from llm.chat_data import read_dataset
    from llm.evaluate import evaluate
    from llm.evaluation_table import format_table, results_table
    from llm.multiple_choice import evaluate_benchmark

    config = EvaluateConfig(**values_from_arguments(args, settings_of(EvaluateConfig)))
    data = Path(args.data)
    questions = None if data.is_dir() else read_dataset("benchmark", data)  # read and checked once
    results = []
    for model_dir in args.model:
        if questions is None:
            result = evaluate(model_dir, data, batch_size=config.batch_size, max_batches=config.max_batches,
                              device=args.device, data_dir=args.data_dir)
        else:
            result = evaluate_benchmark(model_dir, questions, config, device=args.device, data_dir=args.data_dir)
        results.append({"model": Path(model_dir).name, "data": data.name, **result})
    print(format_table(*results_table(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def register_evaluate_command(add) -> None:
    """Add `evaluate` with llm/cli.py's `add(name, help, func)`."""
    parser = add("evaluate", "Compare models on a multiple-choice benchmark (.jsonl: question, choices, answer; "
                             "acc and acc_norm with standard errors) or on prepared text (loss, perplexity, bits "
                             "per byte).", _cmd_evaluate)
    parser.add_argument("--model", action="append", required=True,
                        help="model or adapter directory; repeat the flag to compare several")
    parser.add_argument("--data", required=True, help="benchmark .jsonl file, or a prepared directory")
    add_arguments(parser, settings_of(EvaluateConfig))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", metavar="FILE", help="also write every result (each question's scores too) here")
    add_data_dir(parser)
