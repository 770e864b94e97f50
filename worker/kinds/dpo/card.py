"""What the `dpo` kind shows: its cards and curves in the Jobs tab (with the degeneration watch's signals:
llm/degeneration.py), and the report-card rows of its policy, read from the run's dpo_report.json (llm/dpo.py):
the figures of the weights it kept, the KL from where it started, the watch's verdict and a few sampled answers."""

from __future__ import annotations

import json
from pathlib import Path

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, Plot

METRIC_CARDS = (("step", "step"), ("loss", "loss"), ("rewards/margins", "reward margin"),
                ("val_rewards/accuracies", "val accuracy"), ("val_logps/chosen_per_token", "chosen log-p / token"),
                ("val_kl", "KL / token")) + SPEED_CARDS
# The margin can grow while both answers' likelihood falls until the policy leaves language: the drift chart
# shows what the margin hides (the chosen answers' log-probability against the start, and the KL).
PLOTS = (LOSS_PLOT, Plot("Drift from the start (per token)", {
    "val_logps/chosen_per_token": "chosen log-p", "val_logps/rejected_per_token": "rejected log-p",
    "val_reference_logps/chosen_per_token": "chosen log-p at the start", "val_kl": "KL (sampled answers)"}))
# The final metrics are those of the last step, which a flag may have thrown away: the report's rows say what the
# kept weights measured instead.
REPORT_CARD = (TOKENS_ROW,)
SAMPLES_SHOWN = 3


def older_kl_row(value: float) -> tuple[str, str]:
    """The row of a report written before the watch measured the exact KL: its "kl" was the mean of
    log policy(answer) - log start(answer) over 16 sampled answers, an estimate of KL(policy || start) whose
    noise, for a policy that barely moved, was below 0 (no KL is); so it is named for what it is."""
    note = " (below 0: sampling noise, not a KL)" if value < 0 else ""
    return "log-ratio to the start on sampled answers (older runs' KL estimate)", f"{value:.3f} nats per answer{note}"


def run_report(run_dir: Path) -> list[tuple[str, str]]:
    """Rows from the run's dpo_report.json: held-out figures of the kept weights, KL, the watch's verdict, samples."""
    path = run_dir / "dpo_report.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    pairs = "held-out" if report.get("held_out", True) else "training-pair"
    rows = []
    if report.get("val_loss") is not None:
        rows.append(("validation loss", f"{report['val_loss']:.4f}"))
    if report.get("val_rewards/accuracies") is not None:
        rows.append((f"DPO {pairs} preference accuracy", f"{report['val_rewards/accuracies']:.1%}"))
    if report.get("kl") is not None and "evaluations" not in report:  # written before the watch: per answer
        rows.append(older_kl_row(report["kl"]))
    elif report.get("kl") is not None:
        per_answer = report.get("kl_per_answer")
        rows.append(("KL from the policy it started from", f"{report['kl']:.3f} nats per token"
                     + (f" ({per_answer:.2f} per answer)" if per_answer is not None else "")))
    flag = report.get("flag")
    evaluations = report.get("evaluations") or []
    if flag:
        rows.append(("degeneration watch", report.get("degeneration") or f"flagged at step {flag['step']}"))
    elif evaluations:
        rows.append(("degeneration watch", f"no problem in {len(evaluations)} evaluations"))
    for sample in (report.get("samples") or [])[:SAMPLES_SHOWN]:
        rows.append((f"sample: {sample['prompt'][:80]}", sample["answer"][:200] or "(empty answer)"))
    return rows
