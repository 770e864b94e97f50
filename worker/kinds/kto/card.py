"""What the `kto` kind shows: its cards and curves in the Jobs tab (TRL's metric names, and the degeneration watch's
signals as DPO's), and the report-card rows of its policy, read from the run's kto_report.json (llm/kto.py: held-out
figures, the watch's verdict, a few sampled answers) and feedback_sources.json (which feedback went in)."""

from __future__ import annotations

import json
from pathlib import Path

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, Plot

METRIC_CARDS = (("step", "step"), ("loss", "loss"), ("rewards/margins", "reward margin"), ("kl", "KL estimate"),
                ("val_rewards/margins", "val margin"),
                ("val_samples/kl_per_token", "KL / token (sampled)")) + SPEED_CARDS
# Good answers' rewards should rise and bad ones' fall; the KL is the reference point both are measured against.
PLOTS = (LOSS_PLOT, Plot("Rewards (beta x log-ratio to the start)", {
    "rewards/chosen": "good answers", "rewards/rejected": "bad answers", "kl": "KL estimate",
    "val_rewards/chosen": "good (held out)", "val_rewards/rejected": "bad (held out)"}),
    # What the margin hides (the degeneration watch, llm/degeneration.py): the good answers against the start.
    Plot("Drift from the start (per token)", {
        "val_logps/chosen_per_token": "good answers' log-p", "val_reference_logps/chosen_per_token": "at the start",
        "val_samples/kl_per_token": "KL (sampled answers)"}))
REPORT_CARD = (TOKENS_ROW,)
SAMPLES_SHOWN = 3


def run_report(run_dir: Path) -> list[tuple[str, str]]:
    """Rows from kto_report.json and feedback_sources.json: the data's classes and sources, held-out figures."""
    rows = []
    sources = run_dir / "feedback_sources.json"
    if sources.is_file():
        counts = json.loads(sources.read_text()).get("counts", {})
        rows += [(f"feedback from {source}", f"{c['good']:,} good, {c['bad']:,} bad") for source, c in counts.items()]
    path = run_dir / "kto_report.json"
    if not path.is_file():
        return rows
    report = json.loads(path.read_text())
    held = "held-out" if report.get("held_out", True) else "training"
    if report.get("val_loss") is not None:
        rows.append(("validation loss", f"{report['val_loss']:.4f}"))
    if report.get("val_rewards/margins") is not None:
        rows.append((f"KTO {held} reward margin (good - bad)", f"{report['val_rewards/margins']:+.3f}"))
    if report.get("val_kl") is not None:
        rows.append(("KL estimate (mismatched answers)", f"{report['val_kl']:.3f} nats per answer"))
    if report.get("kl_per_token") is not None:
        rows.append(("KL from the policy it started from (sampled answers)",
                     f"{report['kl_per_token']:.3f} nats per token"))
    evaluations = report.get("evaluations") or []
    if report.get("flag"):
        rows.append(("degeneration watch", report.get("degeneration") or f"flagged at step {report['flag']['step']}"))
    elif evaluations:
        rows.append(("degeneration watch", f"no problem in {len(evaluations)} evaluations"))
    if report.get("weight_advice"):
        rows.append(("class weights", report["weight_advice"]))
    for sample in (report.get("samples") or [])[:SAMPLES_SHOWN]:
        rows.append((f"sample: {sample['prompt'][:80]}", sample["answer"][:200] or "(empty answer)"))
    return rows
