"""The measurement behind the not-learning watch's bounds (llm/learning_watch.py: LearningWatchBounds): how far the
smoothed training loss moves by a quarter of the run, for healthy runs and for runs at a rate far too small, on
the tiny preset. Not a speed benchmark.

    python -m bench.not_learning [--steps 200]

Runs (each at the loop's defaults for its kind except the learning rate and a short run):
  pretraining   tests/llm/test_train.py's periodic token stream (a 512-id vocabulary), tiny preset
  SFT           a tiny GPT-2-vocabulary model at random init, tests/support/records.py's chat lines, LoRA and all
                weights
each at its default rate, at 1e-6 and 1e-7 (the "too small" of issue 18), at 1e-9 (nothing moves: the noise
floor of the smoothed loss), and at a rate far too large. Printed: the relative change of the watch's smoothed
loss against the first step's at the step it judges, and what the watch says. `--from-sft`: reward and DPO from
tests/support/polite.py's trained SFT model instead. `--lr-find`: the range test's candidate rates, each trained.

Measured 2026-12-07 on the 2-core Xeon, 200-step runs judged at step 50 (the fall of the mean of the last 5 logged
losses from the first step's loss; + is a fall):

    run                       default rate       1e-6     1e-7     1e-9     far too large (0.5)
    pretrain (1e-3)           +32.4 %            +0.1 %   +0.1 %   +0.1 %   +11.7 % (not flagged)
    SFT LoRA (2.4e-3)         +8.8 %             -0.2 %   -0.2 %   -0.2 %   NaN at step 40 (the loop stops)
    SFT all weights (6e-4)    +19.6 %            -0.1 %   -0.2 %   -0.2 %   +15.3 % (not flagged)
    reward, random init       +47.0 %                     +0.3 %
    reward, from SFT          +29.4 %                     +0.6 %
    DPO, random init          +3.9 %                      +0.2 %
    DPO, from SFT (6e-5)      +3.8 %  (1e-5: +2.2 %, 1e-6: +1.8 %)  +1.7 %

So `min_drop` = 2 %: ten times the noise floor of pretraining and SFT (0.2 %), a quarter of the weakest healthy run
(LoRA SFT, 8.8 %). DPO is not judged (its objective says `watch_learning = False`): a healthy run moves 3.8 %, a
run at 1e-7 1.7 % (batch-to-batch noise of the pairs), too close to tell apart by the loss. A rate far too large
did not make the loss rise by a quarter of the run here (it fell less, or became NaN, which the loop stops on with
its own advice); `max_rise` catches the runs whose loss does climb.

`--lr-find` (same day): the range test's candidates, each trained 200 steps at the defaults (loss of the first
step -> mean of the last 5):

    task (range test)                          min/10         steepest       minimum        min/100
    pretrain, periodic (4x its best, step 88)  6.3e-3: 0.001  1.0e-2: 0.000  6.3e-2: 0.005  6.3e-4: 1.054
    SFT all weights, chats (reached 1.0)       2.4e-3: 0.011  7.6e-3: 0.000  2.4e-2: 0.000  2.4e-4: 7.294

Both tasks are learnt by heart at any rate from the tenth of the minimum up, so they do not tell min/10 from the
steepest point; they do say that a hundredth is too timid. The suggestion stays min/10 (llm/lr_find.py says why);
a comparison on held-out data of a harder task is still to be made.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from llm.learning_watch import LearningWatch, LearningWatchBounds
from llm.model import GPT, config_from_preset
from llm.pretrain import NextTokenObjective
from llm.sft import sft
from llm.sft_config import SFT_DEFAULTS, SFTConfig, sft_train_config
from llm.train import TrainConfig, train

VOCAB, PERIOD = 512, 61


def periodic_data(directory: Path) -> Path:
    cycle = np.random.default_rng(0).permutation(VOCAB)[:PERIOD]
    stream = np.tile(cycle, 200).astype(np.uint16)
    directory.mkdir(parents=True, exist_ok=True)
    stream.tofile(directory / "train.bin")
    stream[:2000].tofile(directory / "val.bin")
    (directory / "stats.json").write_text(json.dumps({"tokenizer": "synthetic", "dtype": "uint16",
                                                      "vocab_size": VOCAB}))
    return directory


def change_at_judgement(records: list[dict], max_steps: int, lr: float, warmup: int) -> tuple[float, str]:
    """(relative fall of the smoothed loss at the watch's judgement, the watch's warning or "learning")."""
    bounds = LearningWatchBounds()
    watch = LearningWatch(max_steps, lr, warmup, bounds)
    warning = None
    for record in records:
        warning = watch.observe(record) or warning
        if watch.judged:
            break
    first = watch.start["loss"]
    now = sum(r["loss"] for r in watch.recent) / len(watch.recent)
    return (first - now) / first, (watch.verdict or {}).get("kind", "learning")


def pretrain_run(prepared: Path, out: Path, lr: float, steps: int) -> tuple[list[dict], TrainConfig]:
    from llm.dataloader import BatchSampler, TokenData

    config = TrainConfig(max_steps=steps, batch_size=8, block_size=32, lr=lr, warmup=round(steps / 10),
                         eval_every=0, eval_batches=1, checkpoint_every=0, device="cpu")
    torch.manual_seed(0)
    model = GPT(config_from_preset("tiny", VOCAB, block_size=config.block_size))
    batches = BatchSampler(TokenData(prepared, "train"), config.batch_size, config.block_size, seed=1)
    objective = NextTokenObjective(None, np.ones(VOCAB, dtype=np.int64), config.batch_size, config.block_size, 1)
    records: list[dict] = []
    train(model, objective, batches, config, out, on_metrics=records.append, log=lambda _: None)
    return records, config


def sft_run(base: Path, chats: Path, out: Path, full: bool, lr: float | None, steps: int):
    sft_config = SFTConfig(method="full" if full else "lora")
    config = sft_train_config(sft_config, 64, lr=lr, max_steps=steps, block_size=64, eval_every=0,
                              checkpoint_every=0, device="cpu", warmup=round(SFT_DEFAULTS.loop["warmup"] * steps
                                                                             / SFT_DEFAULTS.loop["max_steps"]))
    records: list[dict] = []
    sft(base, chats, out, sft_config=sft_config, train_config=config, on_metrics=records.append, resume=False,
        log=lambda _: None)
    return records, config


def preference_run(kind: str, base: Path, pairs: Path, out: Path, lr: float | None, steps: int):
    """A reward model or DPO from the random-init base on tests/support/polite.py's pairs, the method `auto`
    picks (all weights on the tiny preset)."""
    from llm.sft_config import resolve_method

    if kind == "reward":
        from llm.reward import reward as run
        from llm.reward_config import RewardConfig as Config, reward_train_config as config_of
    else:
        from llm.dpo import dpo as run
        from llm.dpo_config import DPOConfig as Config, dpo_train_config as config_of
    own, _ = resolve_method(Config(), json.loads((base / "config.json").read_text()).get("model"))
    config = config_of(own, 64, lr=lr, max_steps=steps, block_size=64, eval_every=0, checkpoint_every=0,
                       device="cpu", warmup=round(steps / 20))
    records: list[dict] = []
    keyword = {"reward_config": own} if kind == "reward" else {"dpo_config": own}
    run(base, pairs, out, train_config=config, on_metrics=records.append, resume=False, log=lambda _: None,
        **keyword)
    return records, config


def lr_find_check(prepared: Path, base: Path, chats: Path, tmp: Path, steps: int) -> None:
    """Which of the range test's rates trains best: the test on pretraining (the periodic stream) and on SFT (all
    weights), then a run of `steps` at the defaults with each candidate rate; the final smoothed loss of each."""
    from llm.lr_find import LRFindConfig, range_test

    def periodic(train_config, out_dir, **loop):
        from llm.dataloader import BatchSampler, TokenData

        torch.manual_seed(0)
        model = GPT(config_from_preset("tiny", VOCAB, block_size=train_config.block_size))
        batches = BatchSampler(TokenData(prepared, "train"), train_config.batch_size, train_config.block_size, seed=1)
        objective = NextTokenObjective(None, np.ones(VOCAB, dtype=np.int64), train_config.batch_size,
                                       train_config.block_size, 1)
        return train(model, objective, batches, train_config, out_dir, **loop)

    def fine_tune(train_config, out_dir, **loop):
        return sft(base, chats, out_dir, sft_config=SFTConfig(method="full"), train_config=train_config, resume=False,
                   **loop)

    quiet = lambda _: None  # noqa: E731
    for name, run, loop in (("pretrain", periodic, TrainConfig(batch_size=8, block_size=32, device="cpu")),
                            ("sft full", fine_tune, TrainConfig(batch_size=8, block_size=64, device="cpu"))):
        document = range_test(run, LRFindConfig(), loop, tmp / f"find-{name}", log=quiet)
        candidates = {"suggested (min/10)": document["suggested_lr"], "steepest": document["steepest_lr"],
                      "minimum": document["minimum_lr"], "min/100": document["minimum_lr"] / 100}
        print(f"{name}: range test stopped after {len(document['points'])} steps ({document['stopped']})")
        for label, lr in candidates.items():
            config = TrainConfig(max_steps=steps, batch_size=loop.batch_size, block_size=loop.block_size, lr=lr,
                                 warmup=round(steps / 10), eval_every=0, checkpoint_every=0, device="cpu")
            records: list[dict] = []
            try:
                run(config, tmp / f"{name}-{label}", on_metrics=records.append, log=quiet)
                final = sum(r["loss"] for r in records[-5:]) / len(records[-5:])
                print(f"  {label:<20} lr {lr:.2e}: loss {records[0]['loss']:.3f} -> {final:.3f} after {steps} steps")
            except FloatingPointError as error:
                print(f"  {label:<20} lr {lr:.2e}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr-find", action="store_true",
                        help="only the range test's candidate rates (suggested, steepest, minimum) trained for --steps")
    parser.add_argument("--from-sft", action="store_true",
                        help="only reward and DPO, from tests/support/polite.py's coherent SFT model (a 400-id BPE)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from llm.checkpoint import save_model
    from llm.tokenizer import get_tokenizer
    from tests.support.records import chat_lines, preference_lines

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = periodic_data(tmp / "prepared")
        torch.manual_seed(0)
        base = save_model(GPT(config_from_preset("tiny", get_tokenizer("gpt2").vocab_size, block_size=64)),
                          tmp / "base", "gpt2")
        chats = tmp / "chats.jsonl"
        chats.write_text("".join(line + "\n" for line in chat_lines(400)))
        if args.lr_find:
            lr_find_check(prepared, base, chats, tmp, args.steps)
            return
        pairs = tmp / "pairs.jsonl"
        pairs.write_text("".join(line + "\n" for line in preference_lines(400)))
        runs = [(kind, lr) for kind in ("reward", "dpo") for lr in (None, 1e-7)]
        if args.from_sft:
            from tests.support.polite import coherent_sft_model

            base = Path(coherent_sft_model(tmp))
            runs += [("dpo", lr) for lr in (1e-6, 1e-5)]
        else:
            runs += [("pretrain", lr) for lr in (1e-3, 1e-6, 1e-7, 1e-9, 0.5)]
            runs += [("sft lora", lr) for lr in (None, 1e-6, 1e-7, 1e-9, 0.5)]
            runs += [("sft full", lr) for lr in (None, 1e-6, 1e-7, 1e-9, 0.5)]
        print(f"{'run':<10} {'lr':>8} {'judged at':>9} {'first':>7} {'smoothed':>8} {'change':>8}  verdict")
        for index, (kind, lr) in enumerate(runs):
            out = tmp / f"run{index}"
            try:
                if kind in ("reward", "dpo"):
                    records, config = preference_run(kind, base, pairs, out, lr, args.steps)
                elif kind == "pretrain":
                    records, config = pretrain_run(prepared, out, lr, args.steps)
                else:
                    records, config = sft_run(base, chats, out, kind == "sft full", lr, args.steps)
            except FloatingPointError as error:
                print(f"{kind:<10} {lr or 0:>8g}  {error}")
                continue
            change, verdict = change_at_judgement(records, config.max_steps, config.lr, config.warmup)
            watch = LearningWatch(config.max_steps, config.lr, config.warmup)
            print(f"{kind:<10} {config.lr:>8g} {watch.judge_at:>9} {records[0]['loss']:>7.3f} "
                  f"{records[0]['loss'] * (1 - change):>8.3f} {change:>+8.1%}  {verdict}", flush=True)


if __name__ == "__main__":
    main()
