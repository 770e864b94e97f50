"""The `evaluate` kind: one or several models side by side on a text dataset or a multiple-choice benchmark
(spec.py, handler.py, card.py)."""

from worker.kinds.evaluate.spec import SPEC

__all__ = ["SPEC"]
