"""The whole loop on generated data, in one call: `workbench demo --out DIR` (issue 18, item 7).

    tokenizer -> pretrain -> SFT -> candidates -> simulated labels -> reward model -> DPO -> arena

nanochat's runcpu.sh is the anchor: a first-time user sees every stage run on a laptop's CPU (well within 15
minutes: about 1.5 minutes of CPU time) and ends with a preference-trained model. Every stage runs at the
defaults a user gets: the fine-tuning stages (SFT, reward, DPO) are called with no learning rate, method or step
count, so they take whatever llm/sft_config.py, llm/reward_config.py and llm/dpo_config.py say today. Only the
pretraining run's shape is the demo's own (a pretraining run has no "default" that fits a 15-minute budget): a
512-id BPE trained on the prose, and the tiny preset for 2,000 short steps (about a minute of CPU), where GPT-2's
50,257-id head would be most of the model's compute.

The task (the "demo" family below, words no sweep or test uses): a user asks about an object; the answer is one
of three sentence shapes ending in a closing phrase, polite ("glad to help") or rude ("figure it out"). The SFT
data says each half the time, so the SFT model learns the shape and says either closing; the simulated labeler
prefers polite. The labeler is a RULE (`llm.synthetic_tasks.has_property`), not a person: it is said so in the
progress lines, in the labeled pairs (their "labeler" field) and in the report.

What each stage's model is measured on, always on held-out prompts (nouns no training example has):
  base vs SFT   share of greedy answers in the task's form (`well_formed`: one of its sentence shapes) and
                ended at the end of the turn: pretraining alone never answers in it, SFT should nearly always
  reward model  accuracy on held-out pairs (polite vs rude closing, all else equal)
  SFT vs DPO    share of sampled answers (temperature 1) in the form AND polite
                (`llm.synthetic_scores.property_share`); best-of-N with the reward model on the SFT model beside it
  arena         one answer of each model per prompt, voted on by the same rule, as Elo-scale ratings
                (llm/ratings.py): DPO should rate above SFT

`run_demo(out, config)` returns the report (also written as out/report.json and out/report.md).
`DemoConfig.at_scale(0.1)` shrinks data and steps for plumbing tests only: at that scale nothing is claimed
to learn (the fine-tuning steps are then given, as a share of the defaults; the learning rates never are).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

from llm import synthetic_tasks as tasks
from llm.demo_report import duration, stage_result, write_report
from llm.synthetic_tasks import Family, Rule

DEMO = Family(
    name="demo",
    nouns=("apple", "bottle", "button", "camera", "clock", "cushion", "desk", "drum", "fork", "guitar", "hammer",
           "kite", "lamp", "map", "mug", "napkin", "oven", "pencil", "plate", "radio", "rope", "ruler", "sofa",
           "spoon", "stamp", "sock", "table", "ticket", "towel", "tray", "vase", "wheel", "brush", "crayon",
           "envelope", "globe"),
    adjectives=("clean", "broken", "new", "empty", "cheap", "spare", "plain", "loud", "cold", "smooth", "modern",
                "simple", "strong", "fresh", "handy", "neat"),
    places=("office", "shop", "attic", "cellar", "hallway", "porch", "studio", "workshop"),
    verbs=("moved", "packed", "fixed", "sold", "bought", "wrapped", "shared", "stored"),
    questions=("Where is the {adjective} {noun}?", "Can you check the {noun} in the {place}?",
               "Is my {noun} ready?", "What about the {adjective} {noun} from the {place}?",
               "Please look at the {noun} for me."),
    answer="Item: {word} -- ok.",
    answer_pattern=r"Item: [a-z]+ -- ok\.",
    statements=("The {noun} in the {place} is {adjective}, {slot}.", "Your {adjective} {noun} is ready, {slot}.",
                "I checked the {noun} at the {place}, {slot}."),
    long_clause=" after we moved it from the {place} on a {adjective} morning",
    rules={"polite": Rule("polite", preferred=("glad to help", "hope that helps", "happy to assist"),
                          other=("figure it out", "stop asking", "go away"))},
)
RULE = "polite"
LABELER = "rule: prefers a polite closing (simulated labeler, not a person)"
MAX_ANSWER_TOKENS = 48  # llm.synthetic_scores' limit: every task answer is well under it


@dataclass
class DemoConfig:
    """The demo's sizes. The defaults are the real demo (~1.5 minutes of CPU time); `at_scale` shrinks them."""

    preset: str = "tiny"                 # 2 layers of 64: ~0.1 M parameters besides the embeddings
    vocab_size: int = 512                # a BPE trained on the prose: GPT-2's 50,257 ids would dominate the tiny model
    prose_documents: int = 3000          # ~230k tokens of the 512-id BPE
    # 2,000 steps of 8 x 128 tokens (~9 passes over the prose; ~1 minute of CPU): after 200 steps (loss 2.06) SFT
    # at the defaults answered 38 % of held-out prompts in the form (sampled), after 2,000 (loss 1.13) 81 %.
    pretrain_steps: int = 2000
    pretrain_batch_size: int = 8
    pretrain_block_size: int = 128
    pretrain_warmup: int = 50
    sft_conversations: int = 800         # half answered politely, half rudely
    candidate_prompts: int = 400         # prompts the SFT model answers for the labeler
    candidates_per_prompt: int = 4       # a polite and a rude answer among 4 for ~85 % of prompts
    held_out_prompts: int = 40           # measured prompts, with nouns no training example has
    samples_per_prompt: int = 4          # sampled answers per measured prompt (160: a share to about +-4 points)
    held_out_pairs: int = 100            # the reward model's test
    best_of: int = 8
    arena_prompts: int = 80
    threads: int = 1                     # torch threads (see run_demo)
    fine_tuning_share: float = 1.0       # tests only: < 1 gives SFT, reward and DPO this share of their default steps
    seed: int = 0

    @classmethod
    def at_scale(cls, scale: float) -> "DemoConfig":
        """The demo with data, steps and measurements times `scale` (plumbing tests: nothing learns at 0.1)."""
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        config = cls()
        if scale == 1:
            return config
        sized = {f.name: max(4, round(getattr(config, f.name) * scale)) for f in fields(cls)
                 if f.type == "int" and f.name not in ("vocab_size", "pretrain_batch_size", "pretrain_block_size",
                                                       "candidates_per_prompt", "best_of", "seed",
                                                       "threads")}
        sized["pretrain_warmup"] = max(1, round(config.pretrain_warmup * scale))
        return replace(config, **sized, fine_tuning_share=scale)


# ----------------------------------------------------------------------------- stages and their times

class DemoStopped(Exception):
    """Raised between stages when the caller asked the demo to stop (a job's cancel)."""


class Stages:
    """Numbered progress lines with each stage's wall and CPU time (user + sys of this process, all threads);
    between stages, `should_stop` is asked and `on_progress(stages done, stages)` told."""

    def __init__(self, count: int, out: Path, say: Callable[[str], None],
                 should_stop: Callable[[], bool] = lambda: False,
                 on_progress: Callable[[int, int], None] = lambda done, total: None):
        self.count, self.out, self.say = count, out, say
        self.should_stop, self.on_progress = should_stop, on_progress
        self.done: list[dict] = []
        self.started = time.perf_counter()
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def run(self, name: str, what: str, action: Callable[[Callable[[str], None]], dict]) -> dict:
        """Run `action(log)` (its log goes to out/logs/<name>.log) and return its figures."""
        number = len(self.done) + 1
        if self.should_stop():
            raise DemoStopped(f"stopped before stage {number} of {self.count} ({name})")
        self.say(f"[{number}/{self.count}] {name}: {what} ...")
        wall, cpu = time.perf_counter(), time.process_time()
        with open(self.out / "logs" / f"{name}.log", "w") as log_file:
            def log(line: str) -> None:
                log_file.write(f"{line}\n")
                log_file.flush()
            figures = action(log)
        record = {"stage": name, "what": what, "wall_s": round(time.perf_counter() - wall, 1),
                  "cpu_s": round(time.process_time() - cpu, 1), "figures": figures}
        self.done.append(record)
        total = time.perf_counter() - self.started
        self.say(f"[{number}/{self.count}] {name}: {stage_result(name, figures)[1]}  "
                 f"({duration(record['wall_s'])}, {duration(total)} in all)")
        self.on_progress(number, self.count)
        return figures


# ----------------------------------------------------------------------------- the loop

def _fine_tuning_configs(config_class, defaults, train_config_of, model_dir: Path, share: float):
    """(config, train_config) of a fine-tuning stage: (method auto, None) = the kind's defaults, exactly what a
    user gets. Below share 1 (tests only) the steps are cut to that share of the default; the method and the
    learning rate are still the defaults' (resolved the way the run itself would)."""
    config = config_class()
    if share >= 1:
        return config, None
    from llm.checkpoint import read_config
    from llm.sft_config import resolve_method
    from llm.train_config import fit_schedule_to_steps

    model_config = read_config(model_dir)["model"]
    config, _ = resolve_method(config, model_config)
    steps = max(2, round(defaults.loop["max_steps"] * share))
    schedule = fit_schedule_to_steps({**defaults.loop, "max_steps": steps}, defaults.loop)
    return config, train_config_of(config, model_config.get("n_embd"), max_steps=steps, **schedule)


def preferred(text: str) -> bool:
    """The simulated labeler's rule: an answer in the task's form with a polite closing."""
    return tasks.has_property(text, DEMO, RULE) and tasks.well_formed(text, DEMO)


def rule_label(prompt: list[dict], answers: list[str], rng: random.Random) -> dict | None:
    """A chosen/rejected pair from one prompt's answers by the rule, or None when they all agree. The rejected
    answer is a well-formed one without the property where there is one, so the pair differs in the property."""
    good = [text for text in answers if preferred(text)]
    bad = [text for text in answers if not preferred(text)]
    if not good or not bad:
        return None
    bad.sort(key=lambda text: not tasks.well_formed(text, DEMO))
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": rng.choice(good)}],
            "rejected": [{"role": "assistant", "content": bad[0]}], "labeler": LABELER}


def arena_vote(answer_a: str, answer_b: str) -> str:
    """The rule's vote between two answers, in llm.preference_labels' labels."""
    from llm.preference_labels import Label

    good_a, good_b = preferred(answer_a), preferred(answer_b)
    if good_a != good_b:
        return Label.a if good_a else Label.b
    return Label.tie if good_a else Label.both_bad


def _sample(model_dir: Path, prompts: list[list[dict]], per_prompt: int, seed: int, slot: int) -> list[list[str]]:
    """`per_prompt` answers (temperature 1) of the model to each prompt, seeded per prompt (llm/candidates.py)."""
    from llm.candidates import candidates, prompt_seed
    from llm.checkpoint import load_model
    from llm.generate import SamplingSettings

    model, tokenizer = load_model(model_dir)
    settings = SamplingSettings(max_new_tokens=MAX_ANSWER_TOKENS, temperature=1.0)
    return [[c.text for c in candidates(model, tokenizer, prompt, settings, prompt_seed(seed, index, slot),
                                        per_prompt)] for index, prompt in enumerate(prompts)]


def _share(model_dir: Path, prompts: list[list[dict]], config: DemoConfig, greedy: bool = False) -> dict:
    """llm.synthetic_scores.property_share's figures, with form_and_ended: in the form and ended the turn
    (an answer cut at the length limit is longer than any form, so `well_formed` already fails it). `greedy`:
    one answer per prompt at temperature 0, as llm.synthetic_scores.format_score measures a format (what the
    model "knows"); else `samples_per_prompt` at temperature 1 (the policy's own distribution, as DPO sees it)."""
    from llm.synthetic_scores import property_share

    figures = property_share(model_dir, prompts, DEMO, RULE, samples_per_prompt=1 if greedy else
                             config.samples_per_prompt, seed=config.seed, temperature=0.0 if greedy else 1.0)
    figures["form_and_ended"] = min(figures["well_formed"], figures["ended"])
    return {**figures, "sampling": "greedy" if greedy else "temperature 1"}


def run_demo(out: str | os.PathLike, config: DemoConfig | None = None,
             say: Callable[[str], None] = print, should_stop: Callable[[], bool] = lambda: False,
             on_progress: Callable[[int, int], None] = lambda done, total: None,
             tokenizer_name: str = "demo") -> dict:
    """Run the loop into `out` (which must not hold an earlier demo) and return the report. `should_stop` is asked
    between stages (DemoStopped is raised when it says yes); `on_progress(stages done, stages)` after each.
    `tokenizer_name` names the BPE it trains (a job names it after itself, so `publish` can register it)."""
    from llm.threads import set_threads

    config = config or DemoConfig()
    out = Path(out).resolve()
    if (out / "report.json").exists() or (out / "base").exists():
        raise ValueError(f"{out} already holds a demo run: choose another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    # One thread, whatever the cores: the tiny model's matmuls (64 wide) are too small to split, and a second
    # thread only waits on the first. Measured on 2 busy cores: sampling 35x and pretraining 2.5x the CPU time
    # with 2 threads as with 1. One thread also leaves the other core to the rest of the machine.
    say(set_threads(config.threads, "the demo's tiny model gains nothing from more").describe())
    stages = Stages(8, out, say, should_stop, on_progress)
    held_out = [pair["prompt"] for pair in tasks.preference_pairs(config.held_out_prompts, config.seed + 1, DEMO,
                                                                  RULE, held_out=True)]
    say(f"the labeler in this demo is a rule, not a person: {LABELER}")

    def tokenizer_stage(log) -> dict:
        from llm.corpus import iter_documents
        from llm.prepare import prepare
        from llm.tokenizer import train_tokenizer

        prose = tasks.write_prose(out / "data" / "prose.txt", config.prose_documents, config.seed, DEMO)
        tokenizer = train_tokenizer(iter_documents(prose), config.vocab_size, out / "tokenizer",
                                    name=tokenizer_name)
        stats = prepare(prose, str(out / "tokenizer"), out / "prepared")
        log(json.dumps(stats))
        return {"documents": stats["documents"], "vocab_size": tokenizer.vocab_size, "tokens": stats["tokens"],
                "bytes_per_token": stats["bytes_per_token"]}

    stages.run("tokenizer", f"a {config.vocab_size}-id BPE on {config.prose_documents:,} documents of generated "
                            f"prose, then the prose tokenized", tokenizer_stage)

    def pretrain_stage(log) -> dict:
        from llm.pretrain import pretrain
        from llm.train_config import TrainConfig

        train_config = TrainConfig(max_steps=config.pretrain_steps, batch_size=config.pretrain_batch_size,
                                   block_size=config.pretrain_block_size, warmup=config.pretrain_warmup,
                                   eval_every=0, checkpoint_every=0, seed=config.seed)
        result = pretrain(out / "prepared", out / "base", preset=config.preset, train_config=train_config, log=log)
        return {"preset": config.preset, "steps": result["step"], "loss": round(result["loss"], 3),
                "val_loss": result.get("val_loss") and round(result["val_loss"], 3)}

    stages.run("pretrain", f"the {config.preset} preset for {config.pretrain_steps} steps on the prose",
               pretrain_stage)

    def supervised(log) -> dict:
        from llm.sft import sft
        from llm.sft_config import SFT_DEFAULTS, SFTConfig, sft_train_config

        chats = tasks.mixed_conversations(config.sft_conversations, config.seed + 2, DEMO, RULE)
        tasks.write_jsonl(out / "data" / "sft.jsonl", chats)
        sft_config, train_config = _fine_tuning_configs(SFTConfig, SFT_DEFAULTS, sft_train_config, out / "base",
                                                        config.fine_tuning_share)
        result = sft(out / "base", chats, out / "sft", sft_config=sft_config, train_config=train_config, log=log)
        return {"conversations": len(chats), "steps": result["step"], "architecture": result["architecture"],
                "base": _share(out / "base", held_out, config, greedy=True),
                "sft": _share(out / "sft", held_out, config, greedy=True)}

    stages.run("sft", f"{config.sft_conversations} chats in the task's form (half polite, half rude), at the "
                      f"defaults", supervised)

    def candidates_stage(log) -> dict:
        prompts = [pair["prompt"] for pair in tasks.preference_pairs(config.candidate_prompts, config.seed + 3,
                                                                     DEMO, RULE)]
        answers = _sample(out / "sft", prompts, config.candidates_per_prompt, config.seed, slot=0)
        tasks.write_jsonl(out / "data" / "candidates.jsonl",
                          [{"prompt": prompt, "answers": texts} for prompt, texts in zip(prompts, answers)])
        flat = [text for texts in answers for text in texts]
        return {"prompts": len(prompts), "answers": len(flat),
                "preferred_share": round(sum(map(preferred, flat)) / max(1, len(flat)), 3)}

    stages.run("candidates", f"the SFT model answers {config.candidate_prompts} prompts "
                             f"{config.candidates_per_prompt} times each", candidates_stage)

    def labels(log) -> dict:
        rng = random.Random(config.seed)
        rows = [json.loads(line) for line in (out / "data" / "candidates.jsonl").read_text().splitlines()]
        pairs = [pair for row in rows if (pair := rule_label(row["prompt"], row["answers"], rng))]
        if not pairs:
            raise ValueError("the SFT model's answers never differ in the rule's property: no pair to learn from")
        tasks.write_jsonl(out / "data" / "pairs.jsonl", pairs)
        return {"labeler": LABELER, "prompts": len(rows), "pairs": len(pairs), "no_contrast": len(rows) - len(pairs)}

    stages.run("labels", f"simulated labels by a rule ({LABELER})", labels)
    pairs = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]

    def reward_stage(log) -> dict:
        from llm.reward import reward
        from llm.reward_config import REWARD_DEFAULTS, RewardConfig, reward_train_config
        from llm.synthetic_scores import pair_accuracy

        reward_config, train_config = _fine_tuning_configs(RewardConfig, REWARD_DEFAULTS, reward_train_config,
                                                           out / "sft", config.fine_tuning_share)
        result = reward(out / "sft", pairs, out / "reward", reward_config=reward_config, train_config=train_config,
                        log=log)
        test = tasks.preference_pairs(config.held_out_pairs, config.seed + 4, DEMO, RULE, held_out=True)
        return {"pairs": len(pairs), "steps": result["step"], "architecture": result["architecture"],
                "val_accuracy": result.get("val_accuracy"), "held_out_pairs": len(test),
                "held_out_accuracy": pair_accuracy(out / "reward", test)}

    stages.run("reward", "a reward model on the labeled pairs, at the defaults", reward_stage)

    def preference_stage(log) -> dict:
        from llm.dpo import dpo
        from llm.dpo_config import DPO_DEFAULTS, DPOConfig, dpo_train_config
        from llm.synthetic_scores import best_of_n_share

        dpo_config, train_config = _fine_tuning_configs(DPOConfig, DPO_DEFAULTS, dpo_train_config, out / "sft",
                                                        config.fine_tuning_share)
        result = dpo(out / "sft", pairs, out / "dpo", dpo_config=dpo_config, train_config=train_config, log=log)
        best = best_of_n_share(out / "sft", out / "reward", held_out, DEMO, RULE, n=config.best_of, seed=config.seed)
        return {"pairs": len(pairs), "steps": result["step"], "architecture": result["architecture"],
                "degeneration": result.get("degeneration"), "sft": _share(out / "sft", held_out, config),
                "dpo": _share(out / "dpo", held_out, config), "best_of": {"n": config.best_of, **best}}

    stages.run("dpo", "DPO of the SFT model on the same pairs, at the defaults; best-of-N with the reward model",
               preference_stage)

    def arena(log) -> dict:
        from llm import ratings

        prompts = [pair["prompt"] for pair in tasks.preference_pairs(config.arena_prompts, config.seed + 5, DEMO,
                                                                     RULE, held_out=True)]
        answers = {name: _sample(out / name, prompts, 1, config.seed, slot=1) for name in ("sft", "dpo")}
        rng = random.Random(config.seed)
        votes = []
        for index in range(len(prompts)):
            a, b = ("sft", "dpo") if rng.random() < 0.5 else ("dpo", "sft")  # sides drawn, as the arena does
            votes.append((a, b, str(arena_vote(answers[a][index][0], answers[b][index][0]))))
        return {"voter": LABELER, "prompts": len(prompts), "leaderboard": ratings.leaderboard(votes, seed=config.seed),
                "records": ratings.records(votes)}

    stages.run("arena", f"SFT against DPO on {config.arena_prompts} held-out prompts, voted on by the rule", arena)

    report = {"config": asdict(config), "family": DEMO.name, "rule": RULE, "labeler": LABELER,
              "stages": stages.done, "wall_s": round(time.perf_counter() - stages.started, 1),
              "cpu_s": round(sum(stage["cpu_s"] for stage in stages.done), 1), "checks": checks(stages.done)}
    write_report(out, report)
    say(f"report: {out / 'report.md'}")
    return report


# The models a finished demo leaves, in the order they were made: (its directory under the demo's `out`, the
# directory of the model it was trained from). The demo job registers each as a Model row with that parent.
MODELS = (("base", None), ("sft", "base"), ("reward", "sft"), ("dpo", "sft"))


def publish(out: str | os.PathLike, tokenizers_dir: str | os.PathLike) -> str:
    """Make a finished demo's models usable outside it: copy its tokenizer into `tokenizers_dir` (where trained
    tokenizers are looked up by name) and point the models' config.json at that name instead of the demo's own
    copy. Returns the tokenizer's name. Idempotent: a second call finds everything in place."""
    import shutil

    from llm.atomic_files import atomic_write_text
    from llm.checkpoint import CONFIG_FILE, read_config
    from llm.tokenizer import load_trained_tokenizer

    out = Path(out)
    name = load_trained_tokenizer(out / "tokenizer").name
    target = Path(tokenizers_dir) / name
    if not (target / "tokenizer.json").is_file():
        staging = target.with_name(f"{name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(out / "tokenizer", staging)
        staging.rename(target)
    elif (target / "tokenizer.tiktoken").read_bytes() != (out / "tokenizer" / "tokenizer.tiktoken").read_bytes():
        raise ValueError(f"a different tokenizer named {name!r} already exists in {tokenizers_dir}")
    for directory, _ in MODELS:
        config = read_config(out / directory)
        if config["tokenizer"] != name:
            atomic_write_text(out / directory / CONFIG_FILE, json.dumps({**config, "tokenizer": name}, indent=2))
    return name


def checks(done: list[dict]) -> dict:
    """Whether each stage's model did better than the one before: the claims the report leads with."""
    figures = {stage["stage"]: stage["figures"] for stage in done}
    sft, dpo = figures["sft"], figures["dpo"]
    board = {row["model"]: row["rating"] for row in figures["arena"]["leaderboard"]}
    return {"sft_beats_base": sft["sft"]["form_and_ended"] > sft["base"]["form_and_ended"],
            "reward_ranks_right": figures["reward"]["held_out_accuracy"] > 0.5,
            "dpo_beats_sft": dpo["dpo"]["share"] > dpo["sft"]["share"],
            "best_of_beats_one_sample": dpo["best_of"]["best"] > dpo["best_of"]["first"],
            "arena_rates_dpo_higher": board.get("dpo", 0) > board.get("sft", 0)}
