"""Command-line interface to the `llm` core: one subcommand per job, each a thin layer over a function.

`register_commands(subparsers)` adds the subcommands to any argparse parser; the `workbench`
console script (web/cli.py) adds `serve` and `worker` beside them. `python -m llm` runs these alone.
Heavy imports (torch, tiktoken) happen inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_tokenizers(args) -> None:
    from llm.tokenizer import list_tokenizers

    for entry in list_tokenizers(args.data_dir):
        where = f"  {entry['path']}" if "path" in entry else ""
        print(f"{entry['name']:<20} {entry['vocab_size']:>7} ids  {entry['kind']}{where}")


def _cmd_train_tokenizer(args) -> None:
    from llm.corpus import iter_documents
    from llm.prepare import tqdm_progress
    from llm.tokenizer import train_tokenizer

    out = Path(args.out)
    with tqdm_progress("reading the corpus") as progress:
        tokenizer = train_tokenizer(iter_documents(args.data), args.vocab_size, out, name=args.name or out.name,
                                    on_progress=progress)
    sample = "Hello world! Tokenizers turn text into tokens."
    print(f"trained {tokenizer.name}: {tokenizer.vocab_size} ids (incl. specials) -> {out}")
    print(f"example: {sample!r} -> {len(tokenizer.encode(sample))} tokens")


def _cmd_prepare(args) -> None:
    from llm.prepare import prepare, tqdm_progress

    progress = tqdm_progress("prepare")
    try:
        stats = prepare(args.data, args.tokenizer, args.out, val_fraction=args.val_fraction, seed=args.seed,
                        data_dir=args.data_dir, on_progress=progress, scrub_pii=args.scrub_pii)
    finally:
        progress.close()
    print(json.dumps(stats, indent=2))


def _train_config_from_args(args):
    from llm.train import TrainConfig

    overrides = {name: getattr(args, name) for name in
                 ("max_steps", "batch_size", "block_size", "grad_accum", "lr", "warmup", "eval_every",
                  "checkpoint_every", "log_every", "seed", "device", "dtype", "compile")
                 if getattr(args, name, None) is not None}
    return TrainConfig(**overrides)


def _cmd_pretrain(args) -> None:
    from llm.pretrain import pretrain

    out = Path(args.out)
    if (out / "checkpoint").exists() and not args.resume:
        raise ValueError(f"{out} already holds a training checkpoint: pass --resume to continue it, "
                         f"or choose another --out")
    result = pretrain(args.data, out, preset=args.preset, train_config=_train_config_from_args(args),
                      data_dir=args.data_dir, resume=args.resume)
    print(json.dumps(result, indent=2, default=str))


def _cmd_eval(args) -> None:
    from llm.evaluate import evaluate

    result = evaluate(args.model, args.data, data_dir=args.data_dir, device=args.device)
    for name in ("val_loss", "perplexity", "val_bpb"):
        print(f"{name:<11} {result[name]:.4f}")
    print(f"{'tokens':<11} {result['tokens']}")


def _cmd_generate(args) -> None:
    from llm.checkpoint import load_model
    from llm.device import pick_device
    from llm.generate import SamplingSettings, generate_text, stream_text

    model, tokenizer = load_model(args.model, device=pick_device(args.device), data_dir=args.data_dir)
    settings = SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.num_samples == 1:
        sys.stdout.write(args.prompt)
        for delta in stream_text(model, tokenizer, args.prompt, settings):
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    for index, text in enumerate(generate_text(model, tokenizer, args.prompt, settings,
                                               num_samples=args.num_samples)):
        print(f"--- sample {index + 1} ---\n{args.prompt}{text}")


def _cmd_import_gpt2(args) -> None:
    from llm.hf_gpt2 import import_hf_gpt2

    print(f"imported -> {import_hf_gpt2(getattr(args, 'from'), args.out)}")


def _cmd_export_hf(args) -> None:
    from llm.hf_gpt2 import export_hf_gpt2

    print(f"exported -> {export_hf_gpt2(args.model, args.out)}")


def _cmd_bench(args) -> None:
    from bench.run import main as bench_main

    bench_main((["--quick"] if args.quick else []) + (["--only", args.only] if args.only else []))


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the llm subcommands (each sets `func`) to an argparse subparsers object."""
    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(func=func)
        return parser

    def add_data_dir(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", default=os.environ.get("WORKBENCH_DATA_DIR"),
                            help="workbench data directory (for trained tokenizers); default $WORKBENCH_DATA_DIR")

    p = add("tokenizers", "List the tokenizers available offline.", _cmd_tokenizers)
    add_data_dir(p)

    p = add("train-tokenizer", "Train a BPE tokenizer (rustbpe) on a corpus; saved in tiktoken format.",
            _cmd_train_tokenizer)
    p.add_argument("--data", required=True, help="corpus file (.txt, .jsonl, .csv, .parquet)")
    p.add_argument("--vocab-size", type=int, default=8192, help="base vocabulary size (specials come on top)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--name", help="tokenizer name (default: the output directory's name)")

    p = add("prepare", "Clean, deduplicate, split and tokenize a corpus into token files + stats.json.",
            _cmd_prepare)
    p.add_argument("--data", required=True, help="corpus file (.txt: blank-line separated documents; "
                                                 ".jsonl: a 'text' field; .csv/.parquet: a 'text' column)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, cl100k, or a trained tokenizer (name or dir)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--val-fraction", type=float, default=0.05, help="fraction of documents held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scrub-pii", action="store_true", help="replace e-mail addresses and phone numbers")
    add_data_dir(p)

    p = add("pretrain", "Pretrain a GPT from scratch on prepared token files.", _cmd_pretrain)
    p.add_argument("--data", required=True, help="prepared directory (from `workbench prepare`)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--preset", default="tiny", help="tiny | small | gpt2-124m")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--warmup", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", help="auto | float32 | bfloat16")
    p.add_argument("--compile", help="auto | on | off")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    add_data_dir(p)

    p = add("eval", "Validation loss, perplexity and bits per byte of a model on prepared data.", _cmd_eval)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="prepared directory")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_data_dir(p)

    p = add("generate", "Generate text from a model, streamed as it is produced.", _cmd_generate)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="same seed, same text")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_data_dir(p)

    p = add("import-gpt2", "Import a local Hugging Face GPT-2 checkpoint (safetensors).", _cmd_import_gpt2)
    p.add_argument("--from", required=True, help="Hugging Face model directory")
    p.add_argument("--out", required=True, help="model directory to write")

    p = add("export-hf", "Export a model to a Hugging Face GPT-2 directory.", _cmd_export_hf)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--out", required=True, help="Hugging Face directory to write")

    p = add("bench", "Run the benchmarks against their peers and print a table + one JSON line.", _cmd_bench)
    p.add_argument("--quick", action="store_true", help="fewer, smaller repeats")
    p.add_argument("--only", help="comma-separated subset: train,generate,prepare")


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; user errors print one clear line instead of a traceback."""
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:  # CorpusError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="LLM Workbench: the language-model core.")
    register_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
