"""The `dpo` kind: Direct Preference Optimization of an SFT (or base) model on preference pairs (spec.py,
handler.py, card.py)."""

from worker.kinds.dpo.spec import SPEC

__all__ = ["SPEC"]
