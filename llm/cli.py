"""Command-line interface to the `llm` core: one subcommand per job, each a thin layer over a function.

`register_commands(subparsers)` adds the subcommands to any argparse parser; the `workbench`
console script (web/cli.py) adds `serve` and `worker` beside them. `python -m llm` runs these alone.
Heavy imports (torch, tiktoken) happen inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _train_settings(defaults: dict | None = None) -> dict:
    """TrainConfig's declared settings (llm/train_config.py), with a job's own defaults shown in --help."""
    from llm.params import settings_of
    from llm.train_config import TrainConfig

    return {name: spec.with_default(defaults[name]) if defaults and name in defaults else spec
            for name, spec in settings_of(TrainConfig).items()}


def _fine_tuning_train_settings(defaults) -> dict:
    """The same for a kind that starts from trained weights (`llm.train_config.FineTuningDefaults`): --lr has
    no fixed default, since it depends on --full."""
    settings = _train_settings(defaults.loop)
    settings["lr"] = dataclasses.replace(settings["lr"], default=None, help=defaults.lr_help)
    return settings


def _refuse_to_overwrite(out: Path, resume: bool) -> None:
    if (out / "checkpoint").exists() and not resume:
        raise ValueError(f"{out} already holds a training checkpoint: pass --resume to continue it, "
                         f"or choose another --out")


def _cmd_pretrain(args) -> None:
    from llm.params import values_from_arguments
    from llm.pretrain import pretrain
    from llm.train import TrainConfig

    out = Path(args.out)
    _refuse_to_overwrite(out, args.resume)
    train_config = TrainConfig(**values_from_arguments(args, _train_settings()))
    result = pretrain(args.data, out, preset=args.preset, train_config=train_config,
                      data_dir=args.data_dir, resume=args.resume)
    print(json.dumps(result, indent=2, default=str))


def _cmd_sft(args) -> None:
    from tqdm import tqdm

    from llm.params import settings_of, values_from_arguments
    from llm.sft import sft
    from llm.sft_config import SFT_DEFAULTS, SFTConfig, sft_train_config
    from llm.train import checkpoint_step

    out = Path(args.out)
    _refuse_to_overwrite(out, args.resume)
    sft_config = SFTConfig(**values_from_arguments(args, settings_of(SFTConfig)))
    train_config = sft_train_config(sft_config, **values_from_arguments(args, _fine_tuning_train_settings(SFT_DEFAULTS)))
    bar = tqdm(total=train_config.max_steps, initial=checkpoint_step(out) if args.resume else 0, desc="sft",
               unit="step", dynamic_ncols=True)

    def on_metrics(record: dict) -> None:
        bar.update(record["step"] - bar.n)
        bar.set_postfix({key: f"{record[key]:.4f}" for key in ("loss", "val_loss", "mean_token_accuracy")
                         if isinstance(record.get(key), float)})

    try:
        result = sft(args.model, args.data, out, sft_config=sft_config, train_config=train_config,
                     data_dir=args.data_dir, on_metrics=on_metrics, resume=args.resume, log=tqdm.write)
    finally:
        bar.close()
    print(json.dumps(result, indent=2, default=str))


def _cmd_eval(args) -> None:
    from llm.evaluate import evaluate

    result = evaluate(args.model, args.data, data_dir=args.data_dir, device=args.device)
    for name in ("val_loss", "perplexity", "val_bpb"):
        print(f"{name:<11} {result[name]:.4f}")
    print(f"{'tokens':<11} {result['tokens']}")


def _sampling_settings(args):
    from llm.generate import SamplingSettings

    return SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def _load_for_generation(args):
    from llm.checkpoint import load_model
    from llm.device import pick_device

    return load_model(args.model, device=pick_device(args.device), data_dir=args.data_dir)


def _cmd_best_of(args, model, tokenizer, settings) -> None:
    from llm.best_of_n import best_of_n
    from llm.checkpoint import read_config
    from llm.reward import load_reward_model

    if not args.chat or not args.reward_model:
        raise ValueError("--best-of needs --chat and --reward-model")
    if read_config(args.reward_model)["tokenizer"] != tokenizer.name:
        raise ValueError(f"the reward model reads tokenizer {read_config(args.reward_model)['tokenizer']!r}, "
                         f"the model writes with {tokenizer.name!r}: they must be the same")
    scorer = load_reward_model(args.reward_model, device=next(model.parameters()).device)
    candidates = best_of_n(model, tokenizer, [{"role": "user", "content": args.prompt}], scorer, args.best_of,
                           settings, args.system)
    print(candidates[0].text)
    print(f"--- all {len(candidates)} answers, best first (reward) ---", file=sys.stderr)
    for candidate in candidates:
        print(f"{candidate.reward:+.4f}  [{candidate.index}] {candidate.text}", file=sys.stderr)


def _cmd_generate(args) -> None:
    from llm.generate import chat_prompt, generate_text, stream_text

    model, tokenizer = _load_for_generation(args)
    settings = _sampling_settings(args)
    if args.best_of is not None or args.reward_model:
        _cmd_best_of(args, model, tokenizer, settings)
        return
    # --chat: the prompt is a user message, rendered with the chat template; the reply ends at <|im_end|>.
    prompt, stops, shown = args.prompt, None, args.prompt
    if args.chat:
        prompt, stops = chat_prompt(tokenizer, [{"role": "user", "content": args.prompt}], args.system)
        shown = ""
    if args.num_samples == 1:
        sys.stdout.write(shown)
        for delta in stream_text(model, tokenizer, prompt, settings, stop_ids=stops):
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    for index, text in enumerate(generate_text(model, tokenizer, prompt, settings, num_samples=args.num_samples,
                                               stop_ids=stops)):
        print(f"--- sample {index + 1} ---\n{shown}{text}")


def _cmd_chat(args) -> None:
    """A conversation on stdin/stdout: each line is a user turn, the reply streams back. /reset starts over."""
    from llm.checkpoint import is_chat_model
    from llm.generate import chat_reply, stream_text

    model, tokenizer = _load_for_generation(args)
    settings = _sampling_settings(args)
    chat = is_chat_model(args.model)
    if chat:
        print(f"chatting with {args.model}; empty line or /exit ends, /reset starts a new conversation")
    else:
        print(f"note: {args.model} is a base model (not fine-tuned on conversations): each line is completed "
              f"as plain text, with no chat template and no memory of earlier lines")
    history: list[dict] = []
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return
        line = line.strip()
        if not line or line == "/exit":
            return
        if line == "/reset":
            history.clear()
            continue
        sys.stdout.write("model> " + ("" if chat else line))
        reply = []
        if chat:
            history.append({"role": "user", "content": line})
            deltas = chat_reply(model, tokenizer, history, settings, stream=True, system_prompt=args.system)
        else:
            deltas = stream_text(model, tokenizer, line, settings)
        for delta in deltas:
            reply.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if chat:
            history.append({"role": "assistant", "content": "".join(reply)})


def _cmd_merge(args) -> None:
    from llm.lora import merge_adapter

    print(f"merged -> {merge_adapter(args.model, args.out, base_model_dir=args.base)}")


def _cmd_import_gpt2(args) -> None:
    from llm.hf_gpt2 import import_hf_gpt2

    print(f"imported -> {import_hf_gpt2(getattr(args, 'from'), args.out)}")


def _cmd_export_hf(args) -> None:
    from llm.hf_gpt2 import export_hf_gpt2

    print(f"exported -> {export_hf_gpt2(args.model, args.out, data_dir=args.data_dir)}")


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the llm subcommands (each sets `func`) to an argparse subparsers object."""
    # Declarations only (no torch): training flags come from the config dataclasses' own declarations.
    from llm.params import add_arguments, settings_of
    from llm.sft_config import SFT_DEFAULTS, SFTConfig

    def add(name: str, help_text: str, func) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(func=func)
        return parser

    def add_sampling(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-new-tokens", type=int, default=100)
        parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
        parser.add_argument("--top-k", type=int, default=None)
        parser.add_argument("--top-p", type=float, default=None)
        parser.add_argument("--seed", type=int, default=None, help="same seed, same text")
        parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])

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
    add_arguments(p, _train_settings())
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    add_data_dir(p)

    p = add("sft", "Fine-tune a model on conversations (a LoRA adapter, or every weight with --full); the loss "
                   "is on the assistant's answers only.", _cmd_sft)
    p.add_argument("--model", required=True, help="base model directory (a full model or an adapter)")
    p.add_argument("--data", required=True, help="chat dataset (.jsonl): OpenAI messages, ShareGPT conversations, Alpaca "
                                                 "instruction/output, or prompt/completion")
    p.add_argument("--out", required=True, help="run directory; becomes the adapter (or model) directory")
    add_arguments(p, settings_of(SFTConfig))
    add_arguments(p, _fine_tuning_train_settings(SFT_DEFAULTS))
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    add_data_dir(p)

    from llm.cli_preferences import register_preference_commands

    register_preference_commands(add, add_data_dir)

    p = add("eval", "Validation loss, perplexity and bits per byte of a model on prepared data.", _cmd_eval)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="prepared directory")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_data_dir(p)

    from llm.cli_evaluate import register_evaluate_command

    register_evaluate_command(add, add_data_dir)

    p = add("generate", "Generate text from a model, streamed as it is produced.", _cmd_generate)
    p.add_argument("--model", required=True, help="model or adapter directory")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true",
                   help="the prompt is a user message: render the chat template, stop at <|im_end|>")
    p.add_argument("--system", help="system prompt (with --chat)")
    add_sampling(p)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--best-of", type=int, default=None, metavar="N",
                   help="with --chat and --reward-model: sample N answers (one shared prefill), show the best")
    p.add_argument("--reward-model", help="reward model directory that scores the --best-of answers")
    add_data_dir(p)

    p = add("chat", "Chat with a model on the terminal, replies streamed (base models complete each line).",
            _cmd_chat)
    p.add_argument("--model", required=True, help="model or adapter directory")
    p.add_argument("--system", help="system prompt")
    add_sampling(p)
    add_data_dir(p)

    p = add("merge", "Merge a LoRA adapter into its base model: a full model directory.", _cmd_merge)
    p.add_argument("--model", required=True, help="adapter directory")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--base", help="base model directory (default: the one the adapter names)")

    p = add("import-gpt2", "Import a local Hugging Face GPT-2 checkpoint (safetensors).", _cmd_import_gpt2)
    p.add_argument("--from", required=True, help="Hugging Face model directory")
    p.add_argument("--out", required=True, help="model directory to write")

    p = add("export-hf", "Export a model to a Hugging Face GPT-2 directory (an adapter is merged first).",
            _cmd_export_hf)
    p.add_argument("--model", required=True, help="model or adapter directory")
    p.add_argument("--out", required=True, help="Hugging Face directory to write")
    add_data_dir(p)


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
