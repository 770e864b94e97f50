"""The `demo` kind: the whole loop on generated data at the defaults (llm/demo.py), from the browser (spec.py,
handler.py)."""

from worker.kinds.demo.spec import SPEC

__all__ = ["SPEC"]
