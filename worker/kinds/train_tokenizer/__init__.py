"""The `train_tokenizer` kind: a byte-level BPE (rustbpe) trained on a text dataset (spec.py, handler.py)."""

from worker.kinds.train_tokenizer.spec import SPEC

__all__ = ["SPEC"]
