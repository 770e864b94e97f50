"""The `clean` kind: raw web data → a clean text dataset with its removal report, FineWeb's pipeline on datatrove
(spec.py, handler.py, card.py; llm/clean.py)."""

from worker.kinds.clean.spec import SPEC

__all__ = ["SPEC"]
