"""The `grpo` kind: Group Relative Policy Optimization of an SFT (or base) model on prompts, its answers scored by a
built-in verifier and/or a reward model (spec.py, estimate.py, handler.py, card.py, form.py)."""

from worker.kinds.grpo.spec import SPEC

__all__ = ["SPEC"]
