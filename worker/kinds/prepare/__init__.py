"""The `prepare` kind: clean, deduplicate, split and tokenize a text dataset into token files (spec.py, handler.py)."""

from worker.kinds.prepare.spec import SPEC

__all__ = ["SPEC"]
