"""What the `sft` kind shows: its cards and curves in the Jobs tab, the report-card rows of its chat model."""

from __future__ import annotations

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, TRAINING_CARDS, VAL_LOSS_ROW, Plot, ReportRow

METRIC_CARDS = TRAINING_CARDS + (("mean_token_accuracy", "token accuracy"),
                                 ("val_mean_token_accuracy", "val token accuracy")) + SPEED_CARDS
PLOTS = (LOSS_PLOT, Plot("Assistant-token accuracy", {"mean_token_accuracy": "train",
                                                      "val_mean_token_accuracy": "val"}))
REPORT_CARD = (VAL_LOSS_ROW, ReportRow("val_mean_token_accuracy", "SFT token accuracy", "{:.1%}"), TOKENS_ROW)
