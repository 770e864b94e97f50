"""What the `lr_find` kind shows in the Jobs tab: the loss against the learning rate (a log axis: the chart's x is
log10 of the rate), the smoothed curve once the test is over, and the suggested rate, marked by a near-vertical line
and named in a card."""

from __future__ import annotations

from worker.jobs.spec import Plot

METRIC_CARDS = (("step", "step"), ("lr", "learning rate"), ("loss", "loss"), ("suggested_lr", "suggested rate"))
# The suggested rate's marker is a series of two points, the suggestion's step and the next (0.07 decades apart on
# the default 100 steps over 7 decades): a line across the curve from its start's level to its lowest.
PLOTS = (Plot("Loss against the learning rate", {"loss": "loss", "smoothed_loss": "smoothed",
                                                  "suggested_marker": "suggested rate"},
              x="lr", log_x=True, x_title="learning rate (log10: -3 is 0.001)"),)
