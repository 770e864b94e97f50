"""The sweep the fine-tuning defaults are fitted on: learning rates × preset × kind on synthetic tasks.

    python -m bench.run --only defaults            (workbench bench --only defaults)
    python -m bench.sweep_defaults [--presets tiny,small,gpt2-124m] [--kinds sft_full,...] [--json-out FILE]

For each preset, a base model is pretrained briefly on the "sweep" family's prose (llm/synthetic_tasks.py) with
a small trained BPE, as a team's first loop would, and cached on disk (`SWEEP_CACHE`, default
~/.cache/workbench/sweep_defaults; delete it to start over). Then, per kind and learning rate, one run at the
kind's defaults except the rate, scored on held-out prompts with fresh vocabulary (llm/synthetic_scores.py):

  sft       share of held-out prompts answered greedily in the format AND ended at the end of the turn
  reward    held-out pair accuracy, per rule (keyword class, length)
  dpo       share of sampled answers (temperature 1) with the rule's property in a well-formed sentence of the
            family (llm.synthetic_tasks.well_formed), minus the SFT start's share;
            the start is an SFT on chosen and rejected answers half and half. A run the degeneration watch
            stopped before any evaluation passed scores as "stopped".

Why a trained 512-id tokenizer and not gpt2's 50,257: the vocabulary head of gpt2 is 3.2 M of the tiny preset's
3.4 M parameters and most of its compute; with 512 ids the tiny model does ~20x fewer FLOPs per token (counted, not
timed), so the grid fits the CPU budget, and item 5 of issue 18 has the product propose such a tokenizer for these
presets anyway. gpt2-124m (`--presets gpt2-124m`, not in the default list: 3-9 min a run here) runs each rule's own
rate, and a factor 3 on either side for all weights: a check at the width the rules are written at, not a fit.
A run's rate is given; everything else is the kind's default (steps, warmup, batch, LoRA rank) as a user gets.
Runs are cached by name in the cache directory (a finished run is scored again, not retrained).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

from llm import synthetic_tasks as tasks

FAMILY = "sweep"
SWEEP_CACHE = Path(os.environ.get("SWEEP_CACHE", Path.home() / ".cache" / "workbench" / "sweep_defaults"))
VOCAB_SIZE = 512
# The base's pretraining: a few hundred steps on the prose, the same run for both presets and the same as the
# learning tests' (tests/llm/test_defaults_learn.py), so the rates are fitted where the tests check them.
PRETRAIN = dict(max_steps=200, batch_size=8, block_size=128, warmup=30)
WIDTH = {"tiny": 64, "small": 384, "gpt2-124m": 768}
# The tiny preset's rates per kind and method (a factor ~3 apart), wide enough to find both edges of the range
# that learns.
GRID = {
    ("sft", "full"): (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    ("sft", "lora"): (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    ("reward", "full"): (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    ("reward", "lora"): (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    ("dpo", "full"): (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    ("dpo", "lora"): (3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
}
# The small preset's runs cost ~15-30x the tiny one's on 2 shared cores (5-9 min an SFT run): two rates per kind,
# near what the tiny preset's best rate predicts for width 384 with power 1 (muP's 1 / width) and power 1/2, and a
# third for SFT (3e-3: power 0); one reward rule.
SMALL_GRID = {
    ("sft", "full"): (3e-4, 1e-3, 3e-3),
    ("reward", "full"): (1e-4, 3e-4),
    ("dpo", "full"): (1e-4, 3e-4),
    # LoRA (what a user gets by choosing it; `auto` never picks it below 200 M parameters): two rates bracketing
    # what the width rule predicts for width 384 (SFT 1.2e-3, reward 4.1e-4, DPO 5e-4), to check the rule there;
    # DPO's third, 3e-3, looks for the cliff its rate sits below on the tiny preset.
    ("sft", "lora"): (1e-3, 3e-3),
    ("reward", "lora"): (3e-4, 1e-3),
    ("dpo", "lora"): (3e-4, 1e-3, 3e-3),
}


def reference_width_grid() -> dict:
    """gpt2-124m (width 768, the reference the rules are written at): each rule's own rate and, for all weights (what
    `auto` picks there), a factor 3 on either side. A check that what the rules extrapolate to learns there and is not
    at an edge, not a fit: a run costs 5-10x the small preset's on 2 cores."""
    from llm.dpo_config import DPO_FULL_LR, DPO_LORA_LR
    from llm.reward_config import REWARD_FULL_LR, REWARD_LORA_LR
    from llm.sft_config import SFT_FULL_LR, SFT_LORA_LR

    width = WIDTH["gpt2-124m"]
    rules = {("sft", "full"): SFT_FULL_LR, ("reward", "full"): REWARD_FULL_LR, ("dpo", "full"): DPO_FULL_LR,
             ("sft", "lora"): SFT_LORA_LR, ("reward", "lora"): REWARD_LORA_LR, ("dpo", "lora"): DPO_LORA_LR}
    grid = {}
    for (kind, method), rule in rules.items():
        rate = rule.at(width)
        grid[(kind, method)] = (rate / 3, rate, rate * 3) if method == "full" else (rate,)
    return grid


KINDS = tuple(f"{kind}_{method}" for kind, method in GRID)
TRAIN_CHATS, TRAIN_PAIRS, HELD_OUT = 800, 400, 40
REWARD_RULES = {"tiny": ("keyword", "length"), "small": ("keyword",), "gpt2-124m": ("keyword",)}
DPO_RULE = "keyword"
# The DPO start's SFT (all weights): a rate that gives the format (on gpt2-124m, about the SFT rule's 5.8e-4).
SFT_START_LR = {"tiny": 3e-3, "small": 1e-3, "gpt2-124m": 6e-4}


def quiet(_line: str) -> None:
    pass


def base_model(preset: str, root: Path = SWEEP_CACHE, family: str = FAMILY, log=print) -> Path:
    """The tokenizer, prose and briefly pretrained base of `preset`, built once and cached under `root`."""
    from llm.prepare import prepare
    from llm.pretrain import pretrain
    from llm.tokenizer import train_tokenizer
    from llm.train_config import TrainConfig

    out = root / f"base-{preset}"
    if (out / "model.safetensors").is_file():
        return out
    prose = tasks.write_prose(root / "prose.txt", 4000, seed=1, family=family)
    tokenizer_dir = root / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        train_tokenizer(iter(tasks.prose_documents(4000, 1, family)), VOCAB_SIZE, tokenizer_dir, name=f"{family}-bpe")
    prepared = root / "prepared"
    if not (prepared / "stats.json").is_file():
        prepare(prose, str(tokenizer_dir), prepared)
    start = time.perf_counter()
    config = TrainConfig(**PRETRAIN, eval_every=0, checkpoint_every=0, device="cpu")
    result = pretrain(prepared, out, preset=preset, train_config=config, log=quiet)
    log(f"pretrained {preset}: {config.max_steps} steps, loss {result['loss']:.3f}, "
        f"{time.perf_counter() - start:.0f} s")
    return out


def _method_config(config_class, method: str, **extra):
    return config_class(method=method, **extra)


def run_sft(base: Path, out: Path, method: str, lr: float, conversations: list, seed: int = 1337) -> Path:
    from llm.sft import sft
    from llm.sft_config import SFTConfig, sft_train_config

    if not (out / "config.json").is_file():
        config = _method_config(SFTConfig, method)
        sft(base, conversations, out, sft_config=config, log=quiet,
            train_config=sft_train_config(config, lr=lr, device="cpu", seed=seed))
    return out


def run_reward(base: Path, out: Path, method: str, lr: float, pairs: list) -> Path:
    from llm.reward import reward
    from llm.reward_config import RewardConfig, reward_train_config

    if not (out / "config.json").is_file():
        config = _method_config(RewardConfig, method)
        reward(base, pairs, out, reward_config=config, log=quiet,
               train_config=reward_train_config(config, lr=lr, device="cpu"))
    return out


def run_dpo(start: Path, out: Path, method: str, lr: float, pairs: list) -> Path | None:
    from llm.degeneration import Degenerated
    from llm.dpo import dpo
    from llm.dpo_config import DPOConfig, dpo_train_config

    if (out / "stopped.txt").is_file():
        return None
    if not (out / "config.json").is_file():
        config = _method_config(DPOConfig, method)
        try:
            dpo(start, pairs, out, dpo_config=config, log=quiet,
                train_config=dpo_train_config(config, lr=lr, device="cpu"))
        except Degenerated as flagged:
            out.mkdir(parents=True, exist_ok=True)
            (out / "stopped.txt").write_text(str(flagged))
            return None
    return out


def sweep_preset(preset: str, kinds: list[str], root: Path = SWEEP_CACHE, log=print) -> list[dict]:
    """One row per (kind, method, rule, lr): the score and the run's seconds."""
    from llm.synthetic_scores import format_score, pair_accuracy, property_share

    base = base_model(preset, root, log=log)
    chats = tasks.format_conversations(TRAIN_CHATS, seed=1, family=FAMILY)
    prompts = tasks.format_prompts(HELD_OUT, seed=2, family=FAMILY, held_out=True)
    rows = []

    def record(row: dict, started: float) -> None:
        row.update(preset=preset, width=WIDTH[preset], seconds=round(time.perf_counter() - started, 1))
        rows.append(row)
        log(json.dumps(row))

    grid = SMALL_GRID if preset == "small" else reference_width_grid() if preset == "gpt2-124m" else GRID
    for kind_method in kinds:
        kind, method = kind_method.split("_")
        if (kind, method) not in grid:
            log(f"{preset}: {kind_method} is not swept on this preset")
            continue
        for lr in grid[(kind, method)]:
            tag = f"{preset}-{kind_method}-{lr:g}"
            if kind == "sft":
                started = time.perf_counter()
                model = run_sft(base, root / tag, method, lr, chats)
                score = format_score(model, prompts, FAMILY)
                record({"kind": kind, "method": method, "rule": "format", "lr": lr, "score": score["share"],
                        "in_format": score["in_format"], "ended": score["ended"], "example": score["examples"][0]},
                       started)
            elif kind == "reward":
                for rule in REWARD_RULES[preset]:
                    started = time.perf_counter()
                    pairs = tasks.preference_pairs(TRAIN_PAIRS, seed=3, family=FAMILY, rule=rule)
                    held = tasks.preference_pairs(HELD_OUT * 2, seed=4, family=FAMILY, rule=rule, held_out=True)
                    model = run_reward(base, root / f"{tag}-{rule}", method, lr, pairs)
                    record({"kind": kind, "method": method, "rule": rule, "lr": lr,
                            "score": pair_accuracy(model, held)}, started)
            else:
                start = run_sft(base, root / f"{preset}-dpo-start", "full", SFT_START_LR[preset],
                                tasks.mixed_conversations(TRAIN_CHATS, seed=5, family=FAMILY, rule=DPO_RULE))
                rule_prompts = [pair["prompt"] for pair in tasks.preference_pairs(
                    HELD_OUT, seed=6, family=FAMILY, rule=DPO_RULE, held_out=True)]
                before = property_share(start, rule_prompts, FAMILY, DPO_RULE)
                started = time.perf_counter()
                pairs = tasks.preference_pairs(TRAIN_PAIRS, seed=7, family=FAMILY, rule=DPO_RULE)
                model = run_dpo(start, root / tag, method, lr, pairs)
                after = property_share(model, rule_prompts, FAMILY, DPO_RULE) if model else None
                record({"kind": kind, "method": method, "rule": DPO_RULE, "lr": lr,
                        "start": before["share"], "after": after and after["share"],
                        "well_formed": after and after["well_formed"], "ended": after and after["ended"],
                        "score": None if after is None else after["share"] - before["share"],
                        "example": after and after["examples"][0]}, started)
    return rows


def best_rates(rows: list[dict]) -> dict:
    """Per (preset, kind, method): the rate with the best mean score over its rules, and that score."""
    scores: dict = {}
    for row in rows:
        key = (row["preset"], row["kind"], row["method"])
        scores.setdefault(key, {}).setdefault(row["lr"], []).append(row["score"] if row["score"] is not None
                                                                   else -math.inf)
    best = {}
    for key, by_lr in scores.items():
        mean = {lr: sum(values) / len(values) for lr, values in by_lr.items()}
        top = max(mean.values())
        # Of rates within 2 points of the best, the geometric middle: the centre of the plateau, not its edge.
        plateau = sorted(lr for lr, value in mean.items() if value >= top - 0.02)
        best["/".join(key)] = {"lr": math.exp(sum(map(math.log, plateau)) / len(plateau)), "score": top,
                               "plateau": plateau}
    return best


def table(rows: list[dict]) -> str:
    """A Markdown table: one line per (preset, kind, method, rule), one column per rate tried."""
    lines, grouped = [], {}
    for row in rows:
        grouped.setdefault((row["preset"], row["kind"], row["method"], row["rule"]), {})[row["lr"]] = row["score"]
    lines.append("| preset | kind | method | rule | score at each lr |")
    lines.append("|---|---|---|---|---|")
    for (preset, kind, method, rule), by_lr in grouped.items():
        cells = "  ".join(f"{lr:g}: {'stopped' if s is None else f'{s:+.2f}' if kind == 'dpo' else f'{s:.2f}'}"
                          for lr, s in sorted(by_lr.items()))
        lines.append(f"| {preset} | {kind} | {method} | {rule} | {cells} |")
    return "\n".join(lines)


def run(quick: bool = False, budget_s: float | None = None, presets=("tiny", "small"), kinds=KINDS,
        root: Path = SWEEP_CACHE) -> dict:
    """bench.run's entry: the sweep (with --quick: the tiny preset's all-weights runs only)."""
    if quick:
        presets, kinds = ("tiny",), [kind for kind in kinds if kind.endswith("full")]
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for preset in presets:
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break
        rows += sweep_preset(preset, list(kinds), root)
    print(table(rows))
    best = best_rates(rows)
    return {"defaults_rows": rows, "defaults_best": best, "defaults_seconds": time.perf_counter() - started,
            **{f"defaults_best_lr[{key}]": value["lr"] for key, value in best.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="workbench sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--cache", default=str(SWEEP_CACHE), help="where base models and runs are kept")
    parser.add_argument("--fresh", action="store_true", help="delete the cache first")
    parser.add_argument("--json-out", metavar="FILE")
    args = parser.parse_args(argv)
    root = Path(args.cache)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    result = run(presets=args.presets.split(","), kinds=args.kinds.split(","), root=root)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({key: value for key, value in result.items() if key != "defaults_rows"}, default=str))
    return result


if __name__ == "__main__":
    main()
