"""The `dpo` kind's own parts of its Train sub-tab: the reward kind's (it takes its pairs from the same sources),
the labeling projects to choose and the pairs each source gives, with DPO's method and learning rate."""

from __future__ import annotations

from llm.dpo_config import DPO_DEFAULTS
from worker.kinds.reward.form import choosers, pairs_panel

PANEL = pairs_panel(DPO_DEFAULTS)

__all__ = ["PANEL", "choosers"]
