"""The sweep GRPO's defaults are chosen on: learning rate x method on the "sweep" family (llm/synthetic_tasks.py),
never on the "test" family the learning test checks (tests/llm/test_grpo_learn.py).

    python -m bench.sweep_grpo [--methods full,lora] [--json-out FILE]

The start is the DPO sweep's (bench/sweep_defaults.py): the tiny preset's cached base, SFT on chats answered with
the keyword rule's chosen or rejected sentence half and half, so about half its sampled answers name a colour.
GRPO then practises on the rule's training prompts with the format verifier (`sentence_pattern`: one of the
family's sentence shapes with a colour in its slot) at its defaults except the rate (and beta); the score is the
verifier's pass rate on answers sampled to held-out prompts (fresh nouns) minus the start's, and no score where the
share of well-formed sentences (llm.synthetic_tasks.well_formed: the family's own words in every slot) fell by more
than WELL_FORMED_DROP: a run that games its verifier is not learning. Rows are printed as
JSON lines; docs/defaults.md ("GRPO") has the table.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from bench.sweep_defaults import FAMILY, HELD_OUT, SFT_START_LR, SWEEP_CACHE, TRAIN_CHATS, base_model, quiet, run_sft
from llm import synthetic_tasks as tasks

RULE = "keyword"
PROMPTS = 400
SAMPLES = 4  # answers per held-out prompt, at temperature 1: 160 samples measure a share to about +-4 points
# Rates a factor ~3 apart around the DPO sweep's best at width 64 (all weights 1e-3, LoRA 3e-3), and beta 0 (TRL's
# default) against 0.04 (DeepSeekMath's) for all weights.
GRID = (("full", 1e-4, 0.0), ("full", 3e-4, 0.0), ("full", 1e-3, 0.0), ("full", 3e-3, 0.0), ("full", 3e-4, 0.04),
        ("full", 1e-3, 0.04), ("lora", 3e-4, 0.0), ("lora", 1e-3, 0.0), ("lora", 3e-3, 0.0), ("lora", 1e-2, 0.0))
# A run whose share of well-formed answers falls by more than this gamed its verifier: it does not count as learning.
WELL_FORMED_DROP = 0.1


def sentence_pattern(family: str, rule: str) -> str:
    """The format verifier's pattern: one of the family's sentence shapes, any lower-case word in its word slots,
    and one of the rule's preferred words or phrases in the rule's slot. What a person writes for "answer in this
    shape, with a colour" (sweep) or "..., closing politely" (test). A looser "a sentence that names a colour",
    [A-Z][a-z ,]*(colour)[a-z ,]*\\., was gamed at once ("I thinks red red red red red red red.")."""
    preferred = "(?:" + "|".join(re.escape(word) for word in tasks.get_rule(family, rule).preferred) + ")"
    shapes = []
    for statement in tasks.get_family(family).statements:
        shape = re.escape(statement)
        for name in ("noun", "adjective", "place"):
            shape = shape.replace(re.escape("{" + name + "}"), "[a-z]+")
        shapes.append(shape.replace(re.escape("{slot}"), preferred))
    return "(?:" + "|".join(shapes) + ")"


def grpo_prompts(family: str, rule: str, count: int, seed: int, held_out: bool = False) -> list[dict]:
    """Prompt records (no reference answers: the format verifier needs none) from the rule's pairs' prompts."""
    return [{"prompt": pair["prompt"]} for pair in tasks.preference_pairs(count, seed, family, rule, held_out)]


def verifier_scores(model_dir: Path, prompts: list, pattern: str | None, family: str, rule: str | None = None,
                    samples: int = SAMPLES, seed: int = 0, kind: str = "format", references: list | None = None) -> dict:
    """`samples` answers to each prompt at temperature 1 (GRPO's sampling): the share the verifier `kind` (with
    `pattern`, or against each prompt's reference in `references`) passes; with a `rule`, the share with its property
    in a well-formed sentence of the family (llm.synthetic_tasks) and the well-formed share; the share that ended
    their turn, and three examples."""
    import torch

    from llm.checkpoint import load_model
    from llm.chat import end_of_turn_id
    from llm.grpo import PromptExample, sample_answers
    from llm.grpo_config import GRPOConfig
    from llm.generate import _undecodable_ids, chat_prompt
    from llm.synthetic_scores import MAX_ANSWER_TOKENS
    from llm.verifiers import Verifier

    torch.manual_seed(seed)
    model, tokenizer = load_model(model_dir)
    config = GRPOConfig(max_completion_length=MAX_ANSWER_TOKENS)
    verifier = Verifier(kind, pattern)
    end = end_of_turn_id(tokenizer)
    counts = {"pass_rate": 0, "property": 0, "well_formed": 0, "ended": 0}
    examples, total = [], 0
    for index, messages in enumerate(prompts):
        ids, stops = chat_prompt(tokenizer, messages)
        with torch.no_grad():
            answers = sample_answers(model, tokenizer, PromptExample(messages, ids, None), samples, config,
                                     seed * 7919 + index, stops | {tokenizer.eot_id}, _undecodable_ids(tokenizer))
        for answer in answers:
            counts["pass_rate"] += verifier.score(answer.text, references[index] if references else None) >= 1
            if rule is not None:
                formed = tasks.well_formed(answer.text, family)
                counts["property"] += formed and tasks.has_property(answer.text, family, rule)
                counts["well_formed"] += formed
            counts["ended"] += bool(answer.ids) and answer.ids[-1] == end
            total += 1
        examples.append(answers[0].text)
    return {**{name: count / total for name, count in counts.items()}, "examples": examples[:3]}


def run_grpo(start: Path, out: Path, method: str, lr: float | None, beta: float, prompts: list, pattern: str,
             **given) -> Path:
    from llm.grpo import grpo
    from llm.grpo_config import GRPOConfig, grpo_train_config

    if not (out / "config.json").is_file():
        config = GRPOConfig(method=method, verifier="format", pattern=pattern, beta=beta)
        grpo(start, prompts, out, grpo_config=config, log=quiet,
             train_config=grpo_train_config(config, 64, lr=lr, device="cpu", **given))
    return out


def sweep(grid=GRID, root: Path = SWEEP_CACHE, log=print) -> list[dict]:
    base = base_model("tiny", root, log=log)
    start = run_sft(base, root / "tiny-dpo-start", "full", SFT_START_LR["tiny"],
                    tasks.mixed_conversations(TRAIN_CHATS, seed=5, family=FAMILY, rule=RULE))
    held = [pair["prompt"] for pair in tasks.preference_pairs(HELD_OUT, seed=6, family=FAMILY, rule=RULE,
                                                              held_out=True)]
    pattern = sentence_pattern(FAMILY, RULE)
    before = verifier_scores(start, held, pattern, FAMILY, RULE)
    log(json.dumps({"start": before}))
    prompts = grpo_prompts(FAMILY, RULE, PROMPTS, seed=8)
    rows = []
    for method, lr, beta in grid:
        started = time.perf_counter()
        model = run_grpo(start, root / f"tiny-grpo_{method}-{lr:g}-beta{beta:g}", method, lr, beta, prompts, pattern)
        after = verifier_scores(model, held, pattern, FAMILY, RULE)
        gamed = after["well_formed"] < before["well_formed"] - WELL_FORMED_DROP
        row = {"kind": "grpo", "method": method, "lr": lr, "beta": beta, "start": before["pass_rate"],
               "after": after["pass_rate"], "score": None if gamed else after["pass_rate"] - before["pass_rate"],
               "property": after["property"], "well_formed": after["well_formed"], "ended": after["ended"],
               "seconds": round(time.perf_counter() - started, 1), "example": after["examples"][0]}
        rows.append(row)
        log(json.dumps(row))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    rows = sweep(tuple(row for row in GRID if row[0] in args.methods.split(",")))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
