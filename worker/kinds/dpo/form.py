"""The `dpo` kind's own parts of its Train sub-tab: the reward kind's (it takes its pairs from the same sources),
the labeling projects to choose and the pairs each source gives."""

from __future__ import annotations

from worker.kinds.reward.form import PANEL, choosers

__all__ = ["PANEL", "choosers"]
