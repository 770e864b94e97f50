"""What the `evaluate` kind shows in the Jobs tab while it runs: how many models are done and the last one's
numbers (a benchmark's acc and acc_norm, or a text dataset's loss, perplexity and bits per byte). Models side
by side are the Models tab's comparison (web/ui/compare_view.py)."""

from __future__ import annotations

METRIC_CARDS = (("step", "models done"), ("acc", "acc"), ("acc_norm", "acc_norm"), ("val_loss", "loss"),
                ("perplexity", "perplexity"), ("val_bpb", "bits per byte"))
