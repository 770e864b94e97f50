"""The `reward` kind: a reward model trained on preference pairs, from a base or SFT model (spec.py, handler.py,
card.py)."""

from worker.kinds.reward.spec import SPEC

__all__ = ["SPEC"]
