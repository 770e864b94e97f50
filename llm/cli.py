"""Command-line interface to the `llm` core: one subcommand per job, each a thin layer over a function.

`register_commands(subparsers)` adds the subcommands to any argparse parser; the `workbench`
console script (web/cli.py) adds `serve` and `worker` beside them. `python -m llm` runs these alone.
A training subcommand's flags come from the config dataclasses' declarations (`llm.params.setting`), the
same ones the worker's job kinds take their params from. Heavy imports (torch, tiktoken) happen inside the
handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from llm.cli_common import (add_data_dir, add_fine_tuning_flags, add_training_flags, another_rank,
                            fine_tuning_settings, print_warnings, refuse_to_overwrite)
from llm.cli_clean import register_clean_command
from llm.cli_demo import register_demo_command
from llm.cli_evaluate import register_evaluate_command
from llm.cli_grpo import register_grpo_command
from llm.cli_lr_find import register_lr_find_command
from llm.cli_preferences import register_preference_commands
from llm.params import add_arguments, settings_of, values_from_arguments
from llm.prepare_config import PrepareConfig
from llm.pretrain_config import PretrainConfig
from llm.sft_config import SFT_DEFAULTS, SFTConfig, sft_train_config
from llm.tokenizer_config import TokenizerConfig
from llm.train_config import TrainConfig


def _cmd_tokenizers(args) -> None:
    from llm.tokenizer import list_tokenizers  # tiktoken: loaded by the command that needs it (module docstring)

    for entry in list_tokenizers(args.data_dir):
        where = f"  {entry['path']}" if "path" in entry else ""
        print(f"{entry['name']:<20} {entry['vocab_size']:>7} ids  {entry['kind']}{where}")


def _cmd_train_tokenizer(args) -> None:
    from llm.corpus import iter_documents
    from llm.prepare import tqdm_progress
    from llm.tokenizer import train_tokenizer

    out = Path(args.out)
    config = TokenizerConfig(**values_from_arguments(args, settings_of(TokenizerConfig)))
    with tqdm_progress("reading the corpus") as progress:
        tokenizer = train_tokenizer(iter_documents(args.data), config.vocab_size, out, name=config.name or out.name,
                                    on_progress=progress)
    sample = "Hello world! Tokenizers turn text into tokens."
    print(f"trained {tokenizer.name}: {tokenizer.vocab_size} ids (incl. specials) -> {out}")
    print(f"example: {sample!r} -> {len(tokenizer.encode(sample))} tokens")


def _cmd_prepare(args) -> None:
    from llm.prepare import prepare, tqdm_progress

    options = values_from_arguments(args, settings_of(PrepareConfig))
    progress = tqdm_progress("prepare")
    try:
        stats = prepare(args.data, args.tokenizer, args.out, data_dir=args.data_dir, on_progress=progress,
                        **options)
    finally:
        progress.close()
    print(json.dumps(stats, indent=2))


def _cmd_pretrain(args) -> None:
    from llm.pretrain import pretrain

    out = Path(args.out)
    refuse_to_overwrite(out, args.resume)
    model = PretrainConfig(**values_from_arguments(args, settings_of(PretrainConfig)))
    train_config = TrainConfig(**values_from_arguments(args, settings_of(TrainConfig)))
    result = pretrain(args.data, out, preset=model.preset, train_config=train_config,
                      model_overrides=model.overrides or None, data_dir=args.data_dir, resume=args.resume)
    print(json.dumps(result, indent=2, default=str))
    print_warnings(result, out)


def _cmd_sft(args) -> None:
    from tqdm import tqdm

    from llm.sft import sft
    from llm.train import checkpoint_step

    out = Path(args.out)
    refuse_to_overwrite(out, args.resume)
    sft_config, train_config = fine_tuning_settings(args, SFTConfig, SFT_DEFAULTS, sft_train_config)
    bar = tqdm(total=train_config.max_steps, initial=checkpoint_step(out) if args.resume else 0, desc="sft",
               unit="step", dynamic_ncols=True, disable=another_rank())

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
    print_warnings(result, out)


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

    p = add("tokenizers", "List the tokenizers available offline.", _cmd_tokenizers)
    add_data_dir(p)

    p = add("train-tokenizer", "Train a BPE tokenizer (rustbpe) on a corpus; saved in tiktoken format.",
            _cmd_train_tokenizer)
    p.add_argument("--data", required=True, help="corpus file (.txt, .jsonl, .csv, .parquet)")
    p.add_argument("--out", required=True, help="output directory (its name is the tokenizer's unless --name)")
    add_arguments(p, settings_of(TokenizerConfig))

    p = add("prepare", "Clean, deduplicate, split and tokenize a corpus into token files + stats.json.",
            _cmd_prepare)
    p.add_argument("--data", required=True, help="corpus file (.txt: blank-line separated documents; "
                                                 ".jsonl: a 'text' field; .csv/.parquet: a 'text' column)")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, cl100k, or a trained tokenizer (name or dir)")
    p.add_argument("--out", required=True, help="output directory")
    add_arguments(p, settings_of(PrepareConfig))
    add_data_dir(p)

    p = add("pretrain", "Pretrain a GPT from scratch on prepared token files.", _cmd_pretrain)
    p.add_argument("--data", required=True, help="prepared directory (from `workbench prepare`)")
    p.add_argument("--out", required=True, help="run directory")
    add_training_flags(p, settings_of(PretrainConfig), settings_of(TrainConfig))

    p = add("sft", "Fine-tune a model on conversations (every weight, or a LoRA adapter: --method; auto picks by "
                   "the model's size and says why); the loss is on the assistant's answers only.", _cmd_sft)
    p.add_argument("--model", required=True, help="base model directory (a full model or an adapter)")
    p.add_argument("--data", required=True, help="chat dataset (.jsonl): OpenAI messages, ShareGPT conversations, Alpaca "
                                                 "instruction/output, or prompt/completion")
    p.add_argument("--out", required=True, help="run directory; becomes the adapter (or model) directory")
    add_fine_tuning_flags(p, SFTConfig, SFT_DEFAULTS.settings())

    register_preference_commands(add)
    register_grpo_command(add)
    register_clean_command(add)
    register_lr_find_command(add)

    p = add("eval", "Validation loss, perplexity and bits per byte of a model on prepared data.", _cmd_eval)
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--data", required=True, help="prepared directory")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add_data_dir(p)

    register_evaluate_command(add)
    register_demo_command(add)

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


# Commands that train through llm/train.py: they take their share of the cores (llm/threads.py) and run under
# `torchrun --nproc_per_node=N -m llm <command> ...` as N data-parallel ranks (llm/distributed.py).
TRAINING_COMMANDS = frozenset({"pretrain", "sft", "reward", "dpo", "kto", "grpo", "lr-find"})


@contextmanager
def _stdout_silenced(silent: bool):
    if not silent:
        yield
        return
    with open(os.devnull, "w") as sink, redirect_stdout(sink):
        yield


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed subcommand; user errors print one clear line instead of a traceback.

    Under torchrun only rank 0 prints its results (the other ranks' stdout goes nowhere; their errors still
    reach stderr), and every rank leaves the process group at the end."""
    training = getattr(args, "command", None) in TRAINING_COMMANDS
    quiet_rank = training and another_rank()
    try:
        with _stdout_silenced(quiet_rank):
            if training:
                from llm.threads import apply_thread_budget

                apply_thread_budget(log=None)  # the training log says what it runs with
            args.func(args)
    except (ValueError, FileNotFoundError) as error:  # CorpusError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if training and "WORLD_SIZE" in os.environ:
            from llm.distributed import leave

            leave()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="LLM Workbench: the language-model core.")
    register_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
