"""The `generate` kind: K candidate answers per prompt of a prompts dataset, for people to compare (spec.py,
handler.py, card.py)."""

from worker.kinds.generate.spec import SPEC

__all__ = ["SPEC"]
