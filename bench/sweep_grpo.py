"""The sweep GRPO's defaults are chosen on: learning rate x method on the "sweep" family (llm/synthetic_tasks.py),
never on the "test" family the learning test checks (tests/llm/test_defaults_learn.py); and with --rlhf, GRPO
against a reward model instead of a verifier (`sweep_rlhf`, RLHF_GRID).

    python -m bench.sweep_grpo [--methods full,lora] [--rlhf] [--json-out FILE]

The start is the DPO sweep's (bench/sweep_defaults.py): the tiny preset's cached base, SFT on chats answered with
the keyword rule's chosen or rejected sentence half and half, so about half its sampled answers name a colour.
GRPO then practises on the rule's training prompts with the format verifier (`sentence_pattern`: one of the
family's sentence shapes with a colour in its slot) at its defaults except the rate (and beta); the score is the
verifier's pass rate on answers sampled to held-out prompts (fresh nouns) minus the start's, and no score where the
share of well-formed sentences (llm.synthetic_tasks.well_formed: the family's own words in every slot) fell by more
than WELL_FORMED_DROP: a run that games its verifier is not learning. Rows are printed as
JSON lines; docs/defaults.md ("GRPO") has the table.

--rlhf: two reward models of the rule from the same start, one on the rule's well-formed pairs, one on pairs of the
start's own answers labeled by the rule (`rule_pairs`, a simulated labeler); their accuracy on the start's own answers
to held-out prompts (`reward_accuracy`: against well-formed and against garbled answers); then GRPO against one of
them per row, scored by the share of well-formed answers with the property. docs/defaults.md ("GRPO against a reward
model") has the table.
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
PROMPTS_SAMPLED_TOGETHER = 16  # prompts whose answers are sampled in one batch (the same answers as one by one)
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


def shape_pattern(family: str) -> str:
    """A format verifier's pattern for answers in one of the family's sentence shapes, any lower-case word in every
    slot (the rule's slot included, where a phrase may stand): the form, not the preference."""
    shapes = []
    for statement in tasks.get_family(family).statements:
        shape = re.escape(statement)
        for name in ("noun", "adjective", "place"):
            shape = shape.replace(re.escape("{" + name + "}"), "[a-z]+")
        shapes.append(shape.replace(re.escape("{slot}"), "(?:[a-z]+|[a-z]+ [a-z]+|[a-z]+ [a-z]+ [a-z]+)"))
    return "(?:" + "|".join(shapes) + ")"


def grpo_prompts(family: str, rule: str, count: int, seed: int, held_out: bool = False) -> list[dict]:
    """Prompt records (no reference answers: the format verifier needs none) from the rule's pairs' prompts."""
    return [{"prompt": pair["prompt"]} for pair in tasks.preference_pairs(count, seed, family, rule, held_out)]


def sampled_answers(model_dir: Path, prompts: list, samples: int = SAMPLES, seed: int = 0,
                    temperature: float = 1.0) -> list[list[tuple[str, bool]]]:
    """`samples` answers (text, ended its turn) to each prompt, sampled as GRPO samples (llm.grpo.sample_answers,
    at `temperature`, up to llm.synthetic_scores.MAX_ANSWER_TOKENS), prompt i's seeded seed * 7919 + i."""
    import torch

    from llm.checkpoint import load_model
    from llm.chat import end_of_turn_id
    from llm.generate import _undecodable_ids, chat_prompt
    from llm.grpo import PromptExample, sample_groups
    from llm.grpo_config import GRPOConfig
    from llm.synthetic_scores import MAX_ANSWER_TOKENS

    torch.manual_seed(seed)
    model, tokenizer = load_model(model_dir)
    config = GRPOConfig(max_completion_length=MAX_ANSWER_TOKENS, temperature=temperature)
    end = end_of_turn_id(tokenizer)
    examples = []
    for messages in prompts:
        ids, stops = chat_prompt(tokenizer, messages)
        examples.append(PromptExample(messages, ids, None))
    groups = []
    for first in range(0, len(examples), PROMPTS_SAMPLED_TOGETHER):
        chunk = examples[first:first + PROMPTS_SAMPLED_TOGETHER]
        with torch.no_grad():  # each prompt's answers are what it sampled alone would give (llm.grpo.sample_groups)
            answered = sample_groups(model, tokenizer, chunk, samples, config,
                                     [seed * 7919 + first + i for i in range(len(chunk))],
                                     stops | {tokenizer.eot_id}, _undecodable_ids(tokenizer))
        groups += [[(answer.text, bool(answer.ids) and answer.ids[-1] == end) for answer in answers]
                   for answers in answered]
    return groups


def verifier_scores(model_dir: Path, prompts: list, pattern: str | None, family: str, rule: str | None = None,
                    samples: int = SAMPLES, seed: int = 0, kind: str = "format", references: list | None = None) -> dict:
    """`samples` answers to each prompt at temperature 1 (GRPO's sampling): the share the verifier `kind` (with
    `pattern`, or against each prompt's reference in `references`) passes (with no `pattern` for the format
    verifier: none); with a `rule`, the share with its property in a well-formed sentence of the family
    (llm.synthetic_tasks) and the well-formed share; the share that ended their turn, and three examples."""
    from llm.verifiers import Verifier

    verifier = Verifier(kind, pattern) if pattern is not None or kind != "format" else None
    counts = {"pass_rate": 0, "property": 0, "well_formed": 0, "ended": 0}
    examples, total = [], 0
    for index, answers in enumerate(sampled_answers(model_dir, prompts, samples, seed)):
        for text, ended in answers:
            if verifier is not None:
                counts["pass_rate"] += verifier.score(text, references[index] if references else None) >= 1
            if rule is not None:
                formed = tasks.well_formed(text, family)
                counts["property"] += formed and tasks.has_property(text, family, rule)
                counts["well_formed"] += formed
            counts["ended"] += ended
            total += 1
        examples.append(answers[0][0])
    return {**{name: count / total for name, count in counts.items()}, "examples": examples[:3]}


def run_grpo(start: Path, out: Path, method: str, lr: float | None, beta: float, prompts: list,
             pattern: str | None = None, reward_model: Path | None = None, **settings) -> Path:
    """GRPO at its defaults but `method`, `lr` (None: the default), `beta` and GRPOConfig `settings`, against the
    format verifier of `pattern` and/or the reward model in `reward_model`; cached in `out`."""
    from llm.grpo import grpo
    from llm.grpo_config import GRPOConfig, grpo_train_config

    if not (out / "config.json").is_file():
        config = GRPOConfig(method=method, verifier="format" if pattern else "none", pattern=pattern, beta=beta,
                            **settings)
        grpo(start, prompts, out, grpo_config=config, log=quiet, reward_model_dir=reward_model,
             train_config=grpo_train_config(config, 64, lr=lr, device="cpu"))
    return out


# ----------------------------------------------------------------------------- RLHF: a reward model instead

def rule_preferred(text: str, family: str, rule: str) -> bool:
    """The simulated labeler's judgement (a rule, not a person): one of the family's sentences with the property."""
    return tasks.well_formed(text, family) and tasks.has_property(text, family, rule)


def rule_pairs(prompts: list, answer_groups: list, family: str, rule: str, seed: int) -> list[dict]:
    """Preference pairs from a policy's own answers labeled by the rule, as a labeling project makes them (and
    llm/demo.py's simulated labeler): each answer the rule does not prefer, garbled ones included, against one it
    prefers to the same prompt (drawn at random); prompts whose answers all agree give none, and empty answers
    (the turn ended at once) none either: a preference dataset refuses an empty answer."""
    import random

    rng = random.Random(seed)
    pairs = []
    for prompt, answers in zip(prompts, answer_groups):
        texts = [text for text, _ in answers if text.strip()]
        good = [text for text in texts if rule_preferred(text, family, rule)]
        for bad in (text for text in texts if not rule_preferred(text, family, rule)):
            if good:
                pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": rng.choice(good)}],
                              "rejected": [{"role": "assistant", "content": bad}]})
    return pairs


def reward_accuracy(reward_dir: Path, prompts: list, answer_groups: list, family: str, rule: str) -> dict:
    """How often the reward model scores an answer the rule prefers above one it does not, over every such couple
    of answers to the same prompt: overall, against well-formed answers without the property ("well_formed") and
    against garbled ones ("garbled"), with the couples counted."""
    from llm.best_of_n import score_answers
    from llm.checkpoint import read_config
    from llm.reward import load_reward_model
    from llm.tokenizer import get_tokenizer

    model, tokenizer = load_reward_model(reward_dir), get_tokenizer(read_config(reward_dir)["tokenizer"])
    right = {"well_formed": 0, "garbled": 0}
    couples = {"well_formed": 0, "garbled": 0}
    for prompt, answers in zip(prompts, answer_groups):
        texts = [text for text, _ in answers]
        scores = score_answers(model, tokenizer, prompt, texts)
        good = [score for text, score in zip(texts, scores) if rule_preferred(text, family, rule)]
        for text, score in zip(texts, scores):
            if rule_preferred(text, family, rule):
                continue
            kind = "well_formed" if tasks.well_formed(text, family) else "garbled"
            right[kind] += sum(g > score for g in good)
            couples[kind] += len(good)
    total = sum(couples.values())
    return {"accuracy": sum(right.values()) / max(1, total), "couples": total,
            **{f"accuracy_{kind}": right[kind] / max(1, couples[kind]) for kind in couples},
            **{f"couples_{kind}": couples[kind] for kind in couples}}


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


# RLHF runs: (which reward model, beta, learning rate (None: the default), other GRPOConfig settings). "pairs": the
# reward model trained on the rule's well-formed pairs (what the DPO test's reward model sees); "own": on pairs of the
# start's own answers labeled by the rule (`rule_pairs`).
RLHF_GRID = (("pairs", 0.0, None, {}), ("own", 0.0, None, {}),
             ("own", 0.0, None, {"missing_eos_penalty": 10.0}), ("pairs", 0.0, None, {"missing_eos_penalty": 10.0}),
             ("own", 0.1, None, {"missing_eos_penalty": 10.0}),
             ("own", 0.0, 3e-4, {"missing_eos_penalty": 10.0}),
             ("own", 0.0, None, {"missing_eos_penalty": 10.0, "verifier_weight": 5.0}),
             ("own", 0.5, None, {"missing_eos_penalty": 10.0}),
             ("own", 0.5, None, {}),
             ("own", 0.5, None, {"verifier_weight": 1.0}), ("own", 0.5, None, {"verifier_weight": 5.0}))
RLHF_CANDIDATES = 4  # answers of the start per training prompt for the labeler (`rule_pairs`)
RLHF_SAMPLES = 8  # answers per held-out prompt when measuring: 320 samples measure a share to about +-2.5 points


def _row_name(reward_data: str, beta: float, lr: float | None, settings: dict) -> str:
    extra = "".join(f"-{key}{value:g}" for key, value in sorted(settings.items()))
    return f"tiny-rlhf_{reward_data}-beta{beta:g}-lr{'default' if lr is None else f'{lr:g}'}{extra}"


def sweep_rlhf(grid=RLHF_GRID, root: Path = SWEEP_CACHE, log=print) -> list[dict]:
    """GRPO against a reward model of the rule (no verifier) from the DPO sweep's start: the reward models' accuracy
    on the start's own answers to held-out prompts (judged by the rule), then per row the share of well-formed
    answers with the property (the rule's preference) before and after, the well-formed and ended shares."""
    from bench.sweep_defaults import run_reward

    base = base_model("tiny", root, log=log)
    start = run_sft(base, root / "tiny-dpo-start", "full", SFT_START_LR["tiny"],
                    tasks.mixed_conversations(TRAIN_CHATS, seed=5, family=FAMILY, rule=RULE))
    held = [pair["prompt"] for pair in tasks.preference_pairs(HELD_OUT, seed=6, family=FAMILY, rule=RULE,
                                                              held_out=True)]
    prompts = grpo_prompts(FAMILY, RULE, PROMPTS, seed=8)
    own_file = root / "tiny-rlhf-own-pairs.jsonl"
    if not own_file.is_file():
        started = time.perf_counter()
        answers = sampled_answers(start, [p["prompt"] for p in prompts], RLHF_CANDIDATES, seed=9)
        tasks.write_jsonl(own_file, rule_pairs([p["prompt"] for p in prompts], answers, FAMILY, RULE, seed=9))
        log(json.dumps({"own_pairs_seconds": round(time.perf_counter() - started, 1)}))
    own = [json.loads(line) for line in own_file.read_text().splitlines()]
    log(json.dumps({"own_pairs": len(own)}))
    # All weights: what `auto` picks for the tiny preset (the learning rate needs the method resolved).
    reward_models = {
        "pairs": run_reward(start, root / "tiny-rm-pairs", "full", None,
                            tasks.preference_pairs(PROMPTS, seed=7, family=FAMILY, rule=RULE)),
        "own": run_reward(start, root / "tiny-rm-own", "full", None, own)}
    held_answers = sampled_answers(start, held, RLHF_SAMPLES, seed=1)
    for name, model in reward_models.items():
        log(json.dumps({"reward_model": name, **reward_accuracy(model, held, held_answers, FAMILY, RULE)}))
    before = verifier_scores(start, held, None, FAMILY, RULE, samples=RLHF_SAMPLES)
    log(json.dumps({"start": before}))
    rows = []
    for reward_data, beta, lr, settings in grid:
        started = time.perf_counter()
        # A row with a verifier weight adds the format verifier of the family's sentence shapes (`shape_pattern`).
        pattern = shape_pattern(FAMILY) if "verifier_weight" in settings else None
        model = run_grpo(start, root / _row_name(reward_data, beta, lr, settings), "full", lr, beta, prompts,
                         pattern=pattern, reward_model=reward_models[reward_data],
                         **settings)
        after = verifier_scores(model, held, None, FAMILY, RULE, samples=RLHF_SAMPLES)
        row = {"kind": "rlhf", "reward_model": reward_data, "beta": beta, "lr": lr, **settings,
               "start": before["property"], "after": after["property"], "well_formed": after["well_formed"],
               "ended": after["ended"], "seconds": round(time.perf_counter() - started, 1),
               "examples": after["examples"]}
        rows.append(row)
        log(json.dumps(row))
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--rlhf", action="store_true", help="the RLHF runs (RLHF_GRID) instead of the verifier's")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    rows = sweep_rlhf() if args.rlhf else sweep(tuple(row for row in GRID if row[0] in args.methods.split(",")))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
