"""What the `dpo` kind shows: its cards and curves in the Jobs tab, the report-card rows of its policy (with the
KL estimate its run wrote)."""

from __future__ import annotations

import json
from pathlib import Path

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, VAL_LOSS_ROW, Plot, ReportRow

METRIC_CARDS = (("step", "step"), ("loss", "loss"), ("rewards/margins", "reward margin"),
                ("rewards/accuracies", "preference accuracy"),
                ("val_rewards/accuracies", "val accuracy")) + SPEED_CARDS
PLOTS = (LOSS_PLOT, Plot("Implicit rewards", {"rewards/chosen": "chosen", "rewards/rejected": "rejected",
                                              "rewards/margins": "margin"}))
REPORT_CARD = (VAL_LOSS_ROW, ReportRow("val_rewards/accuracies", "DPO held-out preference accuracy", "{:.1%}"),
               TOKENS_ROW)


def run_report(run_dir: Path) -> list[tuple[str, str]]:
    """The KL from the policy it started from, from the run's dpo_report.json (llm/dpo.py), when there is one."""
    path = run_dir / "dpo_report.json"
    kl = json.loads(path.read_text()).get("kl") if path.is_file() else None
    return [] if kl is None else [("KL from the policy it started from", f"{kl:.3f} nats per answer")]
