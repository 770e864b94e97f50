"""The `lr_find` kind: the learning-rate range test (llm/lr_find.py) of pretraining or SFT, its loss-vs-rate plot in
the Jobs tab (spec.py, handler.py, card.py)."""

from worker.kinds.lr_find.spec import SPEC

__all__ = ["SPEC"]
