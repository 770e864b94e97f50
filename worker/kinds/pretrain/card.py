"""What the `pretrain` kind shows: its cards and curves in the Jobs tab, the report-card rows of its base model."""

from __future__ import annotations

from worker.jobs.spec import LOSS_PLOT, SPEED_CARDS, TOKENS_ROW, TRAINING_CARDS, VAL_LOSS_ROW, Plot, ReportRow

METRIC_CARDS = TRAINING_CARDS + (("val_bpb", "val bits/byte"), ("mfu", "MFU")) + SPEED_CARDS
PLOTS = (LOSS_PLOT, Plot("Validation bits per byte", {"val_bpb": "val bits/byte"}))
REPORT_CARD = (ReportRow("val_bpb", "validation bits per byte"), VAL_LOSS_ROW, TOKENS_ROW)
