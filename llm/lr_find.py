"""The learning-rate range test (Leslie Smith, "Cyclical Learning Rates", 2015; fastai's `lr_find`): for people
who want to pick the rate themselves.

A short run of the real loop (llm/train.py, with the kind's own model, data and objective) in which the rate
rises exponentially from `start_lr` to `end_lr`, one step at each rate. The loss first stays flat (too small to
move anything), then falls, then blows up (too large). The run stops once the smoothed loss passes
`diverge_factor` times its best, or becomes NaN. Nothing is saved but the curve (`lr_find.json`, and a PNG
when asked).

The suggestion is a tenth of the rate at the smoothed loss's minimum (fastai v1's advice, "one order of magnitude
before the minimum"), not the steepest point of the descent. Both are reported; the minimum/10 is the one
suggested because with ~100 points the steepest slope is the derivative of a noisy curve (it can land on a
wiggle in the flat part), while the minimum of the smoothed loss is stable; and a tenth of it leaves the margin
a real run needs, which holds its peak rate for hundreds of steps where the test held each rate for one.
bench/not_learning.py --lr-find trains each candidate (its docstring has the figures).

    LRFindConfig      the test's settings, declared once (the CLI's flags and the `lr_find` job kind's params);
                      `loop_settings`: the loop's that it takes from its user
    exponential_rates the rate of each step
    smooth / suggest  the analysis (plain Python: no torch)
    range_test        runs the test through a kind's training function (pretrain, SFT, reward, DPO)
    lr_find_pretrain / lr_find_sft / lr_find_reward   the ready-made ones (DPO's loss is not one to read this way:
                      its watch_learning in llm/dpo.py says why)
    ascii_plot / save_plot           for the terminal and a PNG
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from llm.atomic_files import atomic_write_text
from llm.params import Setting, setting
from llm.train_config import TrainConfig

RESULT_FILE = "lr_find.json"
SCRATCH_DIR = "range_test"  # the test's run directory inside out_dir, removed when it ends
# The loop's settings the test decides itself (`range_test`): no flag or form field offers them.
SET_BY_THE_TEST = ("max_steps", "lr", "min_lr", "warmup", "log_every", "eval_every", "checkpoint_every")


@dataclass
class LRFindConfig:
    start_lr: float = setting(1e-7, minimum=0, maximum=1, exclusive_minimum=True,
                              help="the rate of the first step", label="start rate")
    end_lr: float = setting(1.0, minimum=0, maximum=100, exclusive_minimum=True,
                            help="the rate of the last step (the test usually stops before, when the loss diverges)",
                            label="end rate")
    steps: int = setting(100, minimum=5, maximum=10_000,
                         help="steps from start_lr to end_lr, each at a rate 10^(log10(end/start) / steps) higher")
    diverge_factor: float = setting(4.0, minimum=1, maximum=1000, exclusive_minimum=True, advanced=True,
                                    help="stop once the smoothed loss is this many times its best", label="stop at")
    smoothing: float = setting(0.8, minimum=0, maximum=0.999, advanced=True,
                               help="for the stop: the moving average's weight on its past (debiased; 0 = raw)")
    window: int = setting(7, minimum=1, maximum=101, advanced=True,
                          help="for the curve and the suggestion: steps averaged around each (centred, no lag)")

    def __post_init__(self):
        if self.end_lr <= self.start_lr:
            raise ValueError(f"end_lr must be above start_lr ({self.start_lr:g}), got {self.end_lr:g}")


def loop_settings(declared: dict[str, Setting]) -> dict[str, Setting]:
    """The loop's settings a range test takes from its user (batch size, block size, ...): all but the schedule's."""
    return {name: value for name, value in declared.items() if name not in SET_BY_THE_TEST}


def exponential_rates(config: LRFindConfig) -> Callable[[int], float]:
    """lr(step) for steps 1..config.steps: start_lr at the first, end_lr at the last, equal ratios between."""
    ratio = config.end_lr / config.start_lr

    def rate(step: int) -> float:
        return config.start_lr * ratio ** ((step - 1) / max(config.steps - 1, 1))

    return rate


# --------------------------------------------------------------------------- analysis (no torch)

def moving_average(losses: list[float], beta: float) -> float:
    """The debiased exponential moving average of `losses` at the last one (fastai's): what the stop reads, since
    it must decide with the steps so far. It lags: about 1 / (1 - beta) steps."""
    average = 0.0
    for loss in losses:
        average = beta * average + (1 - beta) * loss
    return average / (1 - beta ** len(losses)) if beta else losses[-1]


def smooth(losses: list[float], window: int) -> list[float]:
    """Each loss averaged with its neighbours, `window` steps centred on it (fewer at the ends): the curve and
    the suggestion are read once the test is over, so they can look ahead and do not lag like a moving average
    (with beta 0.9 it put the minimum 0.7 decades too high on the tiny preset)."""
    half = window // 2
    return [sum(losses[max(0, i - half):i + half + 1]) / len(losses[max(0, i - half):i + half + 1])
            for i in range(len(losses))]


def suggest(rates: list[float], smoothed: list[float]) -> dict:
    """{"suggested_lr": a tenth of the rate at the smoothed minimum, "minimum_lr", "steepest_lr": the rate where
    the smoothed loss falls fastest per decade before the minimum}; None values when there are too few points."""
    if len(rates) < 3:
        return {"suggested_lr": None, "minimum_lr": None, "steepest_lr": None}
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    slopes = [(smoothed[i + 1] - smoothed[i - 1]) / (math.log10(rates[i + 1]) - math.log10(rates[i - 1]))
              for i in range(1, max(best, 2))]
    steepest = 1 + min(range(len(slopes)), key=slopes.__getitem__) if slopes else None
    return {"suggested_lr": rates[best] / 10, "minimum_lr": rates[best],
            "steepest_lr": rates[steepest] if steepest is not None else None}


class Divergence:
    """Shown each step's record; says when to stop: the smoothed loss above diverge_factor x its best, or not finite."""

    def __init__(self, config: LRFindConfig):
        self.config = config
        self.points: list[dict] = []
        self.best = math.inf
        self.reason = "reached end_lr"

    def observe(self, record: dict) -> None:
        loss = record["loss"]
        if not math.isfinite(loss):
            self.reason = f"the loss became {loss} at step {record['step']}"
            return
        self.points.append({"step": record["step"], "lr": record["lr"], "loss": loss})
        smoothed = moving_average([p["loss"] for p in self.points], self.config.smoothing)
        self.best = min(self.best, smoothed)
        if smoothed > self.config.diverge_factor * self.best:
            self.reason = (f"the smoothed loss {smoothed:.3f} passed {self.config.diverge_factor:g}x its best "
                           f"({self.best:.3f}) at step {record['step']}")

    @property
    def diverged(self) -> bool:
        return self.reason != "reached end_lr"


# --------------------------------------------------------------------------- the run

TrainFunction = Callable[..., dict]  # (train_config, out_dir, lr_schedule, on_metrics, should_stop, log) -> result


def range_test(run: TrainFunction, config: LRFindConfig, train_config: TrainConfig, out_dir: str | os.PathLike, *,
               what: str = "", on_metrics: Callable[[dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] = print) -> dict:
    """Run the range test through `run` (a kind's training function, called with keyword arguments train_config,
    out_dir, lr_schedule, on_metrics, should_stop, log) and write `out_dir/lr_find.json`.

    `train_config` is the run's (batch size, block size, ...); its schedule is replaced by the test's: one step per
    rate, no warmup, a record every step, no evaluation or checkpoint before the end. Returns the result document:
    {"points": [{step, lr, loss, smoothed}], "suggested_lr", "minimum_lr", "steepest_lr", "stopped": why, ...}."""
    out_dir = Path(out_dir)
    scratch = out_dir / SCRATCH_DIR
    loop = replace(train_config, max_steps=config.steps, lr=config.end_lr, min_lr=None, warmup=0, log_every=1,
                   eval_every=0, checkpoint_every=0)
    watch = Divergence(config)
    cancelled = False

    def on_record(record: dict) -> None:
        watch.observe(record)
        if on_metrics is not None:
            on_metrics(record)

    def stop() -> bool:
        nonlocal cancelled
        cancelled = cancelled or (should_stop is not None and should_stop())
        return cancelled or watch.diverged

    log(f"learning-rate range test{f' of {what}' if what else ''}: {config.steps} steps from {config.start_lr:g} to "
        f"{config.end_lr:g}, stopping when the smoothed loss passes {config.diverge_factor:g}x its best")
    try:
        run(train_config=loop, out_dir=scratch, lr_schedule=exponential_rates(config), on_metrics=on_record,
            should_stop=stop, log=log)
    except FloatingPointError as error:  # the loop refuses a NaN loss: for this test, that is the divergence
        watch.reason = str(error).split(";")[0]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    smoothed = smooth([p["loss"] for p in watch.points], config.window)
    for point, value in zip(watch.points, smoothed):
        point["smoothed"] = value
    rates = [p["lr"] for p in watch.points]
    document = {"what": what, "config": asdict(config), "batch_size": loop.batch_size, "block_size": loop.block_size,
                "points": watch.points, "stopped": "cancelled" if cancelled else watch.reason, "cancelled": cancelled,
                **suggest(rates, smoothed)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / RESULT_FILE, json.dumps(document, indent=1))
    log(summary(document))
    return document


def summary(document: dict) -> str:
    """One sentence: what was found, what to use."""
    points, suggested = document["points"], document.get("suggested_lr")
    if suggested is None:
        return f"no suggestion: only {len(points)} steps before the test stopped ({document['stopped']})"
    return (f"suggested learning rate {suggested:.2g} (a tenth of {document['minimum_lr']:.2g}, where the smoothed "
            f"loss was lowest: {min(p['smoothed'] for p in points):.3f}); steepest descent at "
            f"{document['steepest_lr']:.2g}; {len(points)} steps, stopped: {document['stopped']}")


def lr_find_pretrain(prepared_dir: str | os.PathLike, out_dir: str | os.PathLike, *, preset: str = "tiny",
                     config: LRFindConfig | None = None, train_config: TrainConfig | None = None,
                     model_overrides: dict | None = None, data_dir: str | os.PathLike | None = None,
                     on_metrics=None, should_stop=None, log: Callable[[str], None] = print) -> dict:
    """The range test of pretraining a `preset` GPT from scratch on prepared token files."""
    from llm.pretrain import pretrain

    def run(**loop) -> dict:
        return pretrain(prepared_dir, loop.pop("out_dir"), preset=preset, model_overrides=model_overrides,
                        data_dir=data_dir, resume=False, **loop)

    return range_test(run, config or LRFindConfig(), train_config or TrainConfig(), out_dir,
                      what=f"pretraining the {preset} preset", on_metrics=on_metrics, should_stop=should_stop, log=log)


def lr_find_sft(base_model_dir: str | os.PathLike, data, out_dir: str | os.PathLike, *, sft_config=None,
                config: LRFindConfig | None = None, train_config: TrainConfig | None = None,
                data_dir: str | os.PathLike | None = None, on_metrics=None, should_stop=None,
                log: Callable[[str], None] = print) -> dict:
    """The range test of fine-tuning (SFT) the model in `base_model_dir` on a chat dataset."""
    from llm.sft import sft

    def run(**loop) -> dict:
        return sft(base_model_dir, data, loop.pop("out_dir"), sft_config=sft_config, data_dir=data_dir,
                   resume=False, **loop)

    return range_test(run, config or LRFindConfig(), train_config or TrainConfig(), out_dir, what="SFT",
                      on_metrics=on_metrics, should_stop=should_stop, log=log)


def lr_find_reward(base_model_dir: str | os.PathLike, data, out_dir: str | os.PathLike, *, reward_config=None,
                   config: LRFindConfig | None = None, train_config: TrainConfig | None = None,
                   data_dir: str | os.PathLike | None = None, on_metrics=None, should_stop=None,
                   log: Callable[[str], None] = print) -> dict:
    """The range test of training a reward model from the model in `base_model_dir` on preference pairs."""
    from llm.reward import reward

    def run(**loop) -> dict:
        return reward(base_model_dir, data, loop.pop("out_dir"), reward_config=reward_config, data_dir=data_dir,
                      resume=False, **loop)

    return range_test(run, config or LRFindConfig(), train_config or TrainConfig(), out_dir, what="a reward model",
                      on_metrics=on_metrics, should_stop=should_stop, log=log)


# --------------------------------------------------------------------------- showing the curve

def ascii_plot(document: dict, width: int = 60, height: int = 14) -> str:
    """The smoothed loss against log10(rate) in characters, the suggested rate marked with '|'."""
    points = document["points"]
    if len(points) < 2:
        return "(too few points to plot)"
    xs = [math.log10(p["lr"]) for p in points]
    ys = [p["smoothed"] for p in points]
    low, left, right = min(ys), xs[0], xs[-1]
    top = max(ys[:ys.index(low) + 1]) if ys.index(low) else max(ys)  # the diverged tail is cut at the start's level
    grid = [[" "] * width for _ in range(height)]
    suggested = document.get("suggested_lr")
    if suggested:
        column = round((math.log10(suggested) - left) / (right - left or 1) * (width - 1))
        if 0 <= column < width:
            for row in grid:
                row[column] = "|"
    for x, y in zip(xs, ys):
        column = round((x - left) / (right - left or 1) * (width - 1))
        row = height - 1 - round((min(y, top) - low) / (top - low or 1) * (height - 1))
        grid[row][column] = "*"
    lines = [(f"{top:8.3f} " if i == 0 else f"{low:8.3f} " if i == height - 1 else " " * 9) + "".join(grid[i])
             for i in range(height)]
    lines.append(" " * 9 + f"{points[0]['lr']:<.0e}".ljust(width - 6) + f"{points[-1]['lr']:.0e}")
    lines.append(" " * 9 + "learning rate (log scale); * smoothed loss, | suggested")
    return "\n".join(lines)


def save_plot(document: dict, path: str | os.PathLike) -> Path:
    """A PNG of the raw and smoothed loss against the rate (log axis), the suggested rate marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    points = document["points"]
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.subplots()
    rates = [p["lr"] for p in points]
    axes.plot(rates, [p["loss"] for p in points], color="#bab0ac", linewidth=1, label="loss")
    axes.plot(rates, [p["smoothed"] for p in points], color="#4c78a8", linewidth=2, label="smoothed loss")
    if document.get("suggested_lr"):
        axes.axvline(document["suggested_lr"], color="#e45756", linestyle="--",
                     label=f"suggested {document['suggested_lr']:.2g}")
    if points:
        low = min(p["smoothed"] for p in points)
        start = max(p["smoothed"] for p in points[:[p["smoothed"] for p in points].index(low) + 1])
        axes.set_ylim(low - 0.05 * (start - low), start + 0.25 * (start - low))  # the diverged tail is cut
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(f"Learning-rate range test{': ' + document['what'] if document.get('what') else ''}")
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    return path
