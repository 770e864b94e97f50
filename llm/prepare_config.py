"""`PrepareConfig`: how a corpus is split and cleaned into token files (`llm.prepare.prepare`), declared once here
(`llm.params.setting`) for the worker's `prepare` kind, its Train form and `workbench prepare`. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting


@dataclass
class PrepareConfig:
    val_fraction: float = setting(0.05, minimum=0, maximum=0.5, exclusive_minimum=True,
                                  help="share of documents held out for validation")
    seed: int = setting(0, minimum=0, maximum=2**32 - 1, help="seed of the split")
    scrub_pii: bool = setting(False, help="replace emails and phone numbers before tokenizing")
