"""The `sft` kind: supervised fine-tuning of a base (or earlier SFT) model on a chat dataset (spec.py,
estimate.py, handler.py, card.py)."""

from worker.kinds.sft.spec import SPEC

__all__ = ["SPEC"]
