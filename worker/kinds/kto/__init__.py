"""The `kto` kind: Kahneman-Tversky Optimization of an SFT (or base) model on unpaired feedback, answers marked good
or bad (spec.py, estimate.py, handler.py, card.py, form.py)."""

from worker.kinds.kto.spec import SPEC

__all__ = ["SPEC"]
