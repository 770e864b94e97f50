"""What the `grpo` kind shows: its cards and curves in the Jobs tab (TRL's metric names: llm/grpo.py), and the
report-card rows of its policy, read from the run's grpo_report.json: the last evaluation's reward, pass rate and
KL, and a table of its sampled answers with their rewards."""

from __future__ import annotations

import json
from pathlib import Path

from worker.jobs.spec import SPEED_CARDS, TOKENS_ROW, Plot

METRIC_CARDS = (("step", "step"), ("reward", "reward"), ("frac_reward_zero_std", "groups all the same"),
                ("val_reward", "val reward"), ("val_pass_rate", "val pass rate"), ("val_kl", "KL / token"),
                ("completions/mean_length", "answer length")) + SPEED_CARDS
# The reward curve is what shows learning (a policy-gradient loss is not a descending curve); groups whose answers
# all scored the same teach nothing, so their share says when the prompts are too easy or too hard.
PLOTS = (Plot("Reward", {"reward": "train (mean)", "reward_std": "train (spread)", "val_reward": "held-out",
                         "val_pass_rate": "held-out pass rate"}),
         Plot("Groups that teach nothing", {"frac_reward_zero_std": "train", "val_frac_reward_zero_std": "held-out"}),
         Plot("Drift and length", {"val_kl": "KL to the start (per token)", "kl": "KL in the loss",
                                   "completions/mean_length": "answer tokens",
                                   "completions/clipped_ratio": "share cut at the limit"}))
REPORT_CARD = (TOKENS_ROW,)
SAMPLES_SHOWN = 5


def run_report(run_dir: Path) -> list[tuple[str, str]]:
    """Rows from the run's grpo_report.json: the last evaluation's figures and a few of its answers."""
    path = run_dir / "grpo_report.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    evaluations = report.get("evaluations") or []
    if not evaluations:
        return []
    first, last = evaluations[0], evaluations[-1]
    prompts = "held-out" if report.get("held_out", True) else "training"
    rows = [(f"GRPO reward on {prompts} prompts", f"{last['val_reward']:.3f} (first evaluation {first['val_reward']:.3f}"
                                                  f", step {first['step']})")]
    if last.get("val_pass_rate") is not None:
        rows.append(("verifier pass rate", f"{last['val_pass_rate']:.1%} (first evaluation "
                                           f"{first['val_pass_rate']:.1%})"))
    if last.get("val_kl") is not None:
        rows.append(("KL from the policy it started from", f"{last['val_kl']:.4f} nats per token"))
    for sample in (last.get("samples") or [])[:SAMPLES_SHOWN]:
        rows.append((f"sample (reward {sample['reward']:+.2f}): {sample['prompt'][:70]}",
                     sample["answer"][:200] or "(empty answer)"))
    return rows
