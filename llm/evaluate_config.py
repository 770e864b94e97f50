"""`EvaluateConfig`: the settings of an evaluation (`llm.evaluate` on text, `llm.multiple_choice` on a benchmark),
declared once here (`llm.params.setting`); the worker's `evaluate` kind and `workbench evaluate` read them.
Imports no torch, so the registry and `--help` stay light.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting


@dataclass
class EvaluateConfig:
    batch_size: int = setting(8, minimum=1, maximum=1024, label="batch size",
                              help="rows per forward pass: (question, choice) pairs of a benchmark, or blocks of "
                                   "the model's context of text")
    max_questions: int | None = setting(None, type="int", minimum=1, label="max questions",
                                        help="benchmark: score only the first N questions; empty: all of them")
    max_batches: int | None = setting(None, type="int", minimum=1, label="max batches",
                                      help="text: only the first N batches of the validation split; empty: all")
    # None: as the model was trained (a chat model through the chat template, a base model as plain text).
    chat: bool | None = None
