"""The `workbench` command line end to end: train-tokenizer → prepare → pretrain (+ resume) → eval → generate,
and sft → generate --chat / chat → merge → export-hf."""

import json
import random
import subprocess
import sys

import pytest

from llm.cli import main


def write_corpus(path, num_documents=120, seed=0):
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog while small models learn to count tokens".split()
    documents = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 60))) for _ in range(num_documents)]
    path.write_text("\n\n".join(documents) + "\n")
    return documents


@pytest.mark.subprocess
def test_every_command_has_help():
    result = subprocess.run([sys.executable, "-m", "llm", "--help"], capture_output=True, text=True, check=True)
    commands = ["tokenizers", "train-tokenizer", "prepare", "pretrain", "sft", "eval", "generate", "chat",
                "merge", "import-gpt2", "export-hf"]
    for command in commands:
        assert command in result.stdout
        sub = subprocess.run([sys.executable, "-m", "llm", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage:" in sub.stdout
    # The benchmarks are a command of the whole app (web/cli.py): llm/ never imports bench/.
    bench = subprocess.run([sys.executable, "-m", "web.cli", "bench", "--help"], capture_output=True, text=True)
    assert bench.returncode == 0 and "--quick" in bench.stdout


def test_malformed_corpus_gives_one_clear_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n')
    code = main(["prepare", "--data", str(bad), "--tokenizer", "gpt2", "--out", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert "bad.jsonl" in error and "line 2" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_full_cli_flow(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus)
    data_dir = tmp_path / "data"

    assert main(["train-tokenizer", "--data", str(corpus), "--vocab-size", "400",
                 "--out", str(data_dir / "tokenizers" / "cli-bpe")]) == 0
    assert main(["tokenizers", "--data-dir", str(data_dir)]) == 0
    assert "cli-bpe" in capsys.readouterr().out

    prepared = tmp_path / "prepared"
    assert main(["prepare", "--data", str(corpus), "--tokenizer", "cli-bpe", "--data-dir", str(data_dir),
                 "--out", str(prepared), "--val-fraction", "0.1"]) == 0
    stats = json.loads((prepared / "stats.json").read_text())
    assert stats["tokenizer"] == "cli-bpe" and stats["documents"] > 100

    run = tmp_path / "run"
    common = ["pretrain", "--data", str(prepared), "--out", str(run), "--preset", "tiny", "--block-size", "32",
              "--batch-size", "4", "--eval-every", "10", "--checkpoint-every", "10", "--log-every", "5",
              "--data-dir", str(data_dir)]
    assert main(common + ["--max-steps", "20"]) == 0
    # the same run directory again without --resume is refused rather than silently overwritten
    assert main(common + ["--max-steps", "30"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(common + ["--max-steps", "30", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and max(steps) == 30

    capsys.readouterr()
    assert main(["eval", "--model", str(run), "--data", str(prepared), "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "val_loss" in out and "perplexity" in out and "val_bpb" in out

    generate = ["generate", "--model", str(run), "--prompt", "the quick", "--max-new-tokens", "12",
                "--seed", "7", "--data-dir", str(data_dir)]
    assert main(generate) == 0
    first = capsys.readouterr().out
    assert main(generate) == 0
    assert capsys.readouterr().out == first  # same seed, same text
    assert first.startswith("the quick") and len(first.strip()) > len("the quick")


@pytest.mark.subprocess
def test_training_flags_come_from_the_declarations():
    """pretrain and sft offer every declared TrainConfig setting under its usual flag; sft shows its own defaults."""
    from llm.cli import build_parser
    from llm.params import settings_of
    from llm.sft_config import SFTConfig
    from llm.train_config import TrainConfig

    parser = build_parser()
    args = parser.parse_args(["pretrain", "--data", "d", "--out", "o", "--max-steps", "7", "--compile", "off",
                              "--device", "cpu", "--min-lr", "1e-5"])
    assert (args.max_steps, args.compile, args.device, args.min_lr, args.lr) == (7, "off", "cpu", 1e-5, None)
    args = parser.parse_args(["sft", "--model", "m", "--data", "d", "--out", "o", "--method", "lora", "--lora-r", "4"])
    assert args.method == "lora" and args.lora_r == 4 and args.max_steps is None and args.full is None
    assert parser.parse_args(["sft", "--model", "m", "--data", "d", "--out", "o", "--full"]).full is True  # older name
    sft_help = subprocess.run([sys.executable, "-m", "llm", "sft", "--help"], capture_output=True, text=True).stdout
    for name in [*settings_of(TrainConfig), *settings_of(SFTConfig)]:
        assert "--" + name.replace("_", "-") in sft_help
    flat = " ".join(sft_help.split())
    assert "optimizer steps (default: 200)" in flat  # SFT_DEFAULTS, not pretraining's
    assert "{auto,lora,full}" in flat and "auto: all weights for a model of up to 200 M parameters" in flat
    assert "empty: chosen from the model's width (see docs/defaults.md)" in flat


def test_the_older_full_flag_and_method_must_agree(tmp_path, capsys):
    required = ["--model", str(tmp_path / "none"), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert main(["sft", *required, "--full", "--method", "lora"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --full means --method full, but --method lora was given: "
                                               "give only --method")


@pytest.mark.slow
def test_sft_says_what_auto_picked_and_why_before_it_starts(tmp_path, capsys):
    """No --method, no --lr: the tiny model (3.3 M parameters, 64 wide) is trained in full, at the full rule's rate
    for its width, and the terminal says so before the run."""
    import torch

    from llm.checkpoint import read_config, save_model
    from llm.model import GPT, config_from_preset
    from llm.sft_config import SFT_DEFAULTS

    torch.manual_seed(0)
    base = save_model(GPT(config_from_preset("tiny", 50_257, block_size=64)), tmp_path / "base", "gpt2")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}."},
                                                     {"role": "assistant", "content": f"{w} {w}."}]}) + "\n"
                            for w in ["apple", "river", "stone", "cloud"] * 3))
    assert main(["sft", "--model", str(base), "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "2",
                 "--batch-size", "4", "--block-size", "64", "--eval-every", "0", "--warmup", "0", "--log-every", "1",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rate = SFT_DEFAULTS.full_lr.at(64)
    assert out.startswith("method full: all weights: 3.3 M parameters; below 200 M an adapter saves little memory")
    assert f"learning rate {rate:g} (the full rule at the model's width 64; see docs/defaults.md)" in out
    config = read_config(tmp_path / "run")
    assert config["architecture"] == "gpt" and config["sft"]["method"] == "full"
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(rate / 10 <= step["lr"] <= rate for step in steps)  # the cosine from that peak to a tenth of it


# A training subcommand and its job kind: the kind's params that are not rows of the database or the run's name.
KIND_OF_COMMAND = {"train-tokenizer": "train_tokenizer", "prepare": "prepare", "pretrain": "pretrain", "sft": "sft",
                   "reward": "reward", "dpo": "dpo"}
ROWS_AND_NAMES = {"dataset_id", "model_id", "project_ids", "include_arena", "tokenizer",
                  "new_tokenizer_vocab"}  # a pretrain job's first stage; on the command line: workbench train-tokenizer


@pytest.mark.parametrize("command", KIND_OF_COMMAND)
def test_each_training_command_offers_its_kinds_settings_with_the_same_rules(command, tmp_path, capsys):
    """Every setting a job kind declares is a flag of its subcommand (both derive from the llm config dataclasses),
    and a number out of the kind's bounds is refused by the command in the same words."""
    from llm.cli import build_parser
    from worker.jobs.params import PLACEMENT_PARAMS, JobParamsError, check_params
    from worker.kinds import KINDS

    spec = KINDS[KIND_OF_COMMAND[command]]
    subcommand = build_parser()._subparsers._group_actions[0].choices[command]
    flags = {action.dest for action in subcommand._actions}
    # devices and nodes place a job on the queue's workers; on the command line, torchrun's --nproc-per-node and --nnodes.
    declared = {name for name in spec.params if name not in ROWS_AND_NAMES and name not in PLACEMENT_PARAMS}
    if command != "train-tokenizer":
        declared.discard("name")  # the model a run makes is named by its --out directory
    assert declared <= flags, declared - flags
    required = ["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    if command in ("sft", "reward", "dpo"):
        required += ["--model", str(tmp_path / "none")]
    checked = 0
    for name in sorted(declared):
        setting = spec.params[name]
        if setting.type not in ("int", "float") or setting.minimum is None:
            continue
        wrong = setting.minimum - 1
        with pytest.raises(JobParamsError) as refused:
            check_params(spec.kind, {name: spec.params[name]}, {name: wrong})
        flag = "--" + name.replace("_", "-")
        assert main([command, *required, flag, str(wrong)]) == 2, flag
        assert capsys.readouterr().err.strip() == f"error: {flag} {refused.value.message}"
        checked += 1
    assert checked


@pytest.mark.slow
def test_sft_then_chat_merge_and_export(tmp_path, capsys, monkeypatch):
    import io

    import torch

    from llm.checkpoint import load_model, read_config, save_model
    from llm.generate import SamplingSettings, chat_reply
    from llm.model import GPT, config_from_preset
    from llm.tokenizer import get_tokenizer

    torch.manual_seed(0)
    tokenizer = get_tokenizer("gpt2")
    base = save_model(GPT(config_from_preset("tiny", tokenizer.vocab_size, block_size=64)), tmp_path / "base", "gpt2")
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Say {w}."},
                                                     {"role": "assistant", "content": f"{w} {w}."}]}) + "\n"
                            for w in ["apple", "river", "stone", "cloud", "tiger", "lemon"] * 4))
    run = tmp_path / "run"
    sft = ["sft", "--model", str(base), "--data", str(data), "--out", str(run), "--method", "lora", "--lora-r", "4",
           "--batch-size", "4",
           "--block-size", "64", "--eval-every", "3", "--checkpoint-every", "3", "--log-every", "1", "--device", "cpu"]
    assert main(sft + ["--max-steps", "3"]) == 0
    assert read_config(run)["architecture"] == "lora_adapter"
    assert main(sft + ["--max-steps", "6"]) == 2  # an existing run is not overwritten without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(sft + ["--max-steps", "6", "--resume"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert result["step"] == 6 and result["trainable_params"] == 2 * 4 * (256 + 128 + 320 + 320)
    assert result["conversations"] == 24 and result["model_dir"] == str(run)

    # generate --chat renders the template and stops at <|im_end|>: the same text as chat_reply.
    question = "Say apple."
    assert main(["generate", "--model", str(run), "--chat", "--prompt", question, "--temperature", "0",
                 "--max-new-tokens", "8", "--device", "cpu"]) == 0
    model, _ = load_model(run)
    expected = chat_reply(model, tokenizer, [{"role": "user", "content": question}],
                          SamplingSettings(max_new_tokens=8, temperature=0))
    assert capsys.readouterr().out == expected + "\n"

    # chat: a conversation on stdin, each reply streamed after "model> "
    monkeypatch.setattr("sys.stdin", io.StringIO("Say river.\n/reset\nSay stone.\n"))
    assert main(["chat", "--model", str(run), "--temperature", "0", "--max-new-tokens", "5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("model> ") == 2 and "chatting with" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("once upon a time\n"))
    assert main(["chat", "--model", str(base), "--max-new-tokens", "3", "--device", "cpu"]) == 0
    assert "base model" in capsys.readouterr().out

    merged = tmp_path / "merged"
    assert main(["merge", "--model", str(run), "--out", str(merged)]) == 0
    assert read_config(merged)["architecture"] == "gpt" and (merged / "model.safetensors").is_file()
    assert main(["export-hf", "--model", str(run), "--out", str(tmp_path / "hf")]) == 0
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["model_type"] == "gpt2" and hf_config["vocab_size"] == tokenizer.vocab_size
