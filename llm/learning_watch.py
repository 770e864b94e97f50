"""Saying when a run is not learning: one look at the training loss after a share of the run, and a warning in
plain words with what to change.

A learning rate far too small for the model (a 7B recipe's 5e-5 on a 3M-parameter model, or a typo) gives a run
that finishes, saves a model and looks fine, while its loss barely moved. The loop (llm/train.py) shows every
logged record to a `LearningWatch`; once the run is past `LearningWatchBounds.share` of its steps (and past twice
its warmup, so a run still warming up is not judged at a rate it has not reached), the watch compares the
smoothed recent loss with the loss at the first step:

    moved less than `min_drop` of it    the learning rate is probably too small: try 10x, or `workbench lr-find`
    rose more than `max_rise` of it     the learning rate is probably too large: try a tenth, or lr-find

It speaks once. The warning goes to the run's log, to `learning_watch.json` in the run directory (where the job
layer and the CLI read it: the job's notice and summary, the CLI's last line), like the DPO degeneration watch's
(llm/degeneration.py). A loss that becomes NaN or infinite already stops the loop with its own advice.

Imports no torch: the job layer and the CLI read the verdict cheaply.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from llm.atomic_files import atomic_write_text

WATCH_FILE = "learning_watch.json"


@dataclass(frozen=True)
class LearningWatchBounds:
    """When a run counts as not learning. Measured on the tiny preset (bench/not_learning.py has the table): by a
    quarter of a 200-step run, healthy runs' smoothed loss fell 8.8 % (LoRA SFT, the weakest) to 47 % (a reward
    model) below the first step's; at 1e-6 to 1e-9 it moved 0.1-0.6 % either way (the noise floor). DPO is not
    judged (its loss moves 3.8 % when healthy, 1.7 % at 1e-7: llm/dpo.py's `watch_learning`)."""

    share: float = 0.25      # of the run's steps before judging (and at least twice the warmup)
    min_drop: float = 0.02   # relative fall below which the loss "barely moved": 10x the noise, 1/4 of the weakest
    max_rise: float = 0.10   # relative rise that says the rate is too large (the noise stays under 1 %)
    window: int = 5          # logged records averaged for the recent loss (a single batch's loss is noisy)


@dataclass
class LearningWatch:
    """Shown each logged record (`observe`); returns the warning once, when it has one."""

    max_steps: int
    lr: float
    warmup: int = 0
    bounds: LearningWatchBounds = LearningWatchBounds()

    def __post_init__(self) -> None:
        self.start: dict | None = None
        self.recent: list[dict] = []
        self.verdict: dict | None = None
        self.judged = False

    @property
    def judge_at(self) -> int:
        """The step from which the run is judged: a share of it, and twice the warmup."""
        return min(self.max_steps, max(math.ceil(self.bounds.share * self.max_steps), 2 * self.warmup, 1))

    def observe(self, record: dict) -> str | None:
        """Take one logged record ({"step", "loss", maybe "mean_token_accuracy"}); the warning, the one time
        the watch finds the run is not learning, else None."""
        loss = record.get("loss")
        if self.judged or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return None
        if self.start is None:  # the first step's loss: the model as it started
            self.start = record
            return None
        self.recent = (self.recent + [record])[-self.bounds.window:]
        if record["step"] < self.judge_at:
            return None
        self.judged = True
        self.verdict = judge(self.start, self.recent, self.max_steps, self.lr, self.bounds)
        return self.verdict["warning"] if self.verdict else None


def judge(start: dict, recent: list[dict], max_steps: int, lr: float, bounds: LearningWatchBounds) -> dict | None:
    """The verdict on a run whose first logged record is `start` and whose latest are `recent`: None when it is
    learning, else {"kind": "too_small" | "too_large", "warning", "step", "start_loss", "loss"}."""
    first, now = start["loss"], sum(r["loss"] for r in recent) / len(recent)
    step = recent[-1]["step"]
    change = (first - now) / abs(first) if first else 0.0
    moved = f"loss {first:.2f} → {now:.2f} after {step} of {max_steps} steps"
    accuracy = _accuracy_change(start, recent)
    if change < -bounds.max_rise:
        kind = "too_large"
        advice = (f"the learning rate {lr:g} may be too large for this model (the loss rose); try a tenth of it "
                  f"({lr / 10:g}), or run `workbench lr-find` to pick one")
    elif change < bounds.min_drop:
        kind = "too_small"
        advice = (f"the learning rate {lr:g} may be too small for this model (the loss barely moved); try 10x "
                  f"({lr * 10:g}), or run `workbench lr-find` to pick one")
    else:
        return None
    return {"kind": kind, "warning": f"not learning: {moved}{accuracy}: {advice}", "step": step,
            "start_loss": first, "loss": now, "lr": lr}


def _accuracy_change(start: dict, recent: list[dict]) -> str:
    """", token accuracy 0.27 → 0.27" when the records have one (SFT), else ""."""
    name = "mean_token_accuracy"
    values = [r[name] for r in recent if isinstance(r.get(name), (int, float))]
    if not isinstance(start.get(name), (int, float)) or not values:
        return ""
    return f", token accuracy {start[name]:.2f} → {sum(values) / len(values):.2f}"


# --------------------------------------------------------------------------- the run directory's record

def save_verdict(out_dir: str | Path, verdict: dict) -> None:
    atomic_write_text(Path(out_dir) / WATCH_FILE, json.dumps(verdict, indent=2))


def clear_verdict(out_dir: str | Path) -> None:
    (Path(out_dir) / WATCH_FILE).unlink(missing_ok=True)


def read_warning(out_dir: str | Path) -> str | None:
    """The warning a run in `out_dir` left (`learning_watch.json`), or None when it was learning."""
    path = Path(out_dir) / WATCH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("warning")
    except (OSError, ValueError, AttributeError):
        return None
