"""What the `reward` kind shows: its cards and curves in the Jobs tab, the report-card rows of its reward model."""

from __future__ import annotations

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, VAL_LOSS_ROW, Plot, ReportRow

METRIC_CARDS = (("step", "step"), ("loss", "loss"), ("accuracy", "accuracy"), ("val_accuracy", "val accuracy"),
                ("margin", "margin")) + SPEED_CARDS
PLOTS = (LOSS_PLOT, Plot("Preference accuracy", {"accuracy": "train", "val_accuracy": "val"}))
REPORT_CARD = (VAL_LOSS_ROW, ReportRow("val_accuracy", "reward-model accuracy", "{:.1%}"), TOKENS_ROW)
