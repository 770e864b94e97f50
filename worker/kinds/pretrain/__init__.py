"""The `pretrain` kind: a base model trained from scratch on a text dataset (spec.py, estimate.py, handler.py,
card.py)."""

from worker.kinds.pretrain.spec import SPEC

__all__ = ["SPEC"]
